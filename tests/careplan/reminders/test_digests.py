"""Daily digests: one per recipient and local day whatever the downtime, sections in tier order, no names."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from careplan.reminders import messages, rules
from careplan.reminders.models import RecipientPreference, Reminder
from tests.careplan.reminders.support import COORDINATOR, PERFORMER, api_plan, enrol, reminders, stock


def test_a_digest_lists_due_and_overdue_follow_ups_by_tier_without_names(client, database):
    stock(client)
    patient = enrol(client, "Gagnon")
    api_plan(client, patient, start="2026-11-02")
    now = datetime(2026, 11, 20, 13, tzinfo=timezone.utc)  # 08:00 EST, after the default 07:30
    assert rules.schedule_periodic(database, now=now) == 2  # the coordinator and the peer worker
    (digest,) = reminders(database, kind="digest", recipient=COORDINATOR)
    assert digest.key == f"digest|{COORDINATOR}|2026-11-20" and digest.due_at == datetime(
        2026, 11, 20, 12, 30, tzinfo=timezone.utc)
    with database.reading() as session:
        message = messages.render(session, session.get(Reminder, digest.id), now=now)
    text = message["text"]
    assert "Gagnon" not in text and "Zoë" not in text and "Gagnon" not in message["subject"]
    # The coordinator has the promising (housing-first) and emerging (community-navigation) follow-ups, and the
    # escalation of the peer worker's recommended (peer-support) one, missed once (due 11-16).
    assert [s["label"] for s in message["data"]["sections"]] == ["recommended", "promising", "emerging"]
    assert [i["kind"] for i in message["data"]["sections"][0]["items"]] == ["follow-up-escalation"]
    assert text.index("Recommended") < text.index("Promising") < text.index("Emerging")
    assert all(item["state"] == "overdue" for s in message["data"]["sections"] for item in s["items"])
    assert f"Patient/{patient}" in text


def test_sections_come_recommended_promising_emerging_then_no_practice():
    items = [Reminder(kind="follow-up", tier=tier, source=f"CarePlan/1#{n}", recipient=COORDINATOR, key=str(n),
                      due_at=datetime(2026, 1, 1, tzinfo=timezone.utc), payload={})
             for n, tier in enumerate([None, "emerging", "recommended", "promising", "recommended"])]
    assert [label for label, _ in messages.sections(items)] == ["recommended", "promising", "emerging",
                                                                 "no practice"]


def test_a_restart_after_days_of_downtime_sends_one_digest_not_one_per_missed_day(client, database):
    stock(client)
    api_plan(client, enrol(client), start="2026-11-02")
    day = datetime(2026, 11, 20, 13, tzinfo=timezone.utc)
    rules.schedule_periodic(database, now=day)
    # Down from the 20th until the 24th at 10:00 local; then ticking every few minutes.
    restart = datetime(2026, 11, 24, 15, tzinfo=timezone.utc)
    for minutes in (0, 1, 5, 60):
        rules.schedule_periodic(database, now=restart + timedelta(minutes=minutes))
    keys = sorted(r.key for r in reminders(database, kind="digest", recipient=COORDINATOR))
    assert keys == [f"digest|{COORDINATOR}|2026-11-20", f"digest|{COORDINATOR}|2026-11-24"]


def test_a_digest_follows_the_recipients_time_zone_and_digest_time(client, database):
    stock(client)
    with database.writing() as session:
        session.add(RecipientPreference(recipient=PERFORMER, timezone="America/Vancouver", digest_time="06:00"))
    api_plan(client, enrol(client), start="2026-11-02")
    rules.schedule_periodic(database, now=datetime(2026, 11, 20, 13, tzinfo=timezone.utc))  # 05:00 in Vancouver
    (digest,) = reminders(database, kind="digest", recipient=PERFORMER)
    assert digest.key.endswith("|2026-11-19") and digest.due_at == datetime(2026, 11, 19, 14, tzinfo=timezone.utc)


def test_quiet_hours_and_time_zone_of_the_recipient_shape_the_follow_up(client, database):
    stock(client)
    with database.writing() as session:
        session.add(RecipientPreference(recipient=PERFORMER, timezone="Europe/Paris", quiet_start="08:00",
                                        quiet_end="10:00"))
    api_plan(client, enrol(client), start="2026-11-02")
    (row,) = reminders(database, kind="follow-up", recipient=PERFORMER)
    # Start 2026-11-02 09:00 in Paris (08:00Z) + 14 days - 2 lead = 11-14 09:00 local: quiet until 10:00 (09:00Z).
    assert row.due_at == datetime(2026, 11, 14, 9, tzinfo=timezone.utc)


def test_a_sent_plan_review_is_followed_by_the_next_one(client, database):
    stock(client)
    plan = api_plan(client, enrol(client), start="2026-11-02")
    with database.writing() as session:
        review = session.scalar(select(Reminder).where(Reminder.kind == "plan-review"))
        review.state = "sent"
    rules.schedule_periodic(database, now=datetime(2027, 2, 1, 13, tzinfo=timezone.utc))
    keys = sorted((r.key, r.state) for r in reminders(database, kind="plan-review"))
    assert keys == [(f"plan-review|CarePlan/{plan['id']}|2027-01-31", "sent"),
                    (f"plan-review|CarePlan/{plan['id']}|2027-05-01", "scheduled")]


def _row(key: str, recipient: str, due_at: datetime, *, state: str = "scheduled", kind: str = "follow-up",
         done_at: datetime | None = None) -> Reminder:
    return Reminder(key=key, kind=kind, source=f"CarePlan/x#{key}", recipient=recipient, due_at=due_at, state=state,
                    done_at=done_at, payload={})


def test_digests_go_to_recipients_with_something_due_today_or_overdue_not_to_history(database):
    now = datetime(2026, 11, 20, 13, tzinfo=timezone.utc)
    with database.writing() as session:
        session.add_all([
            _row("due-today", "Practitioner/today", now + timedelta(hours=6)),
            _row("overdue", "Practitioner/overdue", now - timedelta(days=30), state="sent"),
            _row("far", "Practitioner/later", now + timedelta(days=20)),
            _row("done", "Practitioner/history", now - timedelta(days=30), state="sent", done_at=now),
            _row("cancelled", "Practitioner/history", now - timedelta(days=3), state="cancelled"),
            _row("old-digest", "Practitioner/history", now - timedelta(days=3), state="sent", kind="digest"),
            _row("escalated", "Practitioner/lead", now - timedelta(days=1), state="sent",
                 kind="follow-up-escalation")])
    with database.reading() as session:
        assert rules.digest_recipients(session, now) == [
            "Practitioner/lead", "Practitioner/overdue", "Practitioner/today"]
    assert rules.schedule_periodic(database, now=now) == 3
    assert rules.schedule_periodic(database, now=now + timedelta(minutes=5)) == 0
    assert sorted(r.recipient for r in reminders(database, kind="digest", state="scheduled")) == [
        "Practitioner/lead", "Practitioner/overdue", "Practitioner/today"]
