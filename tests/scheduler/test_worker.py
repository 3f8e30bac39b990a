"""Ticks, the APScheduler clock, catch-up after downtime, and the `careplan scheduler` command."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import timedelta

from click.testing import CliRunner

from careplan.cli import main
from careplan.models import utcnow
from careplan.reminders.models import Delivery, Reminder
from scheduler import clock, worker
from tests.scheduler.conftest import NOW, add_channel, add_reminders, count, deliveries


def test_every_reminder_due_while_the_scheduler_was_down_is_sent_on_the_next_tick(database, settings, receiver):
    # Three days of downtime: 150 reminders fell due, one every 28 minutes, more than three batches' worth.
    ids = add_reminders(database, 150, due_at=NOW - timedelta(days=3), spacing=timedelta(minutes=28))
    add_reminders(database, 5, due_at=NOW + timedelta(hours=1), prefix="later")
    add_channel(database, address=receiver.url)

    summary = worker.tick(database, now=NOW, settings=settings, periodic=False)

    assert summary.errors == []
    assert (summary.claimed, summary.sent, summary.deliveries, summary.delivered) == (150, 150, 300, 300)
    assert count(database, Reminder, state="sent") == 150
    assert count(database, Reminder, state="scheduled") == 5
    assert sorted(receiver.keys()) == sorted(
        f"reminder-{i}-webhook-{d.channel_id}" for i, d in zip(ids, deliveries(database, channel="webhook")))
    # Nothing more to do: the next tick is idle and sends nothing twice.
    again = worker.tick(database, now=NOW, settings=settings, periodic=False)
    assert (again.claimed, again.delivered) == (0, 0)
    assert len(receiver.requests) == 150


def test_a_tick_runs_the_rules_periodic_scheduling_without_errors(database, settings):
    add_reminders(database, 2)
    summary = worker.tick(database, now=NOW, settings=settings)
    assert summary.errors == []
    assert summary.sent >= 2 and count(database, Delivery, state="delivered") == summary.deliveries


def test_scheduler_once_runs_one_tick_and_prints_a_summary(database, database_url):
    add_reminders(database, 3, due_at=utcnow() - timedelta(minutes=5))
    result = CliRunner().invoke(main, ["scheduler", "--once"], env={"CAREPLAN_DATABASE_URL": database_url})
    assert result.exit_code == 0, result.output
    match = re.search(r"tick: (\d+) reminders claimed, (\d+) sent, (\d+) deliveries queued, (\d+) delivered",
                      result.output)
    assert match, result.output
    claimed, sent, queued, delivered = map(int, match.groups())
    # The rules may add a digest of their own; the three due reminders are certainly among what was sent.
    assert claimed == sent >= 3 and queued == delivered >= 3
    assert count(database, Reminder, state="scheduled", kind="follow-up") == 0
    assert count(database, Delivery, state="delivered") == delivered


def test_scheduler_refuses_an_unmigrated_database(tmp_path):
    result = CliRunner().invoke(main, ["scheduler", "--once"],
                                env={"CAREPLAN_DATABASE_URL": f"sqlite:///{tmp_path / 'new.sqlite3'}"})
    assert result.exit_code == 1 and "careplan db upgrade" in result.output


def test_the_in_process_clock_ticks_at_once_and_again_every_interval(database, settings):
    settings = replace(settings, scheduler_interval_seconds=0.2)
    add_reminders(database, 4, due_at=utcnow() - timedelta(minutes=1))
    running = clock.start_background(database, settings)
    try:
        job = running.scheduler.get_job(clock.JOB_ID)
        # Never skip a late run as misfired, never stack runs: the database remembers what is due.
        assert (job.misfire_grace_time, job.coalesce, job.max_instances) == (None, True, 1)
        _wait_for(lambda: count(database, Reminder, state="sent", kind="follow-up") == 4)
        # Reminders falling due later are picked up by a later tick of the same clock.
        add_reminders(database, 2, due_at=utcnow(), prefix="later")
        _wait_for(lambda: count(database, Reminder, state="sent", kind="follow-up") == 6)
    finally:
        running.stop()
    assert not running.scheduler.running


def test_careplan_scheduler_runs_until_sigterm(database, database_url, tmp_path):
    add_reminders(database, 2, due_at=utcnow() - timedelta(minutes=1))
    env = {**os.environ, "CAREPLAN_DATABASE_URL": database_url, "CAREPLAN_SCHEDULER_INTERVAL_SECONDS": "0.5"}
    process = subprocess.Popen([sys.executable, "-m", "careplan.cli", "scheduler"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: count(database, Reminder, state="sent", kind="follow-up") == 2, timeout=30)
        add_reminders(database, 1, due_at=utcnow(), prefix="later")
        _wait_for(lambda: count(database, Reminder, state="sent", kind="follow-up") == 3, timeout=30)
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "careplan scheduler: a tick every 0.5 s" in output


def _wait_for(condition, *, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _serve(database_url, *extra):
    from tests.scheduler.conftest import free_port

    env = {**os.environ, "CAREPLAN_DATABASE_URL": database_url, "CAREPLAN_SCHEDULER_INTERVAL_SECONDS": "0.5"}
    return subprocess.Popen([sys.executable, "-m", "careplan.cli", "serve", "--port", str(free_port()),
                             "--workers", "1", "--threads", "1", *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stop(process) -> str:
    process.send_signal(signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    return output


def test_careplan_serve_runs_the_scheduler_unless_told_not_to(database, database_url):
    add_reminders(database, 2, due_at=utcnow() - timedelta(minutes=1))
    quiet = _serve(database_url, "--no-scheduler")
    try:
        time.sleep(4)  # several intervals: nothing may be sent
        assert count(database, Reminder, state="scheduled", kind="follow-up") == 2
    finally:
        output = _stop(quiet)
    assert "reminder scheduler on" not in output

    server = _serve(database_url)
    try:
        _wait_for(lambda: count(database, Reminder, state="sent", kind="follow-up") == 2, timeout=30)
    finally:
        output = _stop(server)
    assert "reminder scheduler on" in output
    assert server.returncode == 0, output
