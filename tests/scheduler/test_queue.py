"""Claiming due reminders under a lease, and expanding them into outbox deliveries."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from careplan.reminders.models import Delivery, Reminder
from scheduler import queue
from tests.conftest import POSTGRES_URL
from tests.scheduler.conftest import NOW, add_channel, add_reminders, count, deliveries

LEASE = timedelta(seconds=60)


def _claim(db, holder, *, now=NOW, limit=100):
    return queue.claim_due(db, holder=holder, now=now, limit=limit, lease=LEASE)


def test_only_due_open_reminders_are_claimed_in_due_order(database):
    due = add_reminders(database, 3, due_at=NOW - timedelta(hours=3), spacing=timedelta(hours=1), prefix="due")
    add_reminders(database, 2, due_at=NOW + timedelta(seconds=1), prefix="future")
    add_reminders(database, 1, due_at=NOW - timedelta(days=1), prefix="sent", state="sent")
    add_reminders(database, 1, due_at=NOW - timedelta(days=1), prefix="cancelled", state="cancelled")

    claimed = _claim(database, "a")

    assert [r.id for r in claimed] == due
    assert {(r.state, r.lease_holder, r.lease_expires_at) for r in claimed} == {("claimed", "a", NOW + LEASE)}
    assert _claim(database, "b") == []  # the lease is live: nobody else gets them


def test_limit_bounds_a_claim_and_the_next_claim_takes_the_rest(database):
    ids = add_reminders(database, 7)
    first = _claim(database, "a", limit=5)
    second = _claim(database, "b", limit=5)
    assert len(first) == 5 and len(second) == 2
    assert sorted(r.id for r in first + second) == ids


def test_an_expired_lease_is_reclaimed_and_the_old_holder_cannot_complete(database):
    [reminder_id] = add_reminders(database, 1)
    [mine] = _claim(database, "a")
    assert _claim(database, "b", now=NOW + LEASE - timedelta(seconds=1)) == []

    [taken] = _claim(database, "b", now=NOW + LEASE + timedelta(seconds=1))
    assert taken.id == reminder_id and taken.lease_holder == "b"

    late = queue.expand(database, reminders=[mine], holder="a", now=NOW + LEASE + timedelta(seconds=2))
    assert (late.sent, late.deliveries, late.lost) == (0, 0, 1)
    assert deliveries(database) == []

    done = queue.expand(database, reminders=[taken], holder="b", now=NOW + LEASE + timedelta(seconds=3))
    assert (done.sent, done.deliveries, done.lost) == (1, 1, 0)
    with database.reading() as session:
        assert session.get(Reminder, reminder_id).state == "sent"


def test_expand_writes_inbox_and_active_channels_with_unique_keys(database):
    [reminder_id] = add_reminders(database, 1)
    hook = add_channel(database, address="http://127.0.0.1:9/hook")
    mail = add_channel(database, channel="email", address="coordinator@example.org", secret=None)
    add_channel(database, address="http://127.0.0.1:9/off", active=False)
    add_channel(database, recipient="Practitioner/someone-else", address="http://127.0.0.1:9/other")

    result = queue.expand(database, reminders=_claim(database, "a"), holder="a", now=NOW)

    assert (result.sent, result.deliveries) == (1, 3)
    rows = deliveries(database)
    assert {(d.channel, d.channel_id, d.idempotency_key) for d in rows} == {
        ("inbox", None, f"reminder-{reminder_id}-inbox"),
        ("webhook", hook, f"reminder-{reminder_id}-webhook-{hook}"),
        ("email", mail, f"reminder-{reminder_id}-email-{mail}"),
    }
    assert {(d.state, d.attempts, d.next_attempt_at, d.recipient) for d in rows} == {
        ("pending", 0, NOW, "Practitioner/p1")}
    # The rendered message is stored with the delivery, and it names no one.
    assert all(d.payload["subject"] and d.payload["text"] for d in rows)
    assert all("Patient/pt0" in d.payload["text"] for d in rows)


def test_deliveries_are_inserted_only_if_absent(database):
    add_reminders(database, 1)
    queue.expand(database, reminders=_claim(database, "a"), holder="a", now=NOW)
    [row] = deliveries(database)
    again = dict(reminder_id=row.reminder_id, channel="inbox", channel_id=None, recipient=row.recipient,
                 idempotency_key=row.idempotency_key, state="pending", attempts=0, next_attempt_at=NOW,
                 payload={"text": "second copy"}, created_at=NOW)
    with database.writing() as session:
        assert queue.insert_if_absent(session, [again]) == 0
    assert [d.payload for d in deliveries(database)] == [row.payload]


def test_a_reminder_that_cannot_be_rendered_does_not_hold_back_the_others(database):
    ids = add_reminders(database, 3)
    broken = ids[1]

    def render(session, reminder):
        if reminder.id == broken:
            raise ValueError("template error")
        return queue.basic_render(session, reminder)

    result = queue.expand(database, reminders=_claim(database, "a"), holder="a", now=NOW, render=render)

    assert (result.sent, result.failed) == (2, 1)
    with database.reading() as session:
        states = dict(session.execute(select(Reminder.id, Reminder.state)).all())
    # The broken one stays claimed: its lease expires and a later tick tries again.
    assert states == {ids[0]: "sent", broken: "claimed", ids[2]: "sent"}
    assert count(database, Delivery) == 2


def _claim_concurrently(database, *, holders: int, rows: int, limit: int) -> dict[str, list[int]]:
    add_reminders(database, rows)
    claimed: dict[str, list[int]] = {f"h{i}": [] for i in range(holders)}
    start = threading.Barrier(holders)
    errors = []

    def work(holder):
        try:
            start.wait()
            while True:
                batch = _claim(database, holder, limit=limit)
                if not batch:
                    return
                claimed[holder].extend(r.id for r in batch)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(holder,)) for holder in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    return claimed


def test_concurrent_claimers_never_get_the_same_reminder(database):
    claimed = _claim_concurrently(database, holders=4, rows=400, limit=7)
    every = [i for ids in claimed.values() for i in ids]
    assert len(every) == len(set(every)) == 400
    with database.reading() as session:
        holders = dict(session.execute(select(Reminder.id, Reminder.lease_holder)).all())
    assert all(holders[i] == holder for holder, ids in claimed.items() for i in ids)


@pytest.mark.postgresql
@pytest.mark.skipif(not POSTGRES_URL, reason="SKIP LOCKED is PostgreSQL's")
def test_skip_locked_lets_a_second_claimer_pass_a_locked_row_without_waiting(database):
    from sqlalchemy import text

    first, second = add_reminders(database, 2, spacing=timedelta(seconds=1))
    with database.engine.connect() as locker:
        locker.execute(text("SELECT id FROM reminder WHERE id = :id FOR UPDATE"), {"id": first})
        # The oldest row is locked by an open transaction: the claim skips it instead of blocking.
        claimed = []
        claimer = threading.Thread(target=lambda: claimed.extend(_claim(database, "b")))
        claimer.start()
        claimer.join(10)
        blocked = claimer.is_alive()
        locker.rollback()
        claimer.join()
        assert not blocked
        assert [r.id for r in claimed] == [second]
    assert [r.id for r in _claim(database, "c")] == [first]
