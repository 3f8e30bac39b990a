"""One scheduler tick: let the rules add time-driven reminders, expand due reminders, and send due deliveries."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from careplan import config as careplan_config
from careplan.config import Settings
from careplan.db import Database
from careplan.models import utcnow
from scheduler import dispatch as dispatching
from scheduler import queue
from scheduler.channels import Channel, EmailChannel, InboxChannel, WebhookChannel

log = logging.getLogger(__name__)

MAX_BATCHES = 1000  # per tick: a tick drains what is due, but never spins forever


@dataclass
class TickSummary:
    """Counts of what one tick did."""

    claimed: int = 0
    sent: int = 0
    deliveries: int = 0
    delivered: int = 0
    retrying: int = 0
    dead: int = 0
    lost: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def line(self) -> str:
        """Return the one-line summary the CLI prints."""
        text = (f"tick: {self.claimed} reminders claimed, {self.sent} sent, {self.deliveries} deliveries queued, "
                f"{self.delivered} delivered, {self.retrying} to retry, {self.dead} dead, {self.lost} lost leases, "
                f"{self.failed} failed")
        return text + (f" ({'; '.join(self.errors)})" if self.errors else "")


def default_channels(db: Database, settings: Settings) -> dict[str, Channel]:
    """Return the three channels configured from settings."""
    return {
        "inbox": InboxChannel(db),
        "webhook": WebhookChannel(timeout=settings.webhook_timeout_seconds),
        "email": EmailChannel(host=settings.smtp_host, port=settings.smtp_port, username=settings.smtp_username,
                              password=settings.smtp_password, starttls=settings.smtp_starttls,
                              sender=settings.smtp_from, timeout=max(settings.webhook_timeout_seconds, 30.0),
                              ca_file=getattr(settings, "smtp_ca_file", None)),
    }


_default_holder = queue.default_holder()


def tick(db: Database, *, now: datetime | None = None, holder: str | None = None, settings: Settings | None = None,
         channels: Mapping[str, Channel] | None = None, render: queue.Render | None = None,
         stop: threading.Event | None = None, periodic: bool = True) -> TickSummary:
    """Run one tick: schedule periodic reminders, claim and expand due ones, send due deliveries, until none is left.

    ``now`` fixes the clock for the whole tick (tests, catch-up checks); by default each batch reads the time.
    One failing item is logged (without patient data) and does not stop the rest. ``periodic=False`` skips the rules'
    time-driven reminders (digests), for operators and tests that only want what is queued.
    """
    settings = settings or careplan_config.from_env()
    holder = holder or _default_holder
    channels = channels if channels is not None else default_channels(db, settings)
    render = render or queue.default_render()
    lease = timedelta(seconds=settings.reminder_lease_seconds)
    limit = settings.scheduler_batch_size
    summary = TickSummary()
    if periodic:
        _schedule_periodic(db, now=now or utcnow(), summary=summary)
    for _ in range(MAX_BATCHES):
        if stop is not None and stop.is_set():
            break
        claimed = dispatched = 0
        try:
            reminders = queue.claim_due(db, holder=holder, now=now or utcnow(), limit=limit, lease=lease)
            claimed = len(reminders)
            result = queue.expand(db, reminders=reminders, holder=holder, now=now or utcnow(), render=render)
            summary.claimed += claimed
            summary.sent += result.sent
            summary.deliveries += result.deliveries
            summary.lost += result.lost
            summary.failed += result.failed
        except Exception as exc:  # noqa: BLE001 - claimed rows come back when their lease expires
            _error(summary, "reminders", exc)
        try:
            done = dispatching.dispatch(db, holder=holder, channels=channels, settings=settings, now=now, limit=limit)
            dispatched = done.claimed
            summary.delivered += done.delivered
            summary.retrying += done.retrying
            summary.dead += done.dead
            summary.lost += done.lost
        except Exception as exc:  # noqa: BLE001
            _error(summary, "deliveries", exc)
        if claimed < limit and dispatched < limit:
            break
    return summary


def _schedule_periodic(db: Database, *, now: datetime, summary: TickSummary) -> None:
    from careplan.reminders.rules import schedule_periodic

    try:
        schedule_periodic(db, now=now)
    except Exception as exc:  # noqa: BLE001 - digests failing must not stop due reminders going out
        _error(summary, "periodic reminders", exc)


def _error(summary: TickSummary, stage: str, exc: Exception) -> None:
    log.error("scheduler tick: %s failed: %s", stage, type(exc).__name__)
    summary.errors.append(f"{stage}: {type(exc).__name__}")
