"""Every error under /fhir is an OperationOutcome with a precise code: https://hl7.org/fhir/R4/http.html"""

import pytest

from tests.api.fhir.conftest import body, outcome
from tests.factories import careplan, patient


def test_malformed_json_is_400_structure(fhir):
    response = fhir.post("/fhir/Patient", '{"resourceType": "Patient", ')
    assert response.status_code == 400
    assert outcome(response)["issue"][0]["code"] == "structure"


@pytest.mark.parametrize("text", [
    '{"resourceType": "Patient", "gender": "male", "gender": "female"}',
    '{"resourceType": "Patient", "multipleBirthInteger": NaN}',
    '[1, 2]',
    '"Patient"',
    '',
])
def test_ambiguous_or_non_object_json_is_400(fhir, text):
    response = fhir.post("/fhir/Patient", text)
    assert response.status_code == 400
    outcome(response)


def test_invalid_resource_reports_each_problem_with_its_location(fhir):
    plan = careplan()
    plan["activity"][0]["detail"]["status"] = "sometime"
    plan["period"]["start"] = "2026-13-45"
    plan["colour"] = "blue"
    response = fhir.create(plan)
    assert response.status_code == 400
    expressions = {e for issue in outcome(response)["issue"] for e in issue.get("expression", [])}
    assert "CarePlan.period.start" in expressions
    assert "CarePlan.colour" in expressions


def test_required_binding_is_enforced(fhir):
    response = fhir.create(careplan(status="bogus"))
    assert response.status_code == 400
    issue = outcome(response)["issue"][0]
    assert issue["code"] == "code-invalid" and issue["expression"] == ["CarePlan.status"]
    nested = careplan()
    nested["activity"][0]["detail"]["status"] = "sometime"
    issue = outcome(fhir.create(nested))["issue"][0]
    assert issue["expression"] == ["CarePlan.activity[0].detail.status"]


@pytest.mark.parametrize("fragment, location", [
    ({"name": []}, "Patient.name"),
    ({"name": [{}]}, "Patient.name[0]"),
    ({"gender": None}, "Patient.gender"),
    ({"gender": "  "}, "Patient.gender"),
])
def test_json_rules_the_models_skip(fhir, fragment, location):
    response = fhir.create({"resourceType": "Patient", **fragment})
    assert response.status_code == 400
    assert outcome(response)["issue"][0]["expression"] == [location]


def test_unknown_resource_type_in_body_is_404(fhir):
    response = fhir.post("/fhir/Spaceship", {"resourceType": "Spaceship"})
    assert response.status_code == 404


def test_missing_resource_type_is_400(fhir):
    response = fhir.post("/fhir/Patient", {"gender": "male"})
    assert response.status_code == 400
    assert outcome(response)["issue"][0]["code"] == "required"


def test_unsupported_interaction_is_405(fhir):
    response = fhir.client.post("/fhir/Patient/p1", data="{}", content_type="application/fhir+json")
    assert response.status_code == 405
    assert outcome(response)["issue"][0]["code"] == "not-supported"


def test_unknown_path_is_404_operation_outcome(fhir):
    response = fhir.get("/fhir/Patient/p1/_history/1/extra")
    assert response.status_code == 404
    outcome(response)


def test_xml_request_body_is_415(fhir):
    response = fhir.post("/fhir/Patient", "<Patient xmlns='http://hl7.org/fhir'/>", content_type="application/fhir+xml")
    assert response.status_code == 415
    assert "XML" in outcome(response)["issue"][0]["diagnostics"]


def test_other_media_type_is_415(fhir):
    assert fhir.post("/fhir/Patient", "gender=male", content_type="application/x-www-form-urlencoded").status_code == 415


def test_xml_accept_or_format_is_406(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    assert fhir.get("/fhir/Patient/p1", headers={"Accept": "application/fhir+xml"}).status_code == 406
    assert fhir.get("/fhir/Patient/p1?_format=xml").status_code == 406
    assert fhir.get("/fhir/Patient/p1?_format=json", headers={"Accept": "application/fhir+xml"}).status_code == 200


@pytest.mark.parametrize("accept", ["application/json", "application/fhir+json", "*/*", "application/fhir+json; fhirVersion=4.0"])
def test_json_accept_headers_are_served(fhir, accept):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    assert fhir.get("/fhir/Patient/p1", headers={"Accept": accept}).status_code == 200


def test_plain_application_json_body_is_accepted(fhir):
    assert fhir.post("/fhir/Patient", patient(), content_type="application/json").status_code == 201


def test_body_too_large_is_413(app, fhir):
    app.config["MAX_CONTENT_LENGTH"] = 2048
    big = patient(name=[{"family": "x" * 4096}])
    response = fhir.create(big)
    assert response.status_code == 413
    assert outcome(response)["issue"][0]["code"] == "too-long"


def test_non_utf8_body_is_400(fhir):
    response = fhir.post("/fhir/Patient", b'{"resourceType": "Patient", "gender": "\xff"}')
    assert response.status_code == 400


def test_pretty_output(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    assert b"\n  " in fhir.get("/fhir/Patient/p1?_pretty=true").get_data()
    assert body(fhir.get("/fhir/Patient/p1?_pretty=true"))["id"] == "p1"
