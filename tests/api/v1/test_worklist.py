"""The coordinator's worklist: follow-ups, goal reviews and waiting referrals, grouped by tier."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

from careplan.coordination import worklist


def test_end_to_end_enrol_plan_worklist_in_tier_order_and_fhir_sees_the_plan(client, enrolled, plan):
    patient_id = enrolled["patient"]["id"]
    task = {"resourceType": "Task", "status": "requested", "intent": "order",
            "instantiatesCanonical": "https://careplan.example.org/fhir/PlanDefinition/peer-support",
            "for": {"reference": f"Patient/{patient_id}"}, "owner": {"reference": "Organization/harbour-shelter"},
            "description": "Peer worker intake"}
    assert client.post("/fhir/Task", data=json.dumps(task), content_type="application/fhir+json").status_code == 201

    body = client.get("/api/v1/worklist?within_days=30").get_json()
    assert body["coordinator"] == "Practitioner/test-admin"
    assert [g["label"] for g in body["groups"]] == ["recommended", "promising", "emerging", "no practice"]
    kinds = {g["label"]: [(i["kind"], i.get("description")) for i in g["items"]] for g in body["groups"]}
    assert kinds["recommended"] == [("follow-up", "Peer support"), ("referral", "Peer worker intake")] or \
        sorted(kinds["recommended"]) == [("follow-up", "Peer support"), ("referral", "Peer worker intake")]
    assert kinds["promising"] == [("follow-up", "Housing first")]
    assert kinds["emerging"] == [("follow-up", "Community navigation")]
    assert kinds["no practice"] == [("goal-review", "Have my own place by spring")]
    follow_up = body["groups"][0]["items"][0] if body["groups"][0]["items"][0]["kind"] == "follow-up" \
        else body["groups"][0]["items"][1]
    assert follow_up["state"] == "due" and follow_up["due"] == (date.today() + timedelta(days=14)).isoformat()

    # Only what falls due within a week: the 7-day follow-up and the goal under review.
    week = client.get("/api/v1/worklist").get_json()
    assert [(g["label"], [i["kind"] for i in g["items"]]) for g in week["groups"]] == [
        ("recommended", ["referral"]), ("emerging", ["follow-up"]), ("no practice", ["goal-review"])]

    bundle = client.get(f"/fhir/CarePlan?patient={patient_id}&_include=CarePlan:goal").get_json()
    assert [e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "match"] == [plan["id"]]
    assert any(e["resource"]["resourceType"] == "Goal" for e in bundle["entry"] if e["search"]["mode"] == "include")


def test_follow_up_falls_due_one_cadence_after_the_last_progress_note(client, database, plan):
    items = _follow_ups(worklist.build(database, coordinator="Practitioner/test-admin", within_days=0,
                                       today=date.today() + timedelta(days=8)))
    assert [(i["description"], i["state"]) for i in items] == [("Community navigation", "overdue")]

    # An EHR records on /fhir that the peer worker last saw the patient 20 days ago.
    stored = client.get(f"/fhir/CarePlan/{plan['id']}").get_json()
    peer = next(a for a in stored["activity"] if a["detail"]["description"] == "Peer support")
    seen = datetime.now(timezone.utc) - timedelta(days=20)
    peer["progress"] = [{"time": seen.strftime("%Y-%m-%dT%H:%M:%SZ"), "text": "Seen at the drop-in"}]
    assert client.put(f"/fhir/CarePlan/{plan['id']}", data=json.dumps(stored),
                      content_type="application/fhir+json").status_code == 200
    items = _follow_ups(worklist.build(database, coordinator="Practitioner/test-admin", within_days=0))
    assert [(i["description"], i["state"], i["due"]) for i in items] == [
        ("Peer support", "overdue", (seen + timedelta(days=14)).date().isoformat())]


def test_worklist_is_the_callers_own(client, plan, token_for):
    other = token_for(role="coordinator")
    body = client.get("/api/v1/worklist?within_days=30", headers={"Authorization": f"Bearer {other}"}).get_json()
    assert body["groups"] == []
    mine = client.get("/api/v1/worklist?within_days=30&coordinator=Practitioner/test-admin",
                      headers={"Authorization": f"Bearer {other}"}).get_json()
    assert len(mine["groups"]) == 4


def _follow_ups(body: dict) -> list[dict]:
    return [i for g in body["groups"] for i in g["items"] if i["kind"] == "follow-up"]
