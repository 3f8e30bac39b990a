"""Only administrators curate the practice catalogue and careplan's own terminology, on every /fhir write path."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from careplan.security.guard import CANONICAL_BASE
from tests.api.fhir.conftest import Fhir, body, outcome

TIER = f"{CANONICAL_BASE}StructureDefinition/practice-tier"
TIER_SYSTEM = f"{CANONICAL_BASE}CodeSystem/practice-tier"


def practice(practice_id: str = "peer-navigation", tier: str = "emerging") -> dict:
    return {"resourceType": "PlanDefinition", "id": practice_id, "status": "active", "name": "peer_navigation",
            "url": f"{CANONICAL_BASE}PlanDefinition/{practice_id}", "title": "Peer navigation",
            "extension": [{"url": TIER, "valueCoding": {"system": TIER_SYSTEM, "code": tier}}]}


def activity(activity_id: str = "check-in") -> dict:
    return {"resourceType": "ActivityDefinition", "id": activity_id, "status": "active", "name": "check_in",
            "url": f"{CANONICAL_BASE}ActivityDefinition/{activity_id}"}


def code_system(code_system_id: str, url: str) -> dict:
    return {"resourceType": "CodeSystem", "id": code_system_id, "url": url, "status": "active", "content": "complete",
            "concept": [{"code": "a", "display": "A"}]}


def bundle(kind: str, *entries: dict) -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def put_entry(resource: dict) -> dict:
    return {"resource": resource, "request": {"method": "PUT",
                                              "url": f"{resource['resourceType']}/{resource['id']}"}}


@pytest.fixture
def as_role(app, token_for):
    """Return a Fhir client whose requests carry a token of the role (with every scope)."""
    def make(role: str) -> Fhir:
        token = token_for(role=role, organization="Organization/harbour" if role == "partner" else None)
        client = FlaskClient(app, app.response_class)
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        return Fhir(client)
    return make


@pytest.fixture
def stocked(fhir):
    """One practice and one activity, stored by the administrator (the default client)."""
    assert fhir.put("/fhir/PlanDefinition/peer-navigation", practice()).status_code == 201
    assert fhir.put("/fhir/ActivityDefinition/check-in", activity()).status_code == 201


def refused(response, what: str = "curate the practice catalogue") -> None:
    assert response.status_code == 403, response.get_data(as_text=True)
    issue = outcome(response)["issue"][0]
    assert issue["code"] == "forbidden" and what in issue["diagnostics"]


def version(fhir, path: str) -> str:
    return body(fhir.get(path))["meta"]["versionId"]


@pytest.mark.parametrize("role", ["coordinator", "ehr"])
def test_only_an_admin_puts_a_practice_with_or_without_if_match(stocked, fhir, as_role, role):
    caller = as_role(role)
    promoted = practice(tier="recommended")
    refused(caller.put("/fhir/PlanDefinition/peer-navigation", promoted))
    refused(caller.put("/fhir/PlanDefinition/peer-navigation", promoted, headers={"If-Match": 'W/"1"'}))
    refused(caller.put("/fhir/PlanDefinition/new-practice", practice("new-practice")))  # a new one too
    assert version(fhir, "/fhir/PlanDefinition/peer-navigation") == "1"
    assert fhir.get("/fhir/PlanDefinition/new-practice").status_code == 404
    assert caller.get("/fhir/PlanDefinition/peer-navigation").status_code == 200  # reading is still for everyone
    # the administrator's change goes through, and the store keeps the old version
    assert fhir.put("/fhir/PlanDefinition/peer-navigation", promoted).status_code == 200
    assert version(fhir, "/fhir/PlanDefinition/peer-navigation") == "2"


def test_a_coordinator_may_not_post_patch_or_delete_catalogue_entries(stocked, fhir, as_role):
    coordinator = as_role("coordinator")
    refused(coordinator.create({k: v for k, v in practice("posted").items() if k != "id"}))
    refused(coordinator.create({k: v for k, v in activity("posted").items() if k != "id"}))
    refused(coordinator.patch("/fhir/PlanDefinition/peer-navigation",
                              [{"op": "replace", "path": "/status", "value": "retired"}]))
    refused(coordinator.delete("/fhir/PlanDefinition/peer-navigation"))
    refused(coordinator.delete("/fhir/ActivityDefinition/check-in"))
    refused(coordinator.put("/fhir/PlanDefinition?url=" + practice()["url"], practice(tier="recommended")))
    assert body(fhir.get("/fhir/PlanDefinition"))["total"] == 1
    assert version(fhir, "/fhir/PlanDefinition/peer-navigation") == "1"
    assert version(fhir, "/fhir/ActivityDefinition/check-in") == "1"
    assert fhir.delete("/fhir/ActivityDefinition/check-in").status_code in (200, 204)


def test_careplans_own_code_systems_are_curated_and_other_terminology_is_not(fhir, as_role):
    coordinator = as_role("coordinator")
    ours = code_system("practice-tier-local", f"{CANONICAL_BASE}CodeSystem/practice-tier-local")
    refused(coordinator.put("/fhir/CodeSystem/practice-tier-local", ours))
    local = code_system("clinic-codes", "https://clinic.example.org/CodeSystem/clinic-codes")
    assert coordinator.put("/fhir/CodeSystem/clinic-codes", local).status_code == 201
    # ... but it cannot be turned into one of ours
    refused(coordinator.put("/fhir/CodeSystem/clinic-codes", {**local, "url": ours["url"]}))
    assert fhir.put("/fhir/CodeSystem/practice-tier-local", ours).status_code == 201
    refused(coordinator.delete("/fhir/CodeSystem/practice-tier-local"))
    value_set = {"resourceType": "ValueSet", "id": "tiers", "status": "active", "url": f"{CANONICAL_BASE}ValueSet/t"}
    refused(coordinator.put("/fhir/ValueSet/tiers", value_set))
    profile = {"resourceType": "StructureDefinition", "id": "ccp", "url": f"{CANONICAL_BASE}StructureDefinition/ccp",
               "name": "Ccp", "status": "active", "kind": "resource", "abstract": False, "type": "CarePlan",
               "baseDefinition": "http://hl7.org/fhir/StructureDefinition/CarePlan", "derivation": "constraint"}
    refused(coordinator.put("/fhir/StructureDefinition/ccp", profile))


def test_a_transaction_with_a_practice_is_refused_whole(stocked, fhir, as_role):
    coordinator = as_role("coordinator")
    patient = {"resourceType": "Patient", "id": "tx-patient", "name": [{"family": "Whole"}]}
    response = coordinator.post("/fhir", bundle("transaction", put_entry(patient),
                                                put_entry(practice(tier="recommended"))))
    refused(response)
    assert fhir.get("/fhir/Patient/tx-patient").status_code == 404  # rolled back with it
    assert version(fhir, "/fhir/PlanDefinition/peer-navigation") == "1"
    deleting = coordinator.post("/fhir", bundle("transaction", {"request": {
        "method": "DELETE", "url": "ActivityDefinition/check-in"}}))
    refused(deleting)
    # the administrator's transaction goes through
    answer = fhir.post("/fhir", bundle("transaction", put_entry(patient), put_entry(practice(tier="recommended"))))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert version(fhir, "/fhir/PlanDefinition/peer-navigation") == "2"


def test_a_batch_refuses_the_practice_entry_only(stocked, fhir, as_role):
    coordinator = as_role("coordinator")
    patient = {"resourceType": "Patient", "id": "batch-patient", "name": [{"family": "Batch"}]}
    response = coordinator.post("/fhir", bundle("batch", put_entry(patient), put_entry(practice(tier="promising"))))
    assert response.status_code == 200
    statuses = [entry["response"]["status"] for entry in body(response)["entry"]]
    assert statuses[0].startswith("201") and statuses[1].startswith("403"), statuses
    assert version(fhir, "/fhir/PlanDefinition/peer-navigation") == "1"


def test_partners_and_leads_are_refused_too(stocked, as_role):
    refused(as_role("partner").put("/fhir/PlanDefinition/peer-navigation", practice(tier="recommended")))
    refused(as_role("lead").put("/fhir/PlanDefinition/peer-navigation", practice(tier="recommended")))
