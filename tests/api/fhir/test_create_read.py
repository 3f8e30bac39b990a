"""create, read and vread: https://hl7.org/fhir/R4/http.html#create"""

from tests.api.fhir.conftest import body, outcome
from tests.factories import patient


def test_create_assigns_id_and_version_and_answers_location(fhir):
    response = fhir.create(patient())
    assert response.status_code == 201
    created = body(response)
    assert created["id"] and created["meta"]["versionId"] == "1"
    assert created["meta"]["lastUpdated"].endswith("Z")
    assert response.headers["ETag"] == 'W/"1"'
    assert response.headers["Location"].endswith(f"/fhir/Patient/{created['id']}/_history/1")
    assert response.headers["Location"].startswith("http://")
    assert "Last-Modified" in response.headers


def test_create_ignores_client_id(fhir):
    response = fhir.create(patient(id="chosen-by-client"))
    assert response.status_code == 201
    assert body(response)["id"] != "chosen-by-client"


def test_read_returns_current_version_with_etag(fhir):
    created = body(fhir.create(patient()))
    response = fhir.get(f"/fhir/Patient/{created['id']}")
    assert response.status_code == 200
    assert response.headers["ETag"] == 'W/"1"'
    assert response.headers["Content-Type"].startswith("application/fhir+json")
    assert body(response) == created


def test_read_unknown_id_is_404_operation_outcome(fhir):
    response = fhir.get("/fhir/Patient/does-not-exist")
    assert response.status_code == 404
    assert outcome(response)["issue"][0]["code"] == "not-found"


def test_read_unknown_type_is_404(fhir):
    response = fhir.get("/fhir/Spaceship/1")
    assert response.status_code == 404
    assert outcome(response)["issue"][0]["code"] == "not-supported"


def test_vread_returns_each_version(fhir):
    created = body(fhir.create(patient()))
    changed = {**created, "active": False}
    assert fhir.put(f"/fhir/Patient/{created['id']}", changed).status_code == 200
    first = fhir.get(f"/fhir/Patient/{created['id']}/_history/1")
    second = fhir.get(f"/fhir/Patient/{created['id']}/_history/2")
    assert body(first)["active"] is True and first.headers["ETag"] == 'W/"1"'
    assert body(second)["active"] is False and second.headers["ETag"] == 'W/"2"'
    assert fhir.get(f"/fhir/Patient/{created['id']}/_history/3").status_code == 404
    assert fhir.get(f"/fhir/Patient/{created['id']}/_history/x").status_code == 404


def test_conditional_create_returns_existing_match(fhir):
    headers = {"If-None-Exist": "identifier=https://careplan.example.org/mrn|MRN-1001"}
    first = fhir.create(patient(), headers=headers)
    second = fhir.create(patient(), headers=headers)
    assert first.status_code == 201
    assert second.status_code == 200
    assert body(second)["id"] == body(first)["id"]
    history = body(fhir.get("/fhir/Patient/_history"))
    assert history["total"] == 1


def test_conditional_create_with_several_matches_is_412(fhir):
    fhir.create(patient())
    fhir.create(patient())
    response = fhir.create(patient(), headers={"If-None-Exist": "identifier=https://careplan.example.org/mrn|MRN-1001"})
    assert response.status_code == 412
    assert outcome(response)["issue"][0]["code"] == "multiple-matches"


def test_conditional_create_with_unknown_parameter_is_400(fhir):
    response = fhir.create(patient(), headers={"If-None-Exist": "shoe-size=12"})
    assert response.status_code == 400
    assert "shoe-size" in outcome(response)["issue"][0]["diagnostics"]


def test_audit_event_cannot_be_written_by_clients(fhir):
    response = fhir.create({"resourceType": "AuditEvent", "type": {"code": "rest"},
                            "recorded": "2026-01-01T00:00:00Z", "agent": [{"requestor": True}],
                            "source": {"observer": {"display": "x"}}})
    assert response.status_code == 405
    assert fhir.get("/fhir/AuditEvent/_history").status_code == 200


def test_prefer_minimal_and_operation_outcome(fhir):
    minimal = fhir.create(patient(), headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201 and minimal.get_data() == b""
    assert minimal.headers["Location"]
    info = fhir.create(patient(), headers={"Prefer": "return=OperationOutcome"})
    assert info.status_code == 201
    assert outcome(info)["issue"][0]["severity"] == "information"
