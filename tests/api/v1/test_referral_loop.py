"""The closed loop end to end: refer, accept, start, complete with an outcome; the plan and the coordinator know."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from tests.api.v1.referral_world import HARBOUR, world  # noqa: F401 - the fixture
from tests.factories import FHIR_JSON

OUTCOME_SYSTEM = "https://careplan.example.org/fhir/CodeSystem/referral-outcome"
CHANNEL = "https://careplan.example.org/fhir/CodeSystem/referral-communication"


def test_full_loop_updates_the_activity_and_tells_the_coordinator(world):
    referral = world.refer(note="Prefers calls after 5 pm")
    task_id = referral["id"]
    assert referral["status"] == "requested" and referral["partner"] == HARBOUR

    inbox = world.partners[HARBOUR].get("/api/v1/partner/referrals").get_json()
    assert inbox["counts"]["new"] == 1 and [i["id"] for i in inbox["items"]] == [task_id]

    assert world.act(HARBOUR, task_id, "accept", {"note": "We can see her Thursday"}).status_code == 200
    contacted = world.act(HARBOUR, task_id, "business-status", {"business_status": "client-contacted"})
    assert contacted.status_code == 200 and contacted.get_json()["business_status"] == "client-contacted"
    assert world.act(HARBOUR, task_id, "start").get_json()["status"] == "in-progress"

    # The agency records what it did as a Procedure for its referred patient, then completes with the outcome.
    procedure = {"resourceType": "Procedure", "status": "completed", "code": {"text": "Housing intake"},
                 "subject": {"reference": f"Patient/{world.patient_id}"},
                 "performedDateTime": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    made = world.client.post("/fhir/Procedure", data=json.dumps(procedure), content_type=FHIR_JSON,
                             headers={"Authorization": f"Bearer {world.partners[HARBOUR].token}"})
    assert made.status_code == 201, made.get_data(as_text=True)
    done = world.act(HARBOUR, task_id, "complete", {"outcome": "got-help", "note": "Moved in on Friday",
                                                    "procedure": f"Procedure/{made.get_json()['id']}"})
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["status"] == "completed"

    task = world.fhir(f"Task/{task_id}")
    codes = [o.get("valueCodeableConcept", {}).get("coding", [{}])[0].get("code") for o in task["output"]]
    assert codes[0] == "got-help" and task["output"][1]["valueReference"]["reference"].startswith("Procedure/")

    plan = world.fhir(f"CarePlan/{world.plan_id}")
    activity = next(a for a in plan["activity"] if a["id"] == world.activity_id)
    assert {"reference": referral["service_request"]} in activity["outcomeReference"]
    assert activity["detail"]["status"] == "completed"
    assert "Got help" in activity["progress"][-1]["text"]

    told = world.fhir(f"Communication?recipient={world.coordinator.reference}")
    closed = [e["resource"] for e in told.get("entry", [])
              if e["resource"]["category"][0]["coding"][0]["code"] == "referral-closed"]
    assert len(closed) == 1 and {"reference": f"Task/{task_id}"} in closed[0]["about"]

    detail = world.coordinator.get(f"/api/v1/referrals/{task_id}").get_json()
    steps = [(e["from_status"], e["to_status"], e["business_status"], e["by"]) for e in detail["timeline"]]
    assert steps == [
        (None, "requested", None, world.coordinator.reference),
        ("requested", "accepted", None, HARBOUR),
        ("accepted", "accepted", "client-contacted", HARBOUR),
        ("accepted", "in-progress", "client-contacted", HARBOUR),
        ("in-progress", "completed", "client-contacted", HARBOUR),
    ]
    assert detail["timeline"][-1]["outcome"][0]["code"] == "got-help"
    assert detail["sla"]["response_overdue"] is False and detail["sla"]["contact_overdue"] is False
    # A closed referral is no longer open.
    listed = world.coordinator.get("/api/v1/referrals").get_json()["items"]
    assert task_id not in [i["id"] for i in listed]


def test_overdue_referral_is_flagged_on_the_worklist_and_in_the_list(world):
    old = world.referral_sent_at(datetime.now(timezone.utc) - timedelta(days=15))
    fresh = world.refer()["id"]

    overdue = world.coordinator.get("/api/v1/referrals?overdue=true").get_json()["items"]
    assert [i["id"] for i in overdue] == [old]
    assert overdue[0]["sla"]["response_overdue"] and overdue[0]["sla"]["contact_overdue"]
    assert overdue[0]["age_days"] == 15
    on_time = world.coordinator.get("/api/v1/referrals?overdue=false").get_json()["items"]
    assert [i["id"] for i in on_time] == [fresh]

    body = world.client.get("/api/v1/worklist?within_days=30&coordinator=Practitioner/test-admin").get_json()
    referrals = {i["task"]: i for g in body["groups"] for i in g["items"] if i["kind"] == "referral"}
    assert referrals[old]["state"] == "overdue" and referrals[fresh]["state"] == "waiting"
