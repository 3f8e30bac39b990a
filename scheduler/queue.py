"""The reminder queue is the database: claim due reminders under a lease, then expand them into outbox deliveries."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from careplan.db import Database
from careplan.reminders.models import REMINDER_OPEN, Delivery, RecipientChannel, Reminder

log = logging.getLogger(__name__)

Render = Callable[[Session, Reminder], dict]


def default_holder() -> str:
    """Return a lease holder name unique to this process (host, pid and a random suffix)."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def claim_due(db: Database, *, holder: str, now: datetime, limit: int, lease: timedelta) -> list[Reminder]:
    """Claim up to limit due reminders (and ones whose lease expired) for holder until now + lease.

    PostgreSQL: ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``, so concurrent workers take
    disjoint rows without waiting; SQLite runs the same statement under its single write lock (BEGIN IMMEDIATE).
    """
    due = (
        select(Reminder.id)
        .where(Reminder.state.in_(REMINDER_OPEN), Reminder.due_at <= now,
               or_(Reminder.state == "scheduled", Reminder.lease_expires_at < now))
        .order_by(Reminder.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    statement = (
        update(Reminder)
        .where(Reminder.id.in_(due.scalar_subquery()))
        .values(state="claimed", lease_holder=holder, lease_expires_at=now + lease, updated_at=now)
        .returning(Reminder)
        .execution_options(synchronize_session=False)
    )
    with db.writing() as session:
        claimed = list(session.scalars(statement))
    claimed.sort(key=lambda reminder: (reminder.due_at, reminder.id))
    return claimed


@dataclass
class Expanded:
    """What expand did: reminders marked sent, deliveries written, leases found lost, reminders that failed."""

    sent: int = 0
    deliveries: int = 0
    lost: int = 0
    failed: int = 0


def expand(db: Database, *, reminders: Sequence[Reminder], holder: str, now: datetime,
           render: Render | None = None) -> Expanded:
    """Turn claimed reminders into delivery rows (inbox, plus the recipient's active channels) and mark them sent.

    Only reminders whose lease holder still holds are marked sent; deliveries are inserted if absent (their
    idempotency key is unique), so a reminder expanded twice after a lost lease still has one delivery per channel.
    """
    if not reminders:
        return Expanded()
    render = render or default_render()
    ids = [reminder.id for reminder in reminders]
    try:
        # The common case in few round trips: no savepoint per reminder.
        return _expand(db, ids, holder=holder, now=now, render=render, isolate=False)
    except _Retry:
        return _expand(db, ids, holder=holder, now=now, render=render, isolate=True)


class _Retry(Exception):
    """A render failed inside the database: run the batch again with a savepoint per reminder."""


def _expand(db: Database, ids: list[int], *, holder: str, now: datetime, render: Render, isolate: bool) -> Expanded:
    result = Expanded()
    with db.writing() as session:
        rows = {r.id: r for r in session.scalars(
            select(Reminder).where(Reminder.id.in_(ids), Reminder.state == "claimed",
                                   Reminder.lease_holder == holder))}
        result.lost = len(ids) - len(rows)
        channels = _active_channels(session, {r.recipient for r in rows.values()})
        render = _per_batch(render)
        payloads: dict[int, dict] = {}
        for reminder_id, reminder in rows.items():
            try:
                if isolate:
                    with session.begin_nested():
                        payloads[reminder_id] = render(session, reminder)
                else:
                    payloads[reminder_id] = render(session, reminder)
            except DBAPIError as exc:
                if not isolate:
                    raise _Retry() from exc  # the transaction may be unusable now
                result.failed += 1
                log.warning("reminder %s could not be rendered: %s", reminder_id, type(exc).__name__)
            except Exception as exc:  # noqa: BLE001 - one bad reminder must not hold back the rest
                # Left claimed: the lease expires and a later tick tries again. No patient data in the log.
                result.failed += 1
                log.warning("reminder %s could not be rendered: %s", reminder_id, type(exc).__name__)
        if not payloads:
            return result
        # Fencing: only rows still held by holder become sent; the rest belong to whoever re-claimed them.
        sent_ids = set(session.scalars(
            update(Reminder)
            .where(Reminder.id.in_(list(payloads)), Reminder.state == "claimed", Reminder.lease_holder == holder)
            .values(state="sent", lease_expires_at=None, updated_at=now)
            .returning(Reminder.id)
            .execution_options(synchronize_session=False)))
        result.lost += len(payloads) - len(sent_ids)
        _schedule_successors(session, [rows[i] for i in sorted(sent_ids)], now=now)
        deliveries = []
        for reminder_id in sorted(sent_ids):
            reminder = rows[reminder_id]
            deliveries.append(_delivery_row(reminder, "inbox", None, payloads[reminder_id], now))
            for channel in channels.get(reminder.recipient, ()):
                deliveries.append(_delivery_row(reminder, channel.channel, channel.id, payloads[reminder_id], now))
        result.deliveries = insert_if_absent(session, deliveries)
        result.sent = len(sent_ids)
    return result


def _schedule_successors(session: Session, sent: list[Reminder], *, now: datetime) -> None:
    # In the transaction that marks them sent, so a successor is never lost nor made twice; a failure here costs
    # only the successor (the plan's next write schedules it), never the reminders going out.
    from careplan.reminders.rules import SUCCESSOR_KINDS, after_sent

    if not any(reminder.kind in SUCCESSOR_KINDS for reminder in sent):
        return  # the common batch: no savepoint
    try:
        with session.begin_nested():
            after_sent(session, reminders=sent, now=now)
    except Exception as exc:  # noqa: BLE001 - logged without patient data
        log.warning("successors of %d sent reminders not scheduled: %s", len(sent), type(exc).__name__)


def delivery_key(reminder_id: int, channel: str, channel_id: int | None) -> str:
    """Return the idempotency key of a reminder's delivery on one channel (one address)."""
    suffix = "" if channel_id is None else f"-{channel_id}"
    return f"reminder-{reminder_id}-{channel}{suffix}"


def _delivery_row(reminder: Reminder, channel: str, channel_id: int | None, payload: dict, now: datetime) -> dict:
    return {
        "reminder_id": reminder.id,
        "channel": channel,
        "channel_id": channel_id,
        "recipient": reminder.recipient,
        "idempotency_key": delivery_key(reminder.id, channel, channel_id),
        "state": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "payload": payload,
        "created_at": now,
    }


def insert_if_absent(session: Session, rows: list[dict]) -> int:
    """Insert delivery rows, skipping any whose idempotency key exists; return how many were new."""
    if not rows:
        return 0
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    # An executemany: SQLAlchemy's "insertmanyvalues" sends multi-row batches (round trips, not rows, are what a
    # busy database charges for) from one cached statement; a .values(rows) statement was compiled anew per batch,
    # which cost more than the insert itself.
    statement = (insert(Delivery.__table__).on_conflict_do_nothing(index_elements=["idempotency_key"])
                 .returning(Delivery.__table__.c.id))
    return len(session.execute(statement, rows).all())


def _active_channels(session: Session, recipients: set[str]) -> dict[str, list[RecipientChannel]]:
    channels: dict[str, list[RecipientChannel]] = {}
    if not recipients:
        return channels
    for channel in session.scalars(select(RecipientChannel)
                                   .where(RecipientChannel.recipient.in_(sorted(recipients)),
                                          RecipientChannel.active.is_(True))
                                   .order_by(RecipientChannel.id)):
        channels.setdefault(channel.recipient, []).append(channel)
    return channels


def _per_batch(render: Render) -> Render:
    # The rules' renderer looks up each recipient's time zone and each practice once per batch, not per reminder.
    from careplan.reminders import messages

    return messages.BatchRenderer() if render is messages.render else render


def default_render() -> Render:
    """Return the reminder rules' renderer (careplan.reminders.messages.render)."""
    from careplan.reminders.messages import render

    return render


def basic_render(session: Session, reminder: Reminder) -> dict:
    """Render a reminder without the rules' templates: kind, due time and links, never a name."""
    description = (reminder.payload or {}).get("description") if isinstance(reminder.payload, dict) else None
    text = description or f"A {reminder.kind} reminder is due."
    return {
        "subject": f"careplan: {reminder.kind} due {reminder.due_at:%Y-%m-%d %H:%M} UTC",
        "text": str(text),
        "data": {"kind": reminder.kind, "source": reminder.source, "tier": reminder.tier,
                 "due_at": reminder.due_at.isoformat()},
    }
