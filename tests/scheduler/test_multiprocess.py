"""Four `careplan scheduler` processes, 10,000 due reminders, one process SIGKILLed: every reminder arrives once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text

from careplan.models import Resource, utcnow
from careplan.reminders.models import Delivery, Reminder
from tests.conftest import POSTGRES_URL
from tests.scheduler.conftest import add_channel

pytestmark = [pytest.mark.postgresql, pytest.mark.slow,
              pytest.mark.skipif(not POSTGRES_URL, reason="several scheduler processes need PostgreSQL")]

REMINDERS = 10_000
PROCESSES = 4
# Bounded by progress, not by a wall-clock guess: a loaded CI machine is slower, a stuck run still fails fast.
STALL_LIMIT = float(os.environ.get("CAREPLAN_TEST_SCHEDULER_STALL_SECONDS", "60"))
TIME_LIMIT = float(os.environ.get("CAREPLAN_TEST_SCHEDULER_TIME_LIMIT", "600"))


class Progress:
    """Fail when nothing has moved for STALL_LIMIT seconds, or the whole run took longer than TIME_LIMIT."""

    def __init__(self):
        self.started = self.moved = time.monotonic()
        self.last = None

    def check(self, value, what: str) -> None:
        now = time.monotonic()
        if value != self.last:
            self.last, self.moved = value, now
        assert now - self.moved < STALL_LIMIT, f"no progress for {STALL_LIMIT:.0f} s: {what}"
        assert now - self.started < TIME_LIMIT, f"not done in {TIME_LIMIT:.0f} s: {what}"


def test_four_schedulers_one_killed_deliver_every_reminder_exactly_once(database, database_url, receiver, tmp_path):
    recipient = "Organization/partner-agency"
    add_channel(database, recipient=recipient, address=receiver.url)
    due = utcnow() - timedelta(minutes=5)
    with database.engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO reminder (key, kind, source, recipient, patient, tier, due_at, state, payload, created_at,"
            " updated_at) SELECT 'load|' || n, 'follow-up', 'Task/t' || n, :recipient, 'Patient/p' || n,"
            " 'recommended', :due + n * interval '1 millisecond', 'scheduled', '{}'::jsonb, :due, :due"
            " FROM generate_series(1, :count) AS n"), {"recipient": recipient, "due": due, "count": REMINDERS})
    # The lease must outlast a claimed batch: on a loaded machine 200 inbox writes took over 5 s, and a batch whose
    # lease lapses is re-claimed and redone by another worker, over and over (see the README's "Reminders").
    env = {**os.environ, "CAREPLAN_DATABASE_URL": database_url, "CAREPLAN_SCHEDULER_INTERVAL_SECONDS": "0.5",
           "CAREPLAN_REMINDER_LEASE_SECONDS": "30", "CAREPLAN_SCHEDULER_BATCH_SIZE": "200",
           "CAREPLAN_DELIVERY_BACKOFF_BASE_SECONDS": "1", "CAREPLAN_WEBHOOK_TIMEOUT_SECONDS": "5"}
    started = time.monotonic()
    # Logs go to files: a pipe nobody reads fills up and blocks the writer.
    logs = [tmp_path / f"scheduler-{i}.log" for i in range(PROCESSES)]
    processes = [subprocess.Popen([sys.executable, "-m", "careplan.cli", "scheduler"], env=env,
                                  stdout=log.open("w"), stderr=subprocess.STDOUT)
                 for log in logs]
    try:
        # Kill one worker in the middle of the run, whatever it is doing at that moment.
        progress = Progress()
        while len(receiver.requests) < REMINDERS // 4:
            # Inbox deliveries (Communications written through the store) are progress too: a tick may spend a
            # while on them between webhook batches.
            moved = (len(receiver.requests), _delivered(database))
            progress.check(moved, f"{moved[0]} webhook requests, {moved[1]} deliveries")
            assert all(p.poll() is None for p in processes), "a scheduler died on its own"
            time.sleep(0.2)
        processes[0].send_signal(signal.SIGKILL)
        killed_at = len(receiver.requests)
        while not _all_done(database):
            states = _states(database)
            progress.check(states, str(states))
            time.sleep(0.25)
        elapsed = time.monotonic() - started
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
    assert processes[0].returncode == -signal.SIGKILL
    assert [p.returncode for p in processes[1:]] == [0] * (PROCESSES - 1), [log.read_text()[-2000:] for log in logs]

    with database.reading() as session:
        follow_ups = set(session.scalars(select(Reminder.id).where(Reminder.kind == "follow-up")))
        webhook_keys = dict(session.execute(select(Delivery.idempotency_key, Delivery.reminder_id)
                                            .where(Delivery.channel == "webhook")).all())
        communications = session.scalar(select(func.count()).select_from(Resource)
                                        .where(Resource.res_type == "Communication"))
        inbox = session.scalar(select(func.count()).select_from(Delivery).where(Delivery.channel == "inbox"))
    received = receiver.keys()
    distinct = set(received)
    load_keys = {key for key, reminder_id in webhook_keys.items() if reminder_id in follow_ups}
    assert len(follow_ups) == REMINDERS
    # Every reminder arrived (none lost), and after de-duplication by Idempotency-Key exactly once.
    assert len(load_keys) == REMINDERS
    assert load_keys <= distinct
    assert distinct == set(webhook_keys)  # nothing arrived that the outbox does not know (digests included)
    assert len(distinct & load_keys) == REMINDERS
    # The inbox de-duplicates by itself: one Communication per inbox delivery, re-sends included.
    assert communications == inbox
    duplicates = len(received) - len(distinct)
    print(f"\n{REMINDERS} reminders, {PROCESSES} processes, one SIGKILLed after {killed_at} webhook requests: "
          f"{elapsed:.1f} s, {len(received)} requests, {duplicates} re-sent after the kill (same key)")


def _delivered(database) -> int:
    with database.reading() as session:
        return session.scalar(select(func.count()).select_from(Delivery).where(Delivery.state == "delivered"))


def _all_done(database) -> bool:
    with database.reading() as session:
        open_reminders = session.scalar(select(func.count()).select_from(Reminder)
                                        .where(Reminder.state.in_(("scheduled", "claimed")),
                                               Reminder.kind == "follow-up"))
        open_deliveries = session.scalar(select(func.count()).select_from(Delivery)
                                         .where(Delivery.state != "delivered"))
    return open_reminders == 0 and open_deliveries == 0


def _states(database) -> dict:
    with database.reading() as session:
        return {
            "reminders": dict(session.execute(select(Reminder.state, func.count()).group_by(Reminder.state)).all()),
            "deliveries": dict(session.execute(select(Delivery.state, func.count()).group_by(Delivery.state)).all()),
        }
