"""Bearer tokens on /fhir and /api/v1: the principal, the scope each interaction needs, and how refusals look."""

import json

import pytest
from flask import jsonify

from api import create_app
from api.auth import current_principal
from careplan.auth import scopes as smart_scopes
from tests.api.fhir.conftest import body, outcome
from tests.factories import FHIR_JSON, patient

FORM = "application/x-www-form-urlencoded"


def _bearer(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def whoami_app(database_url):
    """An app with a small /api/v1 endpoint that answers the principal, as the coordination API will see it."""
    app = create_app({"TESTING": True, "CAREPLAN_DATABASE_URL": database_url})

    def whoami():
        principal = current_principal()
        return jsonify(subject=principal.subject, role=principal.role, organization=principal.organization,
                       scopes=str(principal.scopes), kind=principal.kind, token_id=principal.token_id,
                       issuer=principal.issuer, client_id=principal.client_id)

    app.add_url_rule("/api/v1/whoami", "whoami", whoami)
    yield app
    app.extensions["careplan.database"].dispose()


def test_the_principal_is_exposed_to_views(whoami_app):
    from tests.conftest import issue_test_token

    token = issue_test_token(whoami_app, role="partner", organization="Organization/agency-a",
                             scopes="system/*.cruds", client_id="agency-a")
    answer = whoami_app.test_client().get("/api/v1/whoami", headers=_bearer(token)).get_json()
    assert answer == {"subject": "agency-a", "role": "partner", "organization": "Organization/agency-a",
                      "scopes": "system/*.cruds", "kind": "client", "token_id": answer["token_id"],
                      "issuer": "http://localhost", "client_id": "agency-a"}
    assert answer["token_id"]


def test_api_v1_refusals_are_json(whoami_app, monkeypatch):
    from tests.conftest import issue_test_token

    client = whoami_app.test_client()
    missing = client.get("/api/v1/whoami")
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == 'Bearer realm="careplan"'
    assert missing.get_json() == {"code": 401, "status": "Unauthorized", "error": "unauthorized",
                                  "message": missing.get_json()["message"]}
    narrow = issue_test_token(whoami_app, scopes="system/Patient.rs")
    forbidden = client.get("/api/v1/whoami", headers=_bearer(narrow))  # unmapped: needs every scope
    assert forbidden.status_code == 403 and forbidden.get_json()["error"] == "insufficient_scope"
    assert 'scope="system/*.cruds"' in forbidden.headers["WWW-Authenticate"]
    monkeypatch.setitem(smart_scopes.API_V1_RULES, "whoami", smart_scopes.Rule("r", "all"))
    assert client.get("/api/v1/whoami", headers=_bearer(narrow)).status_code == 403
    monkeypatch.setitem(smart_scopes.API_V1_RULES, "whoami", smart_scopes.Rule("", "none"))
    assert client.get("/api/v1/whoami", headers=_bearer(narrow)).status_code == 200


def test_metadata_is_public_but_only_to_read(anonymous_client):
    assert anonymous_client.get("/fhir/metadata").status_code == 200
    assert anonymous_client.head("/fhir/metadata").status_code == 200
    assert anonymous_client.post("/fhir/metadata").status_code == 401


def test_unrouted_paths_answer_401_before_404(anonymous_client, client):
    assert anonymous_client.get("/fhir/Patient/p1/nothing/here").status_code == 401
    assert client.get("/fhir/Patient/p1/nothing/here").status_code == 404
    assert anonymous_client.get("/api/v1/nothing").status_code == 401
    assert client.get("/api/v1/nothing").status_code == 404


@pytest.mark.parametrize("header, error", [
    ("Basic dXNlcjpwYXNz", None),
    ("Bearer", 'error="invalid_token"'),
    ("Bearer two words", 'error="invalid_token"'),
    ("Bearer <script>", 'error="invalid_token"'),
])
def test_odd_authorization_headers(anonymous_client, header, error):
    response = anonymous_client.get("/fhir/Patient/p1", headers={"Authorization": header})
    assert response.status_code == 401
    assert outcome(response)["issue"][0]["code"] == "login"
    challenge = response.headers["WWW-Authenticate"]
    assert challenge == 'Bearer realm="careplan"' if error is None else error in challenge


def test_the_scheme_is_case_insensitive(anonymous_client, token_for):
    response = anonymous_client.get("/fhir/Patient/p1", headers={"Authorization": f"bearer {token_for()}"})
    assert response.status_code == 404


def test_each_interaction_needs_its_permission(anonymous_client, token_for):
    reader = _bearer(token_for(scopes="system/Patient.read"))  # v1 spelling: rs
    created = anonymous_client.post("/fhir/Patient", data=json.dumps(patient()), content_type=FHIR_JSON,
                                    headers=_bearer(token_for(scopes="system/Patient.c")))
    assert created.status_code == 201
    patient_id = body(created)["id"]
    assert anonymous_client.get(f"/fhir/Patient/{patient_id}", headers=reader).status_code == 200
    assert anonymous_client.get("/fhir/Patient?gender=female", headers=reader).status_code == 200
    refused = anonymous_client.put(f"/fhir/Patient/{patient_id}", data=json.dumps(patient(id=patient_id)),
                                   content_type=FHIR_JSON, headers=reader)
    assert refused.status_code == 403 and outcome(refused)["issue"][0]["code"] == "forbidden"
    assert refused.headers["WWW-Authenticate"] == (
        'Bearer realm="careplan", error="insufficient_scope", error_description="the token\'s scopes do not '
        'cover system/Patient.u", scope="system/Patient.u"')
    assert anonymous_client.delete(f"/fhir/Patient/{patient_id}", headers=reader).status_code == 403
    assert anonymous_client.get(f"/fhir/CarePlan/{patient_id}", headers=reader).status_code == 403
    deleter = _bearer(token_for(scopes="system/Patient.d"))
    assert anonymous_client.delete(f"/fhir/Patient/{patient_id}", headers=deleter).status_code == 204


def test_conditional_update_needs_create_and_update(anonymous_client, token_for):
    url = "/fhir/Patient?identifier=https://careplan.example.org/mrn|MRN-1001"
    data = json.dumps(patient())
    only_update = anonymous_client.put(url, data=data, content_type=FHIR_JSON,
                                       headers=_bearer(token_for(scopes="system/Patient.u")))
    assert only_update.status_code == 403 and 'scope="system/Patient.c"' in only_update.headers["WWW-Authenticate"]
    both = anonymous_client.put(url, data=data, content_type=FHIR_JSON,
                                headers=_bearer(token_for(scopes="system/Patient.cu")))
    assert both.status_code == 201


def test_system_search_needs_search_on_each_type(anonymous_client, token_for):
    patients = _bearer(token_for(scopes="system/Patient.s"))
    assert anonymous_client.get("/fhir?_type=Patient", headers=patients).status_code == 200
    assert anonymous_client.get("/fhir?_type=Patient,Goal", headers=patients).status_code == 403
    assert anonymous_client.get("/fhir", headers=patients).status_code == 403
    assert anonymous_client.post("/fhir/_search", data="_type=Patient", content_type=FORM,
                                 headers=patients).status_code == 200
    assert anonymous_client.post("/fhir/_search?_type=Patient", data="_type=Goal", content_type=FORM,
                                 headers=patients).status_code == 403
    everything = _bearer(token_for(scopes="system/*.s"))
    assert anonymous_client.get("/fhir?_type=Patient,Goal", headers=everything).status_code == 200


def test_system_history_needs_a_wildcard_scope(anonymous_client, token_for):
    assert anonymous_client.get("/fhir/_history", headers=_bearer(token_for(
        scopes="system/Patient.rs"))).status_code == 403
    assert anonymous_client.get("/fhir/_history", headers=_bearer(token_for(scopes="system/*.s"))).status_code == 200


def test_transaction_entries_need_their_scopes(anonymous_client, token_for):
    def bundle(*resources):
        return json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": r, "request": {"method": "POST", "url": r["resourceType"]}} for r in resources]})

    creator = _bearer(token_for(scopes="system/Patient.c"))
    goal = {"resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": "Sleep"},
            "subject": {"reference": "Patient/p1"}}
    assert anonymous_client.post("/fhir", data=bundle(patient()), content_type=FHIR_JSON,
                                 headers=creator).status_code == 200
    refused = anonymous_client.post("/fhir", data=bundle(patient(), goal), content_type=FHIR_JSON, headers=creator)
    assert refused.status_code == 403 and 'scope="system/Goal.c"' in refused.headers["WWW-Authenticate"]
    broken = anonymous_client.post("/fhir", data="{not json", content_type=FHIR_JSON, headers=creator)
    assert broken.status_code == 403  # not understood: needs every scope
    admin = anonymous_client.post("/fhir", data="{not json", content_type=FHIR_JSON, headers=_bearer(token_for()))
    assert admin.status_code == 400


def test_compartment_search_and_everything_need_their_types(anonymous_client, token_for):
    anonymous_client.put("/fhir/Patient/p1", data=json.dumps(patient(id="p1")), content_type=FHIR_JSON,
                         headers=_bearer(token_for()))
    observations = _bearer(token_for(scopes="system/Observation.s"))
    assert anonymous_client.get("/fhir/Patient/p1/Observation", headers=observations).status_code == 200
    assert anonymous_client.get("/fhir/Patient/p1/Goal", headers=observations).status_code == 403
    assert anonymous_client.get("/fhir/Patient/p1/$everything", headers=observations).status_code == 403
    reader = _bearer(token_for(scopes="system/Patient.r system/*.s"))
    assert anonymous_client.get("/fhir/Patient/p1/$everything", headers=reader).status_code == 200
