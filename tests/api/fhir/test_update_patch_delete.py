"""update, patch, delete and their conditional forms: https://hl7.org/fhir/R4/http.html#update"""

import pytest

from tests.api.fhir.conftest import body, outcome
from tests.factories import patient


def test_update_as_create_with_client_id(fhir):
    response = fhir.put("/fhir/Patient/mrn-1001", patient(id="mrn-1001"))
    assert response.status_code == 201
    assert response.headers["Location"].endswith("/fhir/Patient/mrn-1001/_history/1")
    assert body(fhir.get("/fhir/Patient/mrn-1001"))["name"][0]["family"] == "Ångström"


def test_update_makes_a_new_version_and_keeps_the_old(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    response = fhir.put("/fhir/Patient/p1", patient(id="p1", gender="other"))
    assert response.status_code == 200
    assert response.headers["ETag"] == 'W/"2"'
    assert body(fhir.get("/fhir/Patient/p1/_history/1"))["gender"] == "female"


def test_identical_update_makes_no_new_version(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    response = fhir.put("/fhir/Patient/p1", patient(id="p1"))
    assert response.status_code == 200
    assert response.headers["ETag"] == 'W/"1"'


def test_update_with_stale_if_match_is_412_and_changes_nothing(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    fhir.put("/fhir/Patient/p1", patient(id="p1", gender="male"))
    response = fhir.put("/fhir/Patient/p1", patient(id="p1", gender="other"), headers={"If-Match": 'W/"1"'})
    assert response.status_code == 412
    assert outcome(response)["issue"][0]["code"] == "conflict"
    assert body(fhir.get("/fhir/Patient/p1"))["gender"] == "male"


def test_update_with_current_if_match_succeeds(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    response = fhir.put("/fhir/Patient/p1", patient(id="p1", gender="male"), headers={"If-Match": 'W/"1"'})
    assert response.status_code == 200 and response.headers["ETag"] == 'W/"2"'


def test_update_with_malformed_if_match_is_rejected(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    response = fhir.put("/fhir/Patient/p1", patient(id="p1", gender="male"), headers={"If-Match": "yesterday"})
    assert response.status_code == 412
    assert body(fhir.get("/fhir/Patient/p1"))["gender"] == "female"


def test_update_id_mismatch_is_400(fhir):
    response = fhir.put("/fhir/Patient/p1", patient(id="p2"))
    assert response.status_code == 400
    issue = outcome(response)["issue"][0]
    assert issue["expression"] == ["Patient.id"]
    assert fhir.get("/fhir/Patient/p1").status_code == 404


def test_update_without_id_is_400(fhir):
    response = fhir.put("/fhir/Patient/p1", patient())
    assert response.status_code == 400
    assert outcome(response)["issue"][0]["code"] == "required"


def test_update_type_mismatch_is_400(fhir):
    response = fhir.put("/fhir/Practitioner/p1", patient(id="p1"))
    assert response.status_code == 400
    assert outcome(response)["issue"][0]["expression"] == ["resourceType"]


def test_conditional_update_creates_then_updates_the_match(fhir):
    url = "/fhir/Patient?identifier=https://careplan.example.org/mrn|MRN-1001"
    created = fhir.put(url, patient())
    assert created.status_code == 201
    patient_id = body(created)["id"]
    updated = fhir.put(url, patient(gender="male"))
    assert updated.status_code == 200
    assert body(updated)["id"] == patient_id and body(updated)["meta"]["versionId"] == "2"


def test_conditional_update_with_several_matches_is_412(fhir):
    fhir.create(patient())
    fhir.create(patient())
    response = fhir.put("/fhir/Patient?identifier=https://careplan.example.org/mrn|MRN-1001", patient())
    assert response.status_code == 412


def test_patch_applies_json_patch(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    response = fhir.patch("/fhir/Patient/p1", [{"op": "replace", "path": "/gender", "value": "male"},
                                               {"op": "add", "path": "/telecom/-",
                                                "value": {"system": "email", "value": "z@example.org"}}])
    assert response.status_code == 200
    patched = body(response)
    assert patched["gender"] == "male" and patched["telecom"][-1]["system"] == "email"
    assert patched["meta"]["versionId"] == "2"
    assert patched["_birthDate"]["extension"][0]["valueDateTime"] == "1988-04-12T06:30:00+02:00"


def test_patch_producing_invalid_resource_is_rejected(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    response = fhir.patch("/fhir/Patient/p1", [{"op": "replace", "path": "/gender", "value": "sometimes"}])
    assert response.status_code == 400
    assert outcome(response)["issue"][0]["expression"] == ["Patient.gender"]
    assert body(fhir.get("/fhir/Patient/p1"))["gender"] == "female"


@pytest.mark.parametrize("operations, status", [
    ([{"op": "test", "path": "/gender", "value": "male"}], 422),
    ([{"op": "remove", "path": "/nothing/here"}], 422),
    ([{"op": "frobnicate", "path": "/gender"}], 400),
    ({"op": "replace"}, 400),
    ([{"op": "replace", "path": "/id", "value": "other"}], 422),
])
def test_patch_errors(fhir, operations, status):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    response = fhir.patch("/fhir/Patient/p1", operations)
    assert response.status_code == status, body(response)
    outcome(response)
    assert fhir.get("/fhir/Patient/p1").headers["ETag"] == 'W/"1"'


def test_patch_needs_json_patch_media_type(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    response = fhir.patch("/fhir/Patient/p1", [], content_type="application/fhir+json")
    assert response.status_code == 415


def test_patch_with_stale_if_match_is_412(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    fhir.put("/fhir/Patient/p1", patient(id="p1", gender="male"))
    response = fhir.patch("/fhir/Patient/p1", [{"op": "replace", "path": "/gender", "value": "other"}],
                          headers={"If-Match": 'W/"1"'})
    assert response.status_code == 412


def test_delete_is_soft_and_read_answers_410(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    response = fhir.delete("/fhir/Patient/p1")
    assert response.status_code == 204
    assert response.headers["ETag"] == 'W/"2"'
    gone = fhir.get("/fhir/Patient/p1")
    assert gone.status_code == 410
    assert outcome(gone)["issue"][0]["code"] == "deleted"
    assert body(fhir.get("/fhir/Patient/p1/_history/1"))["id"] == "p1"
    assert fhir.get("/fhir/Patient/p1/_history/2").status_code == 410
    assert fhir.delete("/fhir/Patient/p1").status_code == 204
    assert body(fhir.get("/fhir/Patient/p1/_history"))["total"] == 2


def test_delete_unknown_is_404(fhir):
    assert fhir.delete("/fhir/Patient/nobody").status_code == 404


def test_update_after_delete_revives_with_next_version(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    fhir.delete("/fhir/Patient/p1")
    response = fhir.put("/fhir/Patient/p1", patient(id="p1"))
    assert response.status_code == 200 and response.headers["ETag"] == 'W/"3"'


def test_deleted_resource_no_longer_matches_conditions(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    fhir.delete("/fhir/Patient/p1")
    response = fhir.create(patient(), headers={"If-None-Exist": "identifier=https://careplan.example.org/mrn|MRN-1001"})
    assert response.status_code == 201


def test_conditional_delete(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    response = fhir.delete("/fhir/Patient?identifier=https://careplan.example.org/mrn|MRN-1001")
    assert response.status_code == 204
    assert fhir.get("/fhir/Patient/p1").status_code == 410
    assert fhir.delete("/fhir/Patient?identifier=https://careplan.example.org/mrn|MRN-1001").status_code == 204


def test_conditional_delete_with_several_matches_is_412(fhir):
    fhir.create(patient())
    fhir.create(patient())
    assert fhir.delete("/fhir/Patient?identifier=https://careplan.example.org/mrn|MRN-1001").status_code == 412
    assert body(fhir.get("/fhir/Patient/_history"))["total"] == 2
