"""Send outbox deliveries: claim under a lease, send outside the claim transaction, record while the lease holds."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update

from careplan.config import Settings
from careplan.db import Database
from careplan.models import utcnow
from careplan.reminders.models import DELIVERY_OPEN, Delivery, RecipientChannel, Reminder
from scheduler.channels import Channel, DeliveryFailed, Outgoing, PermanentFailure, Skipped

log = logging.getLogger(__name__)

SEND_THREADS = 8  # webhook and e-mail sends wait on the network; a few run at once
LEASE_MARGIN = 0.8  # stop starting sends once this share of the lease has passed: the rest goes to the next holder


def claim_deliveries(db: Database, *, holder: str, now: datetime, limit: int, lease: timedelta) -> list[Outgoing]:
    """Claim up to limit deliveries whose next attempt is due (or whose lease expired), with what sending needs."""
    due = (
        select(Delivery.id)
        .where(Delivery.state.in_(DELIVERY_OPEN), Delivery.next_attempt_at <= now,
               or_(Delivery.state == "pending", Delivery.lease_expires_at < now))
        .order_by(Delivery.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    statement = (
        update(Delivery)
        .where(Delivery.id.in_(due.scalar_subquery()))
        .values(state="claimed", lease_holder=holder, lease_expires_at=now + lease)
        .returning(Delivery.id, Delivery.channel, Delivery.channel_id, Delivery.recipient, Delivery.idempotency_key,
                   Delivery.payload, Delivery.attempts, Delivery.first_attempt_at, Delivery.reminder_id,
                   Delivery.next_attempt_at)
    )
    with db.writing() as session:
        rows = session.execute(statement).all()
        channel_ids = {row.channel_id for row in rows if row.channel_id is not None}
        reminder_ids = {row.reminder_id for row in rows if row.reminder_id is not None}
        channels = {c.id: c for c in session.scalars(
            select(RecipientChannel).where(RecipientChannel.id.in_(sorted(channel_ids))))} if channel_ids else {}
        reminders = {r.id: r for r in session.execute(
            select(Reminder.id, Reminder.kind, Reminder.source, Reminder.patient, Reminder.tier, Reminder.due_at)
            .where(Reminder.id.in_(sorted(reminder_ids))))} if reminder_ids else {}
    claimed = []
    for row in sorted(rows, key=lambda r: (r.next_attempt_at, r.id)):
        channel = channels.get(row.channel_id)
        reminder = reminders.get(row.reminder_id)
        claimed.append(Outgoing(
            id=row.id, channel=row.channel, recipient=row.recipient, idempotency_key=row.idempotency_key,
            payload=row.payload or {}, attempts=row.attempts, first_attempt_at=row.first_attempt_at,
            address=channel.address if channel is not None else None,
            secret=channel.secret if channel is not None else None,
            reminder_id=row.reminder_id,
            kind=reminder.kind if reminder else None, source=reminder.source if reminder else None,
            patient=reminder.patient if reminder else None, tier=reminder.tier if reminder else None,
            due_at=reminder.due_at if reminder else None,
            extra={"channel_active": channel is not None and channel.active},
        ))
    return claimed


@dataclass
class Outcome:
    """The result of one send: error is None on success; permanent errors are not retried."""

    delivery: Outgoing
    error: str | None = None
    permanent: bool = False
    skipped: bool = False  # not attempted: the lease ran short, the next holder sends it


@dataclass
class Dispatched:
    """What one dispatch batch did."""

    claimed: int = 0
    delivered: int = 0
    retrying: int = 0
    dead: int = 0
    lost: int = 0  # results not recorded because another worker holds the lease now
    skipped: int = 0


def send_all(deliveries: Sequence[Outgoing], channels: Mapping[str, Channel], *, lease: timedelta,
             threads: int = SEND_THREADS) -> list[Outcome]:
    """Send each delivery through its channel until the lease runs short: network sends a few at a time, and the
    deliveries of a channel that writes to the database (the inbox) together in one transaction."""
    deadline = time.monotonic() + lease.total_seconds() * LEASE_MARGIN
    outcomes: dict[int, Outcome] = {}
    batched: dict[str, list[Outgoing]] = {}
    single: list[Outgoing] = []
    for delivery in deliveries:
        problem = _unsendable(delivery, channels)
        if problem is not None:
            outcomes[delivery.id] = problem
        elif hasattr(channels[delivery.channel], "send_batch"):
            batched.setdefault(delivery.channel, []).append(delivery)
        else:
            single.append(delivery)

    def one(delivery: Outgoing) -> Outcome:
        if time.monotonic() > deadline:
            return Outcome(delivery, skipped=True)
        return send_one(delivery, channels)

    def group(name: str, members: list[Outgoing]) -> list[Outcome]:
        try:
            errors = channels[name].send_batch(members, deadline=deadline)
        except Exception as exc:  # noqa: BLE001 - the whole group failed (e.g. its transaction): retry them all
            errors = [exc] * len(members)
        return [_outcome(d, e) for d, e in zip(members, errors)]

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(single) + len(batched))),
                            thread_name_prefix="careplan-send") as pool:
        groups = [pool.submit(group, name, members) for name, members in batched.items()]
        for outcome in pool.map(one, single):
            outcomes[outcome.delivery.id] = outcome
        for future in groups:
            for outcome in future.result():
                outcomes[outcome.delivery.id] = outcome
    return [outcomes[d.id] for d in deliveries]


def _unsendable(delivery: Outgoing, channels: Mapping[str, Channel]) -> Outcome | None:
    if channels.get(delivery.channel) is None:
        return Outcome(delivery, error=f"no {delivery.channel} channel is configured", permanent=True)
    if delivery.channel != "inbox" and not delivery.extra.get("channel_active", False):
        return Outcome(delivery, error="the recipient's channel was removed or turned off", permanent=True)
    return None


def send_one(delivery: Outgoing, channels: Mapping[str, Channel]) -> Outcome:
    """Send one delivery and describe the outcome without patient data."""
    problem = _unsendable(delivery, channels)
    if problem is not None:
        return problem
    try:
        channels[delivery.channel].send(delivery)
    except Exception as exc:  # noqa: BLE001 - a channel bug fails this delivery, not the batch
        return _outcome(delivery, exc)
    return Outcome(delivery)


def _outcome(delivery: Outgoing, error: BaseException | None) -> Outcome:
    if error is None:
        return Outcome(delivery)
    if isinstance(error, Skipped):
        return Outcome(delivery, skipped=True)
    if isinstance(error, PermanentFailure):
        return Outcome(delivery, error=str(error)[:500], permanent=True)
    if isinstance(error, DeliveryFailed):
        return Outcome(delivery, error=str(error)[:500])
    # The type only: the message of an unexpected error may quote the payload.
    log.warning("delivery %s on %s failed: %s", delivery.id, delivery.channel, type(error).__name__)
    return Outcome(delivery, error=f"unexpected error: {type(error).__name__}")


def backoff_seconds(attempts: int, *, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Return the wait before the next try: full jitter, random(0, min(cap, base * 2**attempts))."""
    return min(cap, base * (2 ** min(attempts, 62))) * rand()


def record(db: Database, outcomes: Sequence[Outcome], *, holder: str, now: datetime, settings: Settings,
           rand: Callable[[], float] = random.random) -> Dispatched:
    """Write each outcome, but only where holder still holds the delivery's lease (fencing)."""
    result = Dispatched(claimed=len(outcomes))
    window = timedelta(hours=settings.delivery_retry_hours)
    delivered = [o.delivery.id for o in outcomes if not o.skipped and o.error is None]
    skipped = [o.delivery.id for o in outcomes if o.skipped]
    failed = [o for o in outcomes if not o.skipped and o.error is not None]
    with db.writing() as session:
        if delivered:
            done = session.scalars(_fenced(delivered, holder).values(
                state="delivered", delivered_at=now, attempts=Delivery.attempts + 1, last_error=None,
                first_attempt_at=func.coalesce(Delivery.first_attempt_at, now), lease_expires_at=None))
            result.delivered = len(done.all())
            result.lost += len(delivered) - result.delivered
        if skipped:
            # Hand them back now rather than at lease expiry.
            session.execute(_fenced(skipped, holder).values(state="pending", lease_expires_at=None))
            result.skipped = len(skipped)
        for outcome in failed:
            delivery = outcome.delivery
            first = delivery.first_attempt_at or now
            values: dict = {"attempts": Delivery.attempts + 1, "first_attempt_at": first, "lease_expires_at": None,
                            "last_error": outcome.error[:500]}
            if outcome.permanent or now >= first + window:
                values["state"] = "dead"
            else:
                wait = timedelta(seconds=backoff_seconds(delivery.attempts, base=settings.delivery_backoff_base_seconds,
                                                         cap=settings.delivery_backoff_cap_seconds, rand=rand))
                # The last try falls at the end of the window, so a long outage still gets one more chance.
                values.update(state="pending", next_attempt_at=min(now + wait, first + window))
            if session.scalars(_fenced([delivery.id], holder).values(**values)).first() is None:
                result.lost += 1
            elif values["state"] == "dead":
                result.dead += 1
                log.warning("delivery %s on %s is dead after %d attempts: %s", delivery.id, delivery.channel,
                            delivery.attempts + 1, outcome.error)
            else:
                result.retrying += 1
    return result


def _fenced(ids: list[int], holder: str):
    """Return an UPDATE of the deliveries among ids that holder still holds, returning their ids."""
    return (update(Delivery)
            .where(Delivery.id.in_(ids), Delivery.state == "claimed", Delivery.lease_holder == holder)
            .returning(Delivery.id)
            .execution_options(synchronize_session=False))


def dispatch(db: Database, *, holder: str, channels: Mapping[str, Channel], settings: Settings,
             now: datetime | None = None, limit: int | None = None) -> Dispatched:
    """Claim one batch of due deliveries, send them and record the results."""
    lease = timedelta(seconds=settings.reminder_lease_seconds)
    deliveries = claim_deliveries(db, holder=holder, now=now or utcnow(), limit=limit or settings.scheduler_batch_size,
                                  lease=lease)
    if not deliveries:
        return Dispatched()
    outcomes = send_all(deliveries, channels, lease=lease)
    return record(db, outcomes, holder=holder, now=now or utcnow(), settings=settings)
