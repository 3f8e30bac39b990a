"""Coordinated care plans through /api/v1, and what /fhir sees of them."""

from __future__ import annotations

import json

CATEGORY = "https://careplan.example.org/fhir/CodeSystem/care-plan-category"
PROFILE = "https://careplan.example.org/fhir/StructureDefinition/coordinated-care-plan"
ROLE_SYSTEM = "https://careplan.example.org/fhir/CodeSystem/care-team-role"


def test_plan_from_practices_is_a_coordinated_care_plan_on_fhir(client, enrolled, plan, catalogue):
    patient_id = enrolled["patient"]["id"]
    stored = plan["resource"]
    assert stored["meta"]["profile"] == [PROFILE]
    assert stored["category"][0]["coding"][0]["code"] == "coordinated-care-plan"
    assert stored["intent"] == "plan" and stored["author"] == {"reference": "Practitioner/test-admin"}
    details = [a["detail"] for a in stored["activity"]]
    assert [d["instantiatesCanonical"][0].rsplit("/", 1)[1] for d in details] == [
        "community-navigation", "peer-support", "housing-first"]
    assert [d["scheduledTiming"]["repeat"]["period"] for d in details] == [7, 14, 10]
    assert details[1]["performer"] == [{"reference": "Practitioner/peer-1"}]

    bundle = client.get(f"/fhir/CarePlan?patient=Patient/{patient_id}&_include=CarePlan:goal").get_json()
    matches = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "match"]
    included = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "include"]
    assert matches == [stored]
    assert [g["description"]["text"] for g in included] == ["Have my own place by spring"]
    team = client.get(f"/fhir/{stored['careTeam'][0]['reference']}").get_json()
    roles = {p["member"]["reference"]: p["role"][0]["coding"][0] for p in team["participant"]}
    assert roles[f"Patient/{patient_id}"] == {"system": ROLE_SYSTEM, "code": "patient"}
    assert roles["RelatedPerson/sister"]["code"] == "trusted-support-person"
    assert roles["Organization/harbour-shelter"]["code"] == "partner-agency"
    concern = client.get(f"/fhir/{stored['addresses'][0]['reference']}").get_json()
    assert concern["category"][1]["coding"][0]["code"] == "housing-instability"


def test_status_transitions_follow_the_rules(client, plan):
    url = f"/api/v1/care-plans/{plan['id']}/status"
    assert client.post(url, json={"status": "on-hold"}).get_json()["status"] == "on-hold"
    assert client.post(url, json={"status": "active"}).get_json()["status"] == "active"
    assert client.post(url, json={"status": "completed"}).get_json()["status"] == "completed"
    refused = client.post(url, json={"status": "active"})
    assert refused.status_code == 422
    body = refused.get_json()
    assert body["message"] == "A care plan cannot go from completed to active: completed is final"
    assert body["errors"] == {"json": {"status": ["completed is final"]}}
    history = client.get(f"/fhir/CarePlan/{plan['id']}/_history").get_json()
    assert [e["resource"]["status"] for e in history["entry"]] == ["completed", "active", "on-hold", "active"]


def test_draft_cannot_be_put_on_hold(client, enrolled, catalogue):
    created = client.post(f"/api/v1/patients/{enrolled['patient']['id']}/care-plans",
                          json={"title": "Draft", "practices": [{"practice": "peer-support"}],
                                "concerns": [{"description": "Isolation"}]}).get_json()
    refused = client.post(f"/api/v1/care-plans/{created['id']}/status", json={"status": "on-hold"})
    assert refused.status_code == 422
    assert "from draft a plan may go to active, revoked" in refused.get_json()["message"]


def test_one_active_coordinated_plan_per_patient(client, enrolled, plan):
    patient_id = enrolled["patient"]["id"]
    draft = client.post(f"/api/v1/patients/{patient_id}/care-plans",
                        json={"title": "Second", "practices": [],
                              "concerns": [{"description": "Isolation"}]}).get_json()
    refused = client.post(f"/api/v1/care-plans/{draft['id']}/status", json={"status": "active"})
    # a business rule, answered 422 here as on /fhir (RuleViolation / OperationOutcome business-rule)
    assert refused.status_code == 422 and plan["id"] in refused.get_json()["message"]
    assert refused.get_json()["errors"] == {"json": {"status": ["one active coordinated care plan per patient"]}}
    second = client.post(f"/api/v1/patients/{patient_id}/care-plans",
                         json={"title": "Third", "status": "active", "practices": [],
                               "concerns": [{"description": "Isolation"}]})
    assert second.status_code == 422 and plan["id"] in second.get_json()["message"]
    client.post(f"/api/v1/care-plans/{plan['id']}/status", json={"status": "revoked"})
    assert client.post(f"/api/v1/care-plans/{draft['id']}/status", json={"status": "active"}).status_code == 200


def test_activities_goals_members_and_concerns_are_kept(client, plan, catalogue):
    base = f"/api/v1/care-plans/{plan['id']}"
    added = client.post(f"{base}/activities", json={"practice": "peer-support", "description": "Group"})
    assert added.status_code == 201
    activity_id = added.get_json()["resource"]["activity"][-1]["id"]
    noted = client.patch(f"{base}/activities/{activity_id}", json={"progress_note": "Came to group",
                                                                   "status": "in-progress"}).get_json()
    activity = noted["resource"]["activity"][-1]
    assert activity["detail"]["status"] == "in-progress" and activity["progress"][0]["text"] == "Came to group"
    removed = client.delete(f"{base}/activities/{activity_id}").get_json()
    assert all(a["id"] != activity_id for a in removed["resource"]["activity"])
    assert client.delete(f"{base}/activities/{activity_id}").status_code == 404

    goal = client.post(f"{base}/goals", json={"description": "Call my sister weekly",
                                              "achievement_status": "in-progress"}).get_json()
    changed = client.patch(f"{base}/goals/{goal['id']}", json={"achievement_status": "improving"}).get_json()
    assert changed["resource"]["achievementStatus"]["coding"][0]["code"] == "improving"
    after = client.delete(f"{base}/goals/{goal['id']}").get_json()
    assert {"reference": f"Goal/{goal['id']}"} not in after["resource"]["goal"]
    assert client.get(f"/fhir/Goal/{goal['id']}").get_json()["lifecycleStatus"] == "cancelled"

    team = client.post(f"{base}/team-members", json={"role": "provider", "member": "Practitioner/gp-1"}).get_json()
    assert any(p["member"]["reference"] == "Practitioner/gp-1" for p in team["resource"]["participant"])
    team = client.delete(f"{base}/team-members/Practitioner/gp-1").get_json()
    assert all(p["member"]["reference"] != "Practitioner/gp-1" for p in team["resource"]["participant"])
    last = client.delete(f"{base}/team-members/Practitioner/test-admin")
    assert last.status_code == 422

    concern = client.post(f"{base}/health-concerns", json={"description": "Food bank too far",
                                                           "social_need": "food-insecurity"}).get_json()
    assert concern["resource"]["category"][0]["coding"][0]["code"] == "health-concern"
    kept = client.delete(f"{base}/health-concerns/{concern['id']}").get_json()
    assert {"reference": f"Condition/{concern['id']}"} not in kept["resource"]["addresses"]


def test_unknown_practice_is_404_and_bad_member_is_422(client, enrolled):
    patient_id = enrolled["patient"]["id"]
    missing = client.post(f"/api/v1/patients/{patient_id}/care-plans",
                          json={"title": "X", "practices": [{"practice": "no-such-practice"}],
                            "concerns": [{"description": "Isolation"}]})
    assert missing.status_code == 404
    bad = client.post(f"/api/v1/patients/{patient_id}/care-plans",
                      json={"title": "X", "practices": [], "team": [{"role": "chef", "member": "nobody"}]})
    assert bad.status_code == 422
    assert set(bad.get_json()["errors"]["json"]["team"]["0"]) == {"role", "member"}


def test_care_plan_posted_by_an_ehr_shows_in_the_coordination_api(client, enrolled):
    patient_id = enrolled["patient"]["id"]
    subject = {"reference": f"Patient/{patient_id}"}
    refs = {}
    for kind, resource in (("CareTeam", {"resourceType": "CareTeam", "subject": subject}),
                           ("Condition", {"resourceType": "Condition", "subject": subject,
                                          "code": {"text": "Depression"}})):
        made = client.post(f"/fhir/{kind}", data=json.dumps(resource), content_type="application/fhir+json")
        refs[kind] = {"reference": f"{kind}/{made.get_json()['id']}"}
    ehr_plan = {"resourceType": "CarePlan", "meta": {"profile": [PROFILE]}, "status": "active", "intent": "plan",
                "title": "From the hospital",
                "category": [{"coding": [{"system": CATEGORY, "code": "coordinated-care-plan"}]}],
                "subject": subject, "author": {"reference": "Practitioner/hospital-sw"},
                "careTeam": [refs["CareTeam"]], "addresses": [refs["Condition"]]}
    posted = client.post("/fhir/CarePlan", data=json.dumps(ehr_plan), content_type="application/fhir+json")
    assert posted.status_code == 201
    plan_id = posted.get_json()["id"]
    listed = client.get(f"/api/v1/patients/{patient_id}/care-plans").get_json()["items"]
    assert [p["id"] for p in listed] == [plan_id]
    assert client.get(f"/api/v1/care-plans/{plan_id}").get_json()["title"] == "From the hospital"
    summary = client.get(f"/api/v1/patients/{patient_id}/summary").get_json()
    assert summary["active_plan"]["id"] == plan_id
    assert summary["episode"]["status"] == "active"


def test_a_draft_may_be_incomplete_until_it_becomes_active(client, enrolled, catalogue):
    patient_id = enrolled["patient"]["id"]
    incomplete = client.post(f"/api/v1/patients/{patient_id}/care-plans",
                             json={"title": "Active at once", "status": "active", "practices": []})
    assert incomplete.status_code == 422
    assert incomplete.get_json()["errors"] == {"json": {"concerns": [
        "An active plan must name the concerns it addresses"]}}

    draft = client.post(f"/api/v1/patients/{patient_id}/care-plans",
                        json={"title": "Still talking it through", "practices": [{"practice": "peer-support"}]})
    assert draft.status_code == 201, draft.get_json()
    assert draft.get_json()["status"] == "draft" and "addresses" not in draft.get_json()["resource"]
    refused = client.post(f"/api/v1/care-plans/{draft.get_json()['id']}/status", json={"status": "active"})
    assert refused.status_code == 422
    assert list(refused.get_json()["errors"]["json"]) == ["CarePlan.addresses"]
    assert client.get(f"/api/v1/care-plans/{draft.get_json()['id']}").get_json()["status"] == "draft"

    base = f"/api/v1/care-plans/{draft.get_json()['id']}"
    assert client.post(f"{base}/health-concerns", json={"description": "Isolation"}).status_code == 201
    activated = client.post(f"{base}/status", json={"status": "active"})
    assert activated.status_code == 200 and activated.get_json()["status"] == "active"
    concern = activated.get_json()["resource"]["addresses"][0]["reference"].split("/")[1]
    # a plan in use keeps the whole profile: it cannot drop the last concern it addresses
    assert client.delete(f"{base}/health-concerns/{concern}").status_code == 422
