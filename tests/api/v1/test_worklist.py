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


def _activity(activity_id: str, *, every: int | None = 7, **detail) -> dict:
    timing = {"repeat": {"frequency": 1, "period": every, "periodUnit": "d"}} if every else None
    return {"id": activity_id, "detail": {"status": "scheduled", "description": activity_id,
                                          **({"scheduledTiming": timing} if timing else {}), **detail}}


def test_follow_up_clock_starts_at_the_activity_then_the_plan_then_the_last_change():
    bounded = _activity("bounded")
    bounded["detail"]["scheduledTiming"]["repeat"]["boundsPeriod"] = {"start": "2026-11-10T09:00:00-05:00"}
    month = _activity("month-only")
    month["detail"]["scheduledTiming"]["repeat"]["boundsPeriod"] = {"start": "2026-11"}
    nonsense = _activity("nonsense")
    nonsense["detail"]["scheduledTiming"]["repeat"]["boundsPeriod"] = {"start": "soon"}
    noted = _activity("noted")
    noted["detail"]["scheduledTiming"]["repeat"]["boundsPeriod"] = {"start": "2026-11-10"}
    noted["progress"] = [{"time": "2026-11-25T12:00:00Z", "text": "Called"}, {"text": "no time"}]
    by_period = _activity("by-period", every=None, scheduledPeriod={"start": "2026-11-20"},
                          instantiatesCanonical=["https://example.org/PlanDefinition/p"])
    plan = {"id": "cp", "subject": {"reference": "Patient/p"}, "meta": {"lastUpdated": "2026-11-29T08:00:00Z"},
            "period": {"start": "2026-10-01"},
            "activity": [bounded, month, nonsense, noted, by_period, _activity("plain", every=14),
                         _activity("done", status="completed")]}
    practice = {"resourceType": "PlanDefinition", "extension": [{
        "url": "https://careplan.example.org/fhir/StructureDefinition/practice-follow-up-cadence",
        "valueTiming": {"repeat": {"frequency": 1, "period": 30, "periodUnit": "d"}}}]}
    due = {i["activity"]: (i["last_contact"], i["due"]) for i in worklist.follow_ups_of(
        plan, practices={"https://example.org/PlanDefinition/p": practice})}
    assert due == {
        "bounded": ("2026-11-10T14:00:00Z", "2026-11-17"),
        "month-only": ("2026-11-01T00:00:00Z", "2026-11-08"),
        "nonsense": ("2026-10-01T00:00:00Z", "2026-10-08"),  # no readable start: the plan's
        "noted": ("2026-11-25T12:00:00Z", "2026-12-02"),
        "by-period": ("2026-11-20T00:00:00Z", "2026-12-20"),  # the practice's 30-day cadence
        "plain": ("2026-10-01T00:00:00Z", "2026-10-15"),
    }
    without_period = {k: v for k, v in plan.items() if k != "period"}
    unbounded = {i["activity"]: i["due"] for i in worklist.follow_ups_of(without_period, practices={})}
    assert unbounded["plain"] == "2026-12-13" and unbounded["nonsense"] == "2026-12-06"  # lastUpdated + cadence
    assert "by-period" not in unbounded  # no Timing and no known practice: no cadence to follow


def test_an_activity_added_later_is_timed_from_when_it_was_added(client, database, plan):
    # The plan started 60 days ago (an EHR back-dated it); the activity added today is not overdue at once.
    stored = client.get(f"/fhir/CarePlan/{plan['id']}").get_json()
    stored["period"] = {"start": (date.today() - timedelta(days=60)).isoformat()}
    assert client.put(f"/fhir/CarePlan/{plan['id']}", data=json.dumps(stored),
                      content_type="application/fhir+json").status_code == 200
    added = client.post(f"/api/v1/care-plans/{plan['id']}/activities",
                        json={"practice": "peer-support", "description": "Group"}).get_json()
    activity = added["resource"]["activity"][-1]
    assert activity["detail"]["scheduledTiming"]["repeat"]["boundsPeriod"] == {"start": date.today().isoformat()}
    items = _follow_ups(worklist.build(database, coordinator="Practitioner/test-admin", within_days=30))
    states = {i["description"]: (i["state"], i["due"]) for i in items}
    assert states["Group"] == ("due", (date.today() + timedelta(days=14)).isoformat())
    assert states["Community navigation"][0] == "overdue"  # the plan's own start is its baseline
    changed = client.patch(f"/api/v1/care-plans/{plan['id']}/activities/{activity['id']}",
                           json={"cadence_days": 3}).get_json()
    assert changed["resource"]["activity"][-1]["detail"]["scheduledTiming"]["repeat"] == {
        "frequency": 1, "period": 3, "periodUnit": "d", "boundsPeriod": {"start": date.today().isoformat()}}


def test_goals_due_by_a_month_or_a_year_are_due_on_its_last_day(client, enrolled, plan):
    patient = f"Patient/{enrolled['patient']['id']}"
    year = date.today().year - 1
    for text, due in ((f"{year}-02", f"{year}-02-{28 + (year % 4 == 0)}"), (str(year), f"{year}-12-31")):
        goal = {"resourceType": "Goal", "lifecycleStatus": "active", "subject": {"reference": patient},
                "description": {"text": f"Goal by {text}"}, "target": [{"dueDate": text}]}
        created = client.post("/fhir/Goal", data=json.dumps(goal), content_type="application/fhir+json")
        assert created.status_code == 201, created.get_json()
    response = client.get("/api/v1/worklist")
    assert response.status_code == 200, response.get_json()
    reviews = {i["description"]: (i["due"], i["state"]) for g in response.get_json()["groups"] for i in g["items"]
               if i["kind"] == "goal-review"}
    assert reviews[f"Goal by {year}-02"] == (f"{year}-02-{28 + (year % 4 == 0)}", "overdue")
    assert reviews[f"Goal by {year}"] == (f"{year}-12-31", "overdue")
