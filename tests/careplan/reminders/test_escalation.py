"""Follow-up escalation: after the tier's number of misses in a row the coordinator is told, once, and never twice."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from careplan.reminders import rules
from careplan.reminders.models import Delivery, Reminder
from scheduler.channels import InboxChannel
from scheduler.worker import tick
from tests.careplan.reminders.support import COORDINATOR, PERFORMER, api_plan, enrol, reminders, stock

START = datetime(2026, 11, 2, 14, tzinfo=timezone.utc)  # 2026-11-02 09:00 in Toronto, the plan's start


def _escalations(database, plan_id: str) -> dict[str, Reminder]:
    return {r.tier: r for r in reminders(database, kind="follow-up-escalation")
            if r.source.startswith(f"CarePlan/{plan_id}#")}


def _tick(database, now: datetime) -> None:
    summary = tick(database, now=now, channels={"inbox": InboxChannel(database)})
    assert summary.errors == []


def test_each_tier_escalates_after_its_own_number_of_missed_periods(client, database):
    stock(client)
    plan = api_plan(client, enrol(client))
    escalations = _escalations(database, plan["id"])
    # recommended peer-support (every 14 days, by the peer worker): after 1 miss, to the coordinator;
    # promising housing-first (every 10 days): after 2; emerging community-navigation (every 7 days): after 3.
    assert {t: (r.due_at, r.payload["misses"]) for t, r in escalations.items()} == {
        "recommended": (START + timedelta(days=14), 1), "promising": (START + timedelta(days=20), 2),
        "emerging": (START + timedelta(days=21), 3)}
    assert escalations["recommended"].recipient == COORDINATOR
    assert escalations["recommended"].payload["follow_up_recipient"] == PERFORMER
    # The coordinator's own activities: the plan's author would hear, but that is the coordinator too.
    assert escalations["promising"].recipient == COORDINATOR
    assert all(r.state == "scheduled" and r.key == f"follow-up-escalation|{r.source.replace('#', '|')}|2026-11-02"
               for r in escalations.values())


def test_the_misses_come_from_the_tier_policy_in_the_environment(client, database, monkeypatch):
    monkeypatch.setenv("CAREPLAN_REMINDER_ESCALATE_AFTER_MISSES_RECOMMENDED", "3")
    stock(client)
    plan = api_plan(client, enrol(client))
    recommended = _escalations(database, plan["id"])["recommended"]
    assert (recommended.due_at, recommended.payload["misses"]) == (START + timedelta(days=42), 3)


def test_a_missed_follow_up_is_escalated_once_and_a_late_note_closes_it(client, database):
    stock(client)
    plan = api_plan(client, enrol(client))
    # Down from before the start until the 20th: the follow-up and its escalation (due the 16th) both go out now.
    now = datetime(2026, 11, 20, 13, tzinfo=timezone.utc)
    for _ in range(3):
        _tick(database, now)
        rules.schedule_periodic(database, now=now)
    escalation = _escalations(database, plan["id"])["recommended"]
    assert escalation.state == "sent" and escalation.done_at is None
    with database.reading() as session:
        deliveries = [(d.channel, d.recipient, d.state, d.payload["text"]) for d in session.scalars(
            select(Delivery).where(Delivery.reminder_id == escalation.id))]
    assert [d[:3] for d in deliveries] == [("inbox", COORDINATOR, "delivered")]
    assert "missed 1 time(s) in a row" in deliveries[0][3] and PERFORMER in deliveries[0][3]
    # The promising and emerging ones are not yet due: their follow-ups went out, their escalations wait.
    assert {t: r.state for t, r in _escalations(database, plan["id"]).items()} == {
        "recommended": "sent", "promising": "scheduled", "emerging": "scheduled"}

    activity = plan["activity"][1]["id"]  # peer-support
    response = client.patch(f"/api/v1/care-plans/{plan['id']}/activities/{activity}",
                            json={"progress_note": "Met at the drop-in"})
    assert response.status_code == 200, response.get_json()
    rows = sorted(reminders(database, kind="follow-up-escalation", source=f"CarePlan/{plan['id']}#{activity}"),
                  key=lambda r: r.id)
    old, new = rows
    assert old.state == "sent" and old.done_at is not None  # the digest stops listing it
    # The note came after the follow-up's due moment: a miss, so with one allowed the next miss escalates again.
    assert new.state == "scheduled" and new.payload["misses"] == 2
    assert new.due_at == datetime.fromisoformat(new.payload["baseline"]) + timedelta(days=14)


def test_a_late_note_counts_as_a_miss_so_the_next_escalation_comes_sooner(client, database):
    stock(client)
    plan = api_plan(client, enrol(client))
    _tick(database, datetime(2026, 11, 20, 13, tzinfo=timezone.utc))  # housing-first's follow-up (due 11-12) sent
    activity = plan["activity"][2]["id"]  # housing-first, promising, every 10 days: 2 misses allowed
    response = client.patch(f"/api/v1/care-plans/{plan['id']}/activities/{activity}",
                            json={"progress_note": "Viewed a flat"})
    assert response.status_code == 200, response.get_json()
    first, second = sorted(reminders(database, kind="follow-up-escalation",
                                     source=f"CarePlan/{plan['id']}#{activity}"), key=lambda r: r.id)
    assert first.state == "cancelled"  # never due: the note came before two periods had passed
    baseline = datetime.fromisoformat(second.payload["baseline"])
    assert baseline > START + timedelta(days=10)  # the note is later than the follow-up's due moment
    assert (second.due_at, second.payload["misses"]) == (baseline + timedelta(days=10), 2)


def test_an_on_time_note_resets_the_count_and_re_saving_never_duplicates(client, database):
    stock(client)
    start = (datetime.now(timezone.utc) - timedelta(days=5)).date()
    plan = api_plan(client, enrol(client, "Roy"), start=start.isoformat())
    activity = plan["activity"][2]["id"]  # housing-first, every 10 days: due in 5 days, so a note now is on time
    (follow_up,) = reminders(database, kind="follow-up", source=f"CarePlan/{plan['id']}#{activity}")
    _tick(database, follow_up.due_at + timedelta(minutes=1))  # sent (a day early, the promising lead)
    assert reminders(database, key=follow_up.key)[0].state == "sent"
    response = client.patch(f"/api/v1/care-plans/{plan['id']}/activities/{activity}",
                            json={"progress_note": "Called"})
    assert response.status_code == 200, response.get_json()
    for _ in range(2):
        assert client.patch(f"/api/v1/care-plans/{plan['id']}/activities/{activity}",
                            json={"cadence_days": 10}).status_code == 200
    rows = reminders(database, kind="follow-up-escalation", source=f"CarePlan/{plan['id']}#{activity}")
    live = [r for r in rows if r.state == "scheduled"]
    # Done on time: no miss carried over, so two more periods before the coordinator hears.
    assert len(live) == 1 and live[0].payload["misses"] == 2
    assert live[0].due_at == datetime.fromisoformat(live[0].payload["baseline"]) + timedelta(days=20)
    assert len({r.key for r in rows}) == len(rows)


def test_closing_the_activity_or_holding_the_plan_cancels_the_escalation(client, database):
    stock(client)
    plan = api_plan(client, enrol(client))
    activity = plan["activity"][0]["id"]
    assert client.patch(f"/api/v1/care-plans/{plan['id']}/activities/{activity}",
                        json={"status": "completed"}).status_code == 200
    (closed,) = reminders(database, kind="follow-up-escalation", source=f"CarePlan/{plan['id']}#{activity}")
    assert closed.state == "cancelled"
    assert client.post(f"/api/v1/care-plans/{plan['id']}/status", json={"status": "on-hold"}).status_code == 200
    assert {r.state for r in _escalations(database, plan["id"]).values()} == {"cancelled"}
