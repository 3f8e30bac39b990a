"""A follow-up that is not done is sent again every cadence period, until a progress note or a closed activity."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from careplan.reminders.models import Delivery
from scheduler.channels import InboxChannel
from scheduler.worker import tick
from tests.careplan.reminders.support import PERFORMER, api_plan, enrol, reminders, stock

EVERY = timedelta(days=14)  # peer-support, the plan's recommended activity, done by the peer worker


def _tick(database, now: datetime) -> None:
    summary = tick(database, now=now, channels={"inbox": InboxChannel(database)}, periodic=False)
    assert summary.errors == []


def _peer_support(client, database) -> tuple[dict, str, datetime]:
    """Make a plan that started three days ago; return it, its peer-support activity id and that follow-up's due."""
    stock(client)
    start = (datetime.now(timezone.utc) - timedelta(days=3)).date()
    plan = api_plan(client, enrol(client), start=start.isoformat())
    activity = plan["activity"][1]["id"]
    (follow_up,) = reminders(database, kind="follow-up", source=f"CarePlan/{plan['id']}#{activity}")
    return plan, activity, datetime.fromisoformat(follow_up.payload["due"])


def _overdue(database, plan_id: str, activity: str) -> dict[int, tuple[str, datetime]]:
    return {r.payload["periods_overdue"]: (r.state, r.due_at) for r in
            reminders(database, kind="follow-up-overdue", source=f"CarePlan/{plan_id}#{activity}")}


def test_a_forgotten_follow_up_is_sent_again_each_period_until_a_note(client, database):
    plan, activity, due = _peer_support(client, database)
    # Scheduled ahead, like the escalation: one period after the follow-up's due moment, to the same person.
    assert _overdue(database, plan["id"], activity) == {1: ("scheduled", due + EVERY)}
    (first,) = reminders(database, kind="follow-up-overdue", source=f"CarePlan/{plan['id']}#{activity}")
    assert first.recipient == PERFORMER and first.tier == "recommended"

    _tick(database, due + EVERY + timedelta(hours=1))  # the follow-up and the first "still not done" go out
    assert _overdue(database, plan["id"], activity) == {1: ("sent", due + EVERY), 2: ("scheduled", due + 2 * EVERY)}
    _tick(database, due + 2 * EVERY + timedelta(hours=1))
    assert _overdue(database, plan["id"], activity) == {
        1: ("sent", due + EVERY), 2: ("sent", due + 2 * EVERY), 3: ("scheduled", due + 3 * EVERY)}
    with database.reading() as session:
        texts = [d.payload["text"] for d in session.scalars(select(Delivery).where(Delivery.channel == "inbox"))
                 if d.payload["data"]["kind"] == "follow-up-overdue"
                 and d.payload["data"]["source"] == f"CarePlan/{plan['id']}#{activity}"]
    assert len(texts) == 2 and all(t.startswith("Follow-up still not done") for t in texts)
    assert "2 cadence period(s) ago" in texts[1]

    # A progress note is the follow-up done: what waits is withdrawn, what went out counts as done, and the
    # next "still not done" waits on the next follow-up (a new baseline).
    response = client.patch(f"/api/v1/care-plans/{plan['id']}/activities/{activity}",
                            json={"progress_note": "Met at the drop-in"})
    assert response.status_code == 200, response.get_json()
    rows = reminders(database, kind="follow-up-overdue", source=f"CarePlan/{plan['id']}#{activity}")
    by_state = {}
    for row in rows:
        by_state.setdefault(row.state, []).append(row)
    assert sorted(r.payload["periods_overdue"] for r in by_state["sent"]) == [1, 2]
    assert all(r.done_at is not None for r in by_state["sent"])
    assert [r.payload["periods_overdue"] for r in by_state["cancelled"]] == [3]
    (waiting,) = by_state["scheduled"]
    baseline = datetime.fromisoformat(waiting.payload["baseline"])
    assert baseline > datetime.fromisoformat(first.payload["baseline"])
    assert waiting.due_at == baseline + 2 * EVERY and waiting.payload["periods_overdue"] == 1


def test_after_downtime_only_the_latest_period_is_sent_not_one_per_period_missed(client, database):
    plan, activity, due = _peer_support(client, database)
    back = due + 4 * EVERY + timedelta(hours=1)  # down for four periods
    _tick(database, back)
    _tick(database, back)
    assert _overdue(database, plan["id"], activity) == {
        1: ("sent", due + EVERY), 4: ("sent", due + 4 * EVERY), 5: ("scheduled", due + 5 * EVERY)}


def test_closing_the_activity_or_re_saving_the_plan_never_duplicates_or_leaves_one_behind(client, database):
    plan, activity, due = _peer_support(client, database)
    for _ in range(2):
        assert client.patch(f"/api/v1/care-plans/{plan['id']}/activities/{activity}",
                            json={"cadence_days": 14}).status_code == 200
    assert _overdue(database, plan["id"], activity) == {1: ("scheduled", due + EVERY)}
    assert client.patch(f"/api/v1/care-plans/{plan['id']}/activities/{activity}",
                        json={"status": "completed"}).status_code == 200
    assert _overdue(database, plan["id"], activity) == {1: ("cancelled", due + EVERY)}
    _tick(database, due + 3 * EVERY)
    assert _overdue(database, plan["id"], activity) == {1: ("cancelled", due + EVERY)}
