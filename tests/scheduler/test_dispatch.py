"""The outbox: webhook, e-mail and inbox channels for real, retries with backoff, fencing, dead letters."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from email import message_from_bytes, policy

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from careplan.cli import main
from careplan.models import Resource
from careplan.reminders.models import Delivery
from careplan.store import service
from scheduler import dispatch, queue, worker
from scheduler.channels import IDENTIFIER_SYSTEM, InboxChannel
from tests.factories import patient
from tests.scheduler.conftest import NOW, SECRET, add_channel, add_reminders, deliveries, free_port, verify

LEASE = timedelta(seconds=60)


def _tick(database, settings, now=NOW):
    summary = worker.tick(database, now=now, holder="worker-1", settings=settings, periodic=False)
    assert summary.errors == []
    return summary


def _webhook(database):
    [row] = deliveries(database, channel="webhook")
    return row


def test_webhook_posts_signed_json_to_a_real_receiver(database, settings, receiver):
    [reminder_id] = add_reminders(database, 1)
    channel_id = add_channel(database, address=receiver.url)

    summary = _tick(database, settings)

    assert (summary.claimed, summary.deliveries, summary.delivered) == (1, 2, 2)
    [request] = receiver.requests
    key = f"reminder-{reminder_id}-webhook-{channel_id}"
    assert request.path == "/hooks/careplan"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == key
    assert verify(SECRET, request.headers, request.body)
    assert not verify("another secret", request.headers, request.body)
    assert not verify(SECRET, request.headers, request.body + b" ")
    document = request.json
    assert document["idempotency_key"] == key
    assert document["reminder"] == {"id": reminder_id, "kind": "follow-up", "tier": "recommended",
                                    "source": "CarePlan/cp0#act-1", "patient": "Patient/pt0",
                                    "due_at": (NOW - timedelta(minutes=1)).isoformat()}
    assert document["message"]["subject"]
    row = _webhook(database)
    assert (row.state, row.attempts, row.delivered_at, row.last_error) == ("delivered", 1, NOW, None)


def test_receiver_down_for_a_while_is_retried_with_backoff_then_delivered(database, settings, receiver):
    add_reminders(database, 1)
    add_channel(database, address=receiver.url)
    receiver.down()

    now = NOW
    previous_wait = None
    for attempt in range(1, 7):
        _tick(database, settings, now=now)
        row = _webhook(database)
        assert (row.state, row.attempts, row.first_attempt_at) == ("pending", attempt, NOW)
        assert row.last_error.startswith("webhook unreachable")
        wait = (row.next_attempt_at - now).total_seconds()
        # Full jitter: anywhere up to base * 2**(attempts so far), never more.
        assert 0 <= wait <= 30 * 2 ** (attempt - 1)
        # Not due yet: a tick before next_attempt_at leaves it alone.
        if wait > 0.001:
            _tick(database, settings, now=row.next_attempt_at - timedelta(milliseconds=1))
            assert _webhook(database).attempts == attempt
        previous_wait = wait
        now = row.next_attempt_at
    assert previous_wait is not None

    receiver.up()
    _tick(database, settings, now=now)
    row = _webhook(database)
    assert (row.state, row.attempts, row.last_error) == ("delivered", 7, None)
    assert len(receiver.requests) == 1


def test_an_error_status_is_a_failure_and_the_retry_carries_the_same_key(database, settings, receiver):
    add_reminders(database, 1)
    add_channel(database, address=receiver.url)
    receiver.status = 503
    _tick(database, settings)
    row = _webhook(database)
    assert (row.state, row.last_error) == ("pending", "webhook answered HTTP 503")

    receiver.status = 204
    _tick(database, settings, now=row.next_attempt_at)
    assert _webhook(database).state == "delivered"
    keys = receiver.keys()
    assert len(keys) == 2 and len(set(keys)) == 1


def test_a_redirect_is_a_failure_not_a_delivery(database, settings, receiver):
    add_reminders(database, 1)
    add_channel(database, address=receiver.url)
    receiver.status = 302
    _tick(database, settings)
    assert (_webhook(database).state, _webhook(database).last_error) == ("pending", "webhook answered HTTP 302")
    assert [r.path for r in receiver.requests] == ["/hooks/careplan"]  # not followed


def test_a_result_is_not_recorded_once_another_worker_holds_the_lease(database, settings, receiver):
    add_reminders(database, 1)
    add_channel(database, address=receiver.url)
    queue.expand(database, reminders=queue.claim_due(database, holder="a", now=NOW, limit=10, lease=LEASE),
                 holder="a", now=NOW)
    mine = dispatch.claim_deliveries(database, holder="a", now=NOW, limit=10, lease=LEASE)
    assert len(mine) == 2
    later = NOW + LEASE + timedelta(seconds=1)
    theirs = dispatch.claim_deliveries(database, holder="b", now=later, limit=10, lease=LEASE)
    assert sorted(d.id for d in theirs) == sorted(d.id for d in mine)

    channels = worker.default_channels(database, settings)
    late = dispatch.record(database, dispatch.send_all(mine, channels, lease=LEASE), holder="a", now=later,
                           settings=settings)
    assert (late.delivered, late.lost) == (0, 2)
    assert {(d.state, d.lease_holder) for d in deliveries(database)} == {("claimed", "b")}

    done = dispatch.record(database, dispatch.send_all(theirs, channels, lease=LEASE), holder="b", now=later,
                           settings=settings)
    assert (done.delivered, done.lost) == (2, 0)
    # Both holders sent: the receiver de-duplicates by Idempotency-Key, the inbox by the Communication identifier.
    assert len(receiver.requests) == 2 and len(set(receiver.keys())) == 1
    with database.reading() as session:
        assert len(session.scalars(select(Resource).where(Resource.res_type == "Communication")).all()) == 1


def test_the_inbox_creates_one_communication_however_often_it_is_sent(database, settings):
    [reminder_id] = add_reminders(database, 1)
    _tick(database, settings)
    [row] = deliveries(database)
    [outgoing] = dispatch.claim_deliveries(database, holder="x", now=NOW, limit=1, lease=LEASE) or [None]
    assert outgoing is None  # delivered rows are never claimed again
    criteria = [("identifier", f"{IDENTIFIER_SYSTEM}|{row.idempotency_key}")]
    with database.reading() as session:
        [communication] = service.matches_in(session, resource_type="Communication", criteria=criteria)
    content = communication.content
    assert content["status"] == "completed"
    assert content["recipient"] == [{"reference": "Practitioner/p1"}]
    assert content["subject"] == {"reference": "Patient/pt0"}
    assert content["category"][0]["coding"][0]["code"] == "reminder"
    assert content["about"] == [{"reference": "CarePlan/cp0"}]

    # A retry after a lost lease sends the same delivery again: still one Communication.
    from scheduler.channels import Outgoing

    InboxChannel(database).send(Outgoing(id=row.id, channel="inbox", recipient=row.recipient,
                                         idempotency_key=row.idempotency_key, payload=row.payload,
                                         reminder_id=reminder_id, source="CarePlan/cp0#act-1",
                                         patient="Patient/pt0"))
    with database.reading() as session:
        assert len(service.matches_in(session, resource_type="Communication", criteria=criteria)) == 1


def test_dead_letter_after_the_retry_window_and_requeue_from_the_cli(database, database_url, settings, receiver):
    settings = replace(settings, delivery_retry_hours=1.0, delivery_backoff_base_seconds=600.0,
                       delivery_backoff_cap_seconds=1800.0)
    add_reminders(database, 1)
    add_channel(database, address=receiver.url)
    receiver.down()

    now = NOW
    attempts = 0
    while True:
        _tick(database, settings, now=now)
        attempts += 1
        row = _webhook(database)
        assert row.attempts == attempts and attempts < 100
        if row.state != "pending":
            break
        assert row.next_attempt_at <= NOW + timedelta(hours=1)  # the last try falls inside the window
        now = row.next_attempt_at
    assert row.state == "dead" and row.last_error.startswith("webhook unreachable")
    assert now >= NOW + timedelta(hours=1)  # tried until the window was over, not given up early

    runner = CliRunner()
    env = {"CAREPLAN_DATABASE_URL": database_url}
    listed = runner.invoke(main, ["deliveries", "dead"], env=env)
    assert listed.exit_code == 0, listed.output
    assert f"{row.id}\twebhook\tPractitioner/p1\t{attempts} attempts\t{row.idempotency_key}" in listed.output
    assert "1 dead deliveries" in listed.output
    assert runner.invoke(main, ["deliveries", "requeue"], env=env).exit_code == 2  # ids or --all
    assert runner.invoke(main, ["deliveries", "requeue", "999999"], env=env).output.strip() == "0 deliveries requeued"
    requeued = runner.invoke(main, ["deliveries", "requeue", str(row.id)], env=env)
    assert requeued.output.strip() == "1 deliveries requeued"
    row = _webhook(database)
    assert (row.state, row.attempts, row.first_attempt_at, row.last_error is not None) == ("pending", 0, None, True)

    receiver.up()
    summary = worker.tick(database, holder="worker-1", settings=settings, periodic=False)  # the real clock
    assert summary.delivered == 1
    assert _webhook(database).state == "delivered"
    assert "0 dead deliveries" in runner.invoke(main, ["deliveries", "dead"], env=env).output


def test_requeue_all_only_touches_dead_deliveries(database, settings):
    from scheduler import deadletter

    add_reminders(database, 3)
    add_channel(database, address=f"http://127.0.0.1:{free_port()}/", active=True)
    _tick(database, settings)
    with database.writing() as session:
        rows = session.scalars(select(Delivery).where(Delivery.channel == "webhook").order_by(Delivery.id)).all()
        rows[0].state, rows[1].state = "dead", "dead"
    assert [d.id for d in deadletter.list_dead(database)] == [rows[1].id, rows[0].id]
    assert deadletter.requeue(database, ids=None, now=NOW) == 2
    assert deadletter.list_dead(database) == []
    assert {d.state for d in deliveries(database, channel="inbox")} == {"delivered"}


def test_a_turned_off_channel_is_dead_at_once(database, settings, receiver):
    add_reminders(database, 1)
    channel_id = add_channel(database, address=receiver.url)
    queue.expand(database, reminders=queue.claim_due(database, holder="a", now=NOW, limit=10, lease=LEASE),
                 holder="a", now=NOW)
    from careplan.reminders.models import RecipientChannel

    with database.writing() as session:
        session.get(RecipientChannel, channel_id).active = False
    _tick(database, settings)
    row = _webhook(database)
    assert (row.state, row.last_error) == ("dead", "the recipient's channel was removed or turned off")
    assert receiver.requests == []


def test_email_reaches_a_real_smtp_server_without_names(database, settings, smtp_server):
    controller, messages = smtp_server
    settings = replace(settings, smtp_host=controller.hostname, smtp_port=controller.port,
                       smtp_from="reminders@careplan.example.org")
    service.create(database, resource=patient(id="pt0"), by_server=True)
    [reminder_id] = add_reminders(database, 1)
    channel_id = add_channel(database, channel="email", address="coordinator@example.org", secret=None)

    _tick(database, settings)

    [envelope] = messages
    assert envelope.mail_from == "reminders@careplan.example.org"
    assert envelope.rcpt_tos == ["coordinator@example.org"]
    message = message_from_bytes(envelope.content, policy=policy.default)
    key = f"reminder-{reminder_id}-email-{channel_id}"
    assert message["Message-ID"] == f"<{key}@careplan>"
    assert message["Subject"]
    body = message.get_content()
    assert key in body and "Patient/pt0" in body
    for name in ("Ångström", "Zoë", "Léa", "MRN-1001"):
        assert name not in body and name not in message["Subject"]
    assert deliveries(database, channel="email")[0].state == "delivered"


def test_email_server_down_is_retried(database, settings):
    settings = replace(settings, smtp_host="127.0.0.1", smtp_port=free_port())
    add_reminders(database, 1)
    add_channel(database, channel="email", address="coordinator@example.org", secret=None)
    _tick(database, settings)
    [row] = deliveries(database, channel="email")
    assert row.state == "pending" and row.last_error.startswith("SMTP failed")


def test_email_without_smtp_settings_waits_for_them(database, settings):
    add_reminders(database, 1)
    add_channel(database, channel="email", address="coordinator@example.org", secret=None)
    _tick(database, replace(settings, smtp_host=None))
    [row] = deliveries(database, channel="email")
    assert row.state == "pending" and "CAREPLAN_SMTP_HOST" in row.last_error


@pytest.mark.parametrize("attempts, bound", [(0, 30), (1, 60), (3, 240), (7, 3600), (40, 3600)])
def test_backoff_is_full_jitter_under_a_cap(attempts, bound):
    assert dispatch.backoff_seconds(attempts, base=30, cap=3600, rand=lambda: 1.0) == bound
    assert dispatch.backoff_seconds(attempts, base=30, cap=3600, rand=lambda: 0.0) == 0
    assert 0 <= dispatch.backoff_seconds(attempts, base=30, cap=3600) <= bound
