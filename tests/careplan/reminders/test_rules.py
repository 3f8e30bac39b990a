"""Reminder rules: the same rows whichever API writes, moved and cancelled in the causing write's transaction."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

import pytest

from careplan.reminders import rules
from careplan.store import service
from tests.careplan.reminders.support import (
    COORDINATOR,
    PERFORMER,
    api_plan,
    enrol,
    fhir_get,
    fhir_put,
    reminders,
    shape,
    stock,
    without_meta,
)


@pytest.fixture
def practices(client):
    return stock(client)


def _copy_for(plan: dict, patient_id: str, new_id: str) -> dict:
    copied = without_meta(copy.deepcopy(plan))
    copied["id"] = new_id
    copied["subject"] = {"reference": f"Patient/{patient_id}"}
    return copied


def test_an_active_plan_gets_one_follow_up_per_activity_plus_a_plan_review(client, database, practices):
    patient = enrol(client)
    plan = api_plan(client, patient)
    rows = reminders(database, source=f"CarePlan/{plan['id']}") + [
        r for r in reminders(database) if r.source.startswith(f"CarePlan/{plan['id']}#")]
    follow_ups = sorted((r for r in rows if r.kind == "follow-up"), key=lambda r: r.tier)
    assert [(r.tier, r.recipient) for r in follow_ups] == [
        ("emerging", COORDINATOR), ("promising", COORDINATOR), ("recommended", PERFORMER)]
    assert all(r.state == "scheduled" and r.patient == f"Patient/{patient}" for r in follow_ups)
    by_tier = {r.tier: r for r in follow_ups}
    # 2026-11-02 09:00 in Toronto (EST) is 14:00Z; recommended is reminded 2 days early, promising 1, emerging 0.
    assert by_tier["recommended"].due_at == datetime(2026, 11, 14, 14, tzinfo=timezone.utc)
    assert by_tier["promising"].due_at == datetime(2026, 11, 11, 14, tzinfo=timezone.utc)
    assert by_tier["emerging"].due_at == datetime(2026, 11, 9, 14, tzinfo=timezone.utc)
    assert by_tier["recommended"].payload["due"] == "2026-11-16T14:00:00+00:00"
    (review,) = [r for r in rows if r.kind == "plan-review"]
    assert review.recipient == COORDINATOR and review.key == f"plan-review|CarePlan/{plan['id']}|2027-01-31"


def test_fhir_put_and_the_api_give_the_same_reminders_for_the_same_edits(client, database, practices):
    first, second = enrol(client, "Un"), enrol(client, "Deux")
    plan = api_plan(client, first)
    copy_id = "copy-plan"
    assert fhir_put(client, _copy_for(fhir_get(client, f"CarePlan/{plan['id']}"), second, copy_id)).status_code == 201

    def compare():
        mine = [r for r in reminders(database) if r.source.startswith(f"CarePlan/{plan['id']}")]
        theirs = [r for r in reminders(database) if r.source.startswith(f"CarePlan/{copy_id}")]
        assert shape(mine, plan_id=plan["id"], patient=f"Patient/{first}") == shape(
            [*theirs], plan_id=copy_id, patient=f"Patient/{second}")
        return mine

    compare()
    activity = plan["activity"][1]["id"]  # peer-support, recommended, every 14 days
    # A cadence change moves the scheduled row (same key, new due_at) ...
    response = client.patch(f"/api/v1/care-plans/{plan['id']}/activities/{activity}", json={"cadence_days": 28})
    assert response.status_code == 200, response.get_json()
    theirs = fhir_get(client, f"CarePlan/{copy_id}")
    theirs["activity"][1]["detail"]["scheduledTiming"] = {"repeat": {"frequency": 1, "period": 28,
                                                                     "periodUnit": "d"}}
    assert fhir_put(client, without_meta(theirs)).status_code == 200
    rows = compare()
    (moved,) = [r for r in rows if r.source.endswith(f"#{activity}") and r.kind == "follow-up"]
    assert moved.state == "scheduled" and moved.due_at == datetime(2026, 11, 28, 14, tzinfo=timezone.utc)
    # ... a progress note marks it done and schedules the next occurrence ...
    response = client.patch(f"/api/v1/care-plans/{plan['id']}/activities/{activity}",
                            json={"progress_note": "Met at the drop-in"})
    assert response.status_code == 200, response.get_json()
    note = [a for a in response.get_json()["resource"]["activity"] if a["id"] == activity][0]["progress"][-1]
    theirs = fhir_get(client, f"CarePlan/{copy_id}")
    theirs["activity"][1]["progress"] = [note]
    assert fhir_put(client, without_meta(theirs)).status_code == 200
    rows = compare()
    done, following = sorted((r for r in rows if r.source.endswith(f"#{activity}") and r.kind == "follow-up"),
                             key=lambda r: r.id)
    assert done.state == "cancelled" and done.done_at is not None
    assert following.state == "scheduled" and following.done_at is None and following.due_at > done.due_at
    # ... and putting the plan on hold cancels every scheduled one.
    assert client.post(f"/api/v1/care-plans/{plan['id']}/status", json={"status": "on-hold"}).status_code == 200
    theirs = fhir_get(client, f"CarePlan/{copy_id}")
    assert fhir_put(client, without_meta({**theirs, "status": "on-hold"})).status_code == 200
    rows = compare()
    assert {r.state for r in rows} == {"cancelled"}
    # Back to active revives the same occurrences rather than duplicating them.
    assert client.post(f"/api/v1/care-plans/{plan['id']}/status", json={"status": "active"}).status_code == 200
    assert len([r for r in reminders(database, state="scheduled")
                if r.source.startswith(f"CarePlan/{plan['id']}")
                and r.kind not in ("follow-up-escalation", "follow-up-overdue")]) == 4


def test_re_saving_the_same_plan_is_idempotent(client, database, practices):
    plan = api_plan(client, enrol(client))
    before = [(r.id, r.key, r.due_at, r.state) for r in reminders(database)]
    current = fhir_get(client, f"CarePlan/{plan['id']}")
    assert fhir_put(client, without_meta({**current, "title": "Renamed"})).status_code == 200
    assert fhir_put(client, without_meta({**current, "title": "Renamed"})).status_code == 200
    assert [(r.id, r.key, r.due_at, r.state) for r in reminders(database)] == before


def test_completing_an_activity_marks_it_done_and_cancels_its_reminder(client, database, practices):
    plan = api_plan(client, enrol(client))
    activity = plan["activity"][0]["id"]
    response = client.patch(f"/api/v1/care-plans/{plan['id']}/activities/{activity}", json={"status": "completed"})
    assert response.status_code == 200, response.get_json()
    (row,) = [r for r in reminders(database, kind="follow-up") if r.source == f"CarePlan/{plan['id']}#{activity}"]
    assert row.state == "cancelled" and row.done_at is not None
    (escalation,) = reminders(database, kind="follow-up-escalation", source=f"CarePlan/{plan['id']}#{activity}")
    assert escalation.state == "cancelled"


def test_a_new_coordinator_on_the_care_team_takes_over_the_plans_reminders(client, database, practices):
    plan = api_plan(client, enrol(client))
    response = client.post(f"/api/v1/care-plans/{plan['id']}/team-members",
                           json={"role": "coordinator", "member": "Practitioner/coord-2"})
    assert response.status_code in (200, 201), response.get_json()
    response = client.delete(f"/api/v1/care-plans/{plan['id']}/team-members/Practitioner/coord-1")
    assert response.status_code == 200, response.get_json()
    scheduled = reminders(database, state="scheduled")
    # The plan review goes to the coordinator; follow-ups stay with their named performers (the API named coord-1
    # as performer of the activities it was given no performer for).
    assert [r.recipient for r in scheduled if r.kind == "plan-review"] == ["Practitioner/coord-2"]
    assert sorted(r.recipient for r in scheduled if r.kind == "follow-up") == [COORDINATOR, COORDINATOR, PERFORMER]
    # Escalations of missed follow-ups go to the coordinator, now coord-2 (coord-1 is no longer the one told).
    assert [r.recipient for r in scheduled if r.kind == "follow-up-escalation"] == ["Practitioner/coord-2"] * 3
    # Each follow-up's "still not done" goes to whoever does the follow-up.
    assert sorted(r.recipient for r in scheduled if r.kind == "follow-up-overdue") == [
        COORDINATOR, COORDINATOR, PERFORMER]
    assert len(scheduled) == 10


def test_a_failed_write_leaves_the_reminders_unchanged(client, database, practices):
    plan = api_plan(client, enrol(client))
    before = [(r.id, r.key, r.due_at, r.state, r.done_at) for r in reminders(database)]
    current = fhir_get(client, f"CarePlan/{plan['id']}")
    changed = without_meta(current)
    changed["activity"][0]["detail"]["scheduledTiming"] = {"repeat": {"frequency": 1, "period": 3, "periodUnit": "d"}}
    changed["status"] = "completed"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": changed, "request": {"method": "PUT", "url": f"CarePlan/{plan['id']}"}},
        {"resource": {"resourceType": "Observation", "status": "not-a-status", "code": {"text": "x"}},
         "request": {"method": "POST", "url": "Observation"}}]}
    response = client.post("/fhir", json=bundle, headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == 400
    assert [(r.id, r.key, r.due_at, r.state, r.done_at) for r in reminders(database)] == before
    # The same change on its own does cancel them, so the check above could fail.
    assert fhir_put(client, changed).status_code == 200
    assert {r.state for r in reminders(database) if r.source.startswith(f"CarePlan/{plan['id']}")} == {"cancelled"}


def test_a_goal_review_follows_the_target_date_and_ends_when_achieved(client, database, practices):
    plan = api_plan(client, enrol(client), target_date="2027-02-01")
    goal_id = plan["goal"][0]["reference"].split("/")[1]
    (row,) = reminders(database, kind="goal-review")
    assert row.recipient == COORDINATOR and row.key == f"goal-review|Goal/{goal_id}|2027-02-01"
    assert row.due_at == datetime(2027, 2, 1, 14, tzinfo=timezone.utc)  # 09:00 EST
    response = client.patch(f"/api/v1/care-plans/{plan['id']}/goals/{goal_id}", json={"target_date": "2027-03-01"})
    assert response.status_code == 200, response.get_json()
    states = {r.key.rsplit("|", 1)[1]: r.state for r in reminders(database, kind="goal-review")}
    assert states == {"2027-02-01": "cancelled", "2027-03-01": "scheduled"}
    response = client.patch(f"/api/v1/care-plans/{plan['id']}/goals/{goal_id}",
                            json={"achievement_status": "achieved", "lifecycle_status": "completed"})
    assert response.status_code == 200, response.get_json()
    assert {r.state for r in reminders(database, kind="goal-review")} == {"cancelled"}


def _referral(status: str, **extra) -> dict:
    return {"resourceType": "Task", "id": "ref-1", "status": status, "intent": "order",
            "for": {"reference": "Patient/p9"}, "owner": {"reference": "Organization/harbour"},
            "requester": {"reference": COORDINATOR}, "authoredOn": "2026-12-04T15:00:00Z",
            "instantiatesCanonical": "https://careplan.example.org/fhir/PlanDefinition/peer-support", **extra}


def _write(database, resource: dict, now: datetime) -> None:
    with database.writing() as session:
        service.update_in(session, resource=resource, resource_id=resource["id"], now=now)


def test_a_referral_reminds_the_partner_then_escalates_then_asks_for_first_contact(client, database, practices):
    sent = datetime(2026, 12, 4, 15, tzinfo=timezone.utc)  # a Friday, 10:00 in Toronto
    _write(database, _referral("requested"), sent)
    rows = {r.kind: r for r in reminders(database, source="Task/ref-1")}
    assert set(rows) == {"referral-response", "referral-escalation"}
    # Two business days after Friday is Tuesday 10:00; recommended is reminded 2 days earlier (Sunday).
    assert rows["referral-response"].recipient == "Organization/harbour"
    assert rows["referral-response"].payload["due"] == "2026-12-08T15:00:00+00:00"
    assert rows["referral-response"].due_at == datetime(2026, 12, 6, 15, tzinfo=timezone.utc)
    # Escalation to the coordinator after one missed business day (recommended).
    assert rows["referral-escalation"].recipient == COORDINATOR
    assert rows["referral-escalation"].due_at == datetime(2026, 12, 9, 15, tzinfo=timezone.utc)
    _write(database, _referral("received"), sent + timedelta(hours=1))
    assert {r.key for r in reminders(database, source="Task/ref-1")} == {r.key for r in rows.values()}
    accepted = sent + timedelta(days=1)
    _write(database, _referral("accepted"), accepted)
    rows = {r.kind: r for r in reminders(database, source="Task/ref-1")}
    assert rows["referral-response"].state == "cancelled" and rows["referral-response"].done_at == accepted
    assert rows["referral-escalation"].state == "cancelled"
    contact = rows["referral-contact"]
    assert contact.state == "scheduled" and contact.recipient == "Organization/harbour"
    _write(database, _referral("in-progress"), accepted + timedelta(days=2))
    (contact,) = reminders(database, kind="referral-contact")
    assert contact.state == "cancelled" and contact.done_at == accepted + timedelta(days=2)


def test_writes_of_other_types_return_at_once(database):
    with database.writing() as session:
        rules.sync_for_write(session, old=None, new={"resourceType": "Observation", "id": "o"},
                             now=datetime.now(timezone.utc))
        rules.sync_for_write(session, old=None, new={"resourceType": "CarePlan", "id": "x", "status": "active"},
                             now=datetime.now(timezone.utc))
    assert reminders(database) == []


def test_removing_an_activity_or_deleting_the_plan_cancels_its_reminders(client, database, practices):
    plan = api_plan(client, enrol(client))
    activity = plan["activity"][2]["id"]
    response = client.delete(f"/api/v1/care-plans/{plan['id']}/activities/{activity}")
    assert response.status_code == 200, response.get_json()
    (removed,) = reminders(database, source=f"CarePlan/{plan['id']}#{activity}", kind="follow-up")
    assert removed.state == "cancelled" and removed.done_at is None
    assert len([r for r in reminders(database, state="scheduled", kind="follow-up")]) == 2
    assert client.delete(f"/fhir/CarePlan/{plan['id']}").status_code in (200, 204)
    assert reminders(database, state="scheduled") == []


def test_a_goal_with_a_review_interval_is_reviewed_every_interval(client, database):
    now = datetime(2026, 11, 20, 15, tzinfo=timezone.utc)
    goal = {"resourceType": "Goal", "id": "g-interval", "lifecycleStatus": "active",
            "description": {"text": "Keep the apartment"}, "subject": {"reference": "Patient/p1"},
            "expressedBy": {"reference": COORDINATOR}, "statusDate": "2026-11-02",
            "extension": [{"url": rules.REVIEW_INTERVAL_EXTENSION,
                           "valueDuration": {"value": 2, "unit": "wk", "system": "http://unitsofmeasure.org",
                                             "code": "wk"}}]}
    _write(database, goal, now)
    (row,) = reminders(database, kind="goal-review")
    # From 2026-11-02 09:00 local every 14 days: the next review after now is 11-30 09:00 EST.
    assert row.recipient == COORDINATOR and row.due_at == datetime(2026, 11, 30, 14, tzinfo=timezone.utc)
    _write(database, {**goal, "lifecycleStatus": "cancelled"}, now)
    assert {r.state for r in reminders(database, kind="goal-review")} == {"cancelled"}


@pytest.mark.parametrize("start, expected", [
    # Spring forward on 2027-03-14: 09:00 stays 09:00 local, so the UTC hour changes from 14 to 13.
    ("2027-03-02", {"emerging": (3, 9, 14), "promising": (3, 11, 14), "recommended": (3, 14, 13)}),
    # Fall back on 2027-11-07: from 13:00Z (EDT) to 14:00Z (EST).
    ("2027-10-28", {"emerging": (11, 4, 13), "promising": (11, 6, 13), "recommended": (11, 9, 14)}),
])
def test_follow_ups_keep_the_local_hour_across_daylight_saving_changes(client, database, practices, start, expected):
    api_plan(client, enrol(client), start=start)
    due = {r.tier: (r.due_at.month, r.due_at.day, r.due_at.hour) for r in reminders(database, kind="follow-up")}
    assert due == expected


def test_concurrent_edits_of_one_plan_leave_one_scheduled_follow_up_per_activity(app, client, database, practices):
    from concurrent.futures import ThreadPoolExecutor

    plan = api_plan(client, enrol(client))
    activity = plan["activity"][1]["id"]

    def edit(days: int) -> int:
        return app.test_client().patch(f"/api/v1/care-plans/{plan['id']}/activities/{activity}",
                                       json={"cadence_days": days}).status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert set(pool.map(edit, [20, 21, 22, 23, 24, 25, 26, 27])) == {200}
    scheduled = [r for r in reminders(database, state="scheduled") if r.kind == "follow-up"]
    assert sorted(r.source.rsplit("#", 1)[1] for r in scheduled) == sorted(a["id"] for a in plan["activity"])
    final = fhir_get(client, f"CarePlan/{plan['id']}")["activity"][1]["detail"]["scheduledTiming"]["repeat"]["period"]
    (moved,) = [r for r in scheduled if r.source.endswith(f"#{activity}")]
    assert moved.payload["cadence_days"] == final
