"""Authorisation, consent, labels, break-glass and audit, end to end through /fhir."""

import pytest

from careplan import jsonutil
from tests.factories import FHIR_JSON

HOUSING, FOOD, CLINIC = "Organization/housing", "Organization/food", "Organization/clinic"
SCOPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]}
ETH = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "ETH"}
SUD_CODE = {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "F11.20"}]}


class Caller:
    """A client with one token."""

    def __init__(self, client, token, headers=None):
        self.client, self.headers = client, {"Authorization": f"Bearer {token}", **(headers or {})}

    def get(self, path, headers=None):
        return self.client.get(path, headers={**self.headers, **(headers or {})})

    def put(self, path, resource, headers=None):
        return self.client.put(path, data=jsonutil.dumps(resource), content_type=FHIR_JSON,
                               headers={**self.headers, **(headers or {})})

    def post(self, path, resource, headers=None):
        return self.client.post(path, data=jsonutil.dumps(resource), content_type=FHIR_JSON,
                                headers={**self.headers, **(headers or {})})

    def delete(self, path):
        return self.client.delete(path, headers=self.headers)


def body(response):
    return jsonutil.loads(response.get_data())


def consent(cid, provision, patient="p1", status="active"):
    return {"resourceType": "Consent", "id": cid, "status": status, "scope": SCOPE,
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{patient}"}, "provision": provision}


def actor(reference):
    return [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                  "code": "IRCP"}]}, "reference": {"reference": reference}}]


@pytest.fixture
def callers(app, anonymous_client, token_for):
    client = app.test_client()
    admin = Caller(client, token_for(role="admin"))
    coordinator = Caller(client, token_for(role="coordinator", organization=CLINIC, scopes="user/*.cruds"))
    housing = Caller(client, token_for(role="partner", organization=HOUSING, scopes="user/*.cruds"))
    food = Caller(client, token_for(role="partner", organization=FOOD, scopes="user/*.cruds"))
    for pid, name in (("p1", "Tremblay"), ("p2", "Okafor")):
        assert coordinator.put(f"/fhir/Patient/{pid}", {
            "resourceType": "Patient", "id": pid, "name": [{"family": name}], "birthDate": "1980-01-01",
            "identifier": [{"system": "urn:mrn", "value": pid}], "telecom": [{"system": "phone", "value": "555"}],
        }).status_code == 201
    # Consent first: a referral cannot be sent to an agency the patient's consent does not permit (issue 6).
    coordinator.put("/fhir/Consent/c1", consent("c1", {"type": "permit", "actor": actor(HOUSING)}))
    coordinator.put("/fhir/Consent/c2", consent("c2", {"type": "permit", "actor": actor(FOOD)}, patient="p2"))
    for sid, pid, org, extra in (("sr-housing", "p1", HOUSING, {}), ("sr-food", "p2", FOOD, {}),
                                 ("sr-sud", "p1", HOUSING, {"reasonCode": [SUD_CODE]})):
        assert coordinator.put(f"/fhir/ServiceRequest/{sid}", {
            "resourceType": "ServiceRequest", "id": sid, "status": "active", "intent": "order",
            "subject": {"reference": f"Patient/{pid}"}, "performer": [{"reference": org}], **extra,
        }).status_code == 201
        coordinator.put(f"/fhir/Task/task-{sid}", {
            "resourceType": "Task", "id": f"task-{sid}", "status": "requested", "intent": "order",
            "focus": {"reference": f"ServiceRequest/{sid}"}, "for": {"reference": f"Patient/{pid}"},
            "owner": {"reference": org}})
    coordinator.put("/fhir/Condition/c-sud", {"resourceType": "Condition", "id": "c-sud", "code": SUD_CODE,
                                              "subject": {"reference": "Patient/p1"}})
    return {"admin": admin, "coordinator": coordinator, "housing": housing, "food": food,
            "anonymous": Caller(anonymous_client, "")}


def ids(bundle, mode="match"):
    return sorted(f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])
                  if e.get("search", {}).get("mode", "match") == mode)


def test_partner_reads_only_its_referrals(callers):
    housing = callers["housing"]
    assert housing.get("/fhir/ServiceRequest/sr-housing").status_code == 200
    assert housing.get("/fhir/ServiceRequest/sr-food").status_code == 404
    assert housing.get("/fhir/Task/task-sr-food").status_code == 404
    assert housing.get("/fhir/Condition/c-sud").status_code == 404
    assert housing.get("/fhir/Patient/p2").status_code == 404
    bundle = body(housing.get("/fhir/ServiceRequest"))
    assert ids(bundle) == ["ServiceRequest/sr-housing"] and bundle["total"] == 1


def test_partner_gets_the_minimum_patient_data_everywhere(callers):
    housing = callers["housing"]
    patient = body(housing.get("/fhir/Patient/p1"))
    assert set(patient) <= {"resourceType", "id", "meta", "name", "telecom", "address", "communication"}
    assert "identifier" not in patient and "birthDate" not in patient
    bundle = body(housing.get("/fhir/Task?_include=Task:patient"))
    included = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "include"]
    assert included and all("birthDate" not in r for r in included)
    history = body(housing.get("/fhir/Patient/p1/_history"))
    assert all("identifier" not in e["resource"] for e in history["entry"])


def test_other_partner_sees_nothing_of_ours_in_any_path(callers):
    food = callers["food"]
    texts = [food.get(path).get_data(as_text=True) for path in (
        "/fhir/Task", "/fhir/ServiceRequest?_revinclude=Task:focus", "/fhir/_history", "/fhir/Task/_history",
        "/fhir?_type=Task,ServiceRequest,Patient", "/fhir/Patient/p1/$everything", "/fhir/Patient/p1/*")]
    for text in texts:
        assert "sr-housing" not in text and "Tremblay" not in text
    transaction = food.post("/fhir", {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "ServiceRequest/sr-housing"}},
        {"request": {"method": "GET", "url": "ServiceRequest?_id=sr-housing"}}]})
    assert "Tremblay" not in transaction.get_data(as_text=True)
    assert body(transaction)["entry"][0]["response"]["status"].startswith("404")


def test_partner_cannot_write_outside_its_role(callers):
    housing = callers["housing"]
    assert housing.put("/fhir/Condition/x", {"resourceType": "Condition", "id": "x",
                                             "subject": {"reference": "Patient/p1"}}).status_code == 403
    task = body(housing.get("/fhir/Task/task-sr-housing"))
    assert housing.put("/fhir/Task/task-sr-housing", {**task, "status": "accepted"}).status_code == 200
    other = {"resourceType": "Task", "id": "task-sr-food", "status": "accepted", "intent": "order",
             "owner": {"reference": HOUSING}}
    assert housing.put("/fhir/Task/task-sr-food", other).status_code == 404
    assert housing.delete("/fhir/Task/task-sr-housing").status_code == 403


def test_labels_on_write_and_sensitive_data_needs_a_label_specific_consent(callers):
    coordinator, housing = callers["coordinator"], callers["housing"]
    labelled = body(coordinator.get("/fhir/Condition/c-sud"))
    codes = {c["code"] for c in labelled["meta"]["security"]}
    assert {"R", "ETH", "SUD"} <= codes
    assert housing.get("/fhir/ServiceRequest/sr-sud").status_code == 404
    coordinator.put("/fhir/Consent/c1", consent("c1", {"type": "permit", "actor": actor(HOUSING), "provision": [
        {"type": "permit", "securityLabel": [ETH]}]}))
    response = housing.get("/fhir/ServiceRequest/sr-sud")
    assert response.status_code == 200
    assert "42 CFR part 2" in response.headers["X-Careplan-Redisclosure-Notice"]
    assert "X-Careplan-Redisclosure-Notice" not in housing.get("/fhir/ServiceRequest/sr-housing").headers


def test_revoking_consent_takes_effect_on_the_next_request(callers):
    coordinator, housing = callers["coordinator"], callers["housing"]
    assert housing.get("/fhir/Task/task-sr-housing").status_code == 200
    coordinator.put("/fhir/Consent/c1", consent("c1", {"type": "permit", "actor": actor(HOUSING)}, status="inactive"))
    assert housing.get("/fhir/Task/task-sr-housing").status_code == 404
    assert body(housing.get("/fhir/Task"))["total"] == 0


def test_lockbox_and_break_glass(callers):
    coordinator, admin, housing = callers["coordinator"], callers["admin"], callers["housing"]
    coordinator.put("/fhir/Consent/lockbox", consent("lockbox", {"type": "deny", "actor": actor(CLINIC),
                                                                 "securityLabel": [ETH]}))
    assert coordinator.get("/fhir/Condition/c-sud").status_code == 404
    glass = {"X-Careplan-Purpose-Of-Use": "BTG", "X-Careplan-Break-Glass-Reason": "overdose risk reported by family"}
    assert coordinator.get("/fhir/Condition/c-sud", headers=glass).status_code == 200
    assert coordinator.get("/fhir/Condition/c-sud", headers={"X-Careplan-Purpose-Of-Use": "BTG"}).status_code == 403
    assert housing.get("/fhir/Task/task-sr-housing", headers=glass).status_code == 403
    events = [e["resource"] for e in body(admin.get("/fhir/AuditEvent?_count=500"))["entry"]]
    glass_events = [e for e in events if e.get("purposeOfEvent", [{}])[0].get("coding", [{}])[0].get("code") == "BTG"]
    assert any(d["valueString"] == "overdose risk reported by family"
               for e in glass_events for ent in e.get("entity", []) for d in ent.get("detail", []))


def test_every_patient_data_request_is_audited(callers):
    admin, housing, anonymous = callers["admin"], callers["housing"], callers["anonymous"]

    def audit_count():
        return body(admin.get("/fhir/AuditEvent?_count=0"))["total"]

    requests = [
        lambda: housing.get("/fhir/Task/task-sr-housing"),  # read
        lambda: housing.get("/fhir/Task"),  # search
        lambda: housing.get("/fhir/Task/task-sr-food"),  # denied (404)
        lambda: housing.get("/fhir/Patient/p1/_history"),  # history
        lambda: anonymous.client.get("/fhir/Task/task-sr-housing"),  # unauthenticated
        lambda: housing.put("/fhir/Condition/x", {"resourceType": "Condition", "id": "x",
                                                  "subject": {"reference": "Patient/p1"}}),  # forbidden write
    ]
    for make_request in requests:
        before = audit_count()
        make_request()
        # The admin's own count query is audited too (one event), so each request adds exactly one more.
        assert audit_count() - before == 2


def test_writes_are_audited_in_their_transaction_and_audit_events_are_append_only(callers):
    admin, coordinator = callers["admin"], callers["coordinator"]
    written = coordinator.put("/fhir/Goal/g1", {"resourceType": "Goal", "id": "g1", "lifecycleStatus": "active",
                                                 "description": {"text": "Sleep"}, "subject": {"reference": "Patient/p1"}})
    assert written.status_code == 201
    events = body(admin.get("/fhir/AuditEvent?entity=Goal/g1/_history/1"))
    assert events["total"] == 1
    event = events["entry"][0]["resource"]
    assert event["action"] == "C" and event["agent"][1]["who"]["reference"] == CLINIC
    assert {"Patient/p1"} <= {e["what"]["reference"] for e in event["entity"]}
    assert admin.put(f"/fhir/AuditEvent/{event['id']}", event).status_code == 405
    assert admin.delete(f"/fhir/AuditEvent/{event['id']}").status_code == 405
    assert coordinator.get(f"/fhir/AuditEvent/{event['id']}").status_code == 404


def test_break_glass_accesses_are_reported(callers, database_url):
    import json

    from click.testing import CliRunner

    from careplan.cli import main

    coordinator = callers["coordinator"]
    coordinator.put("/fhir/Consent/lockbox", consent("lockbox", {"type": "deny", "actor": actor(CLINIC)}))
    glass = {"X-Careplan-Purpose-Of-Use": "BTG", "X-Careplan-Break-Glass-Reason": "suicidal ideation disclosed"}
    assert coordinator.get("/fhir/Condition/c-sud", headers=glass).status_code == 200
    coordinator.get("/fhir/Condition/c-sud")  # an ordinary (refused) access is not in the report
    result = CliRunner().invoke(main, ["audit", "break-glass", "--json"], env={"CAREPLAN_DATABASE_URL": database_url})
    assert result.exit_code == 0, result.output
    reported = [json.loads(line) for line in result.output.splitlines()]
    assert len(reported) == 1
    assert reported[0]["justification"] == "suicidal ideation disclosed"
    assert reported[0]["organization"] == CLINIC and reported[0]["patients"] == ["Patient/p1"]
