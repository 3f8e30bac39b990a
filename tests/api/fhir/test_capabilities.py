"""capabilities: https://hl7.org/fhir/R4/http.html#capabilities"""

from api.fhir.blueprint import INTERACTIONS
from careplan.resources import SUPPORTED_TYPES
from tests.api.fhir.conftest import body


def test_metadata_is_a_capability_statement_for_r4(fhir):
    response = fhir.get("/fhir/metadata")
    assert response.status_code == 200
    statement = body(response)
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["format"] == ["json", "application/fhir+json"]
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert set(resources) == set(SUPPORTED_TYPES)


def test_capability_statement_lists_only_routed_interactions(fhir):
    statement = body(fhir.get("/fhir/metadata"))
    routed = {i.code for i in INTERACTIONS}
    patient = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    listed = {i["code"] for i in patient["interaction"]}
    assert listed <= routed
    assert {"read", "vread", "update", "patch", "delete", "create", "history-instance", "history-type"} <= listed
    assert patient["conditionalDelete"] == "single"
    assert {i["code"] for i in statement["rest"][0]["interaction"]} <= routed


def test_audit_event_is_read_only_in_the_statement(fhir):
    statement = body(fhir.get("/fhir/metadata"))
    audit = next(r for r in statement["rest"][0]["resource"] if r["type"] == "AuditEvent")
    assert not {"create", "update", "patch", "delete"} & {i["code"] for i in audit["interaction"]}


def test_capability_statement_says_where_to_get_a_token(fhir):
    security = body(fhir.get("/fhir/metadata"))["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    token_url = security["extension"][0]["extension"][0]["valueUri"]
    assert token_url.endswith("/oauth/token") and token_url.startswith("http://")
