"""APScheduler as a clock only: one interval job per process that runs a tick; the database is the queue."""

from __future__ import annotations

import logging
import signal
import threading
from datetime import datetime, timezone

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger

from careplan.config import Settings
from careplan.db import Database
from scheduler import worker

log = logging.getLogger(__name__)

JOB_ID = "careplan-reminders-tick"
# A late or missed run is harmless (the next tick picks up every due row), so never skip one as misfired and never
# stack them up.
JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}


def configure(scheduler: BaseScheduler, db: Database, settings: Settings, *, stop: threading.Event,
              holder: str | None = None) -> BaseScheduler:
    """Add the tick job to scheduler (memory job store: nothing about reminders lives in APScheduler)."""

    def run_tick() -> None:
        summary = worker.tick(db, settings=settings, holder=holder, stop=stop)
        if summary.claimed or summary.delivered or summary.retrying or summary.dead or summary.errors:
            log.info(summary.line())

    scheduler.add_job(run_tick, IntervalTrigger(seconds=settings.scheduler_interval_seconds), id=JOB_ID,
                      name="reminder tick", replace_existing=True,
                      next_run_time=datetime.now(timezone.utc))  # catch up at start, not one interval later
    return scheduler


def _scheduler_options() -> dict:
    return {"executors": {"default": ThreadPoolExecutor(1)}, "job_defaults": dict(JOB_DEFAULTS), "timezone": "UTC"}


def start_background(db: Database, settings: Settings, *, holder: str | None = None) -> "BackgroundClock":
    """Start the in-process clock on a daemon thread (``careplan serve``); call stop() on shutdown."""
    stop = threading.Event()
    scheduler = configure(BackgroundScheduler(**_scheduler_options()), db, settings, stop=stop, holder=holder)
    scheduler.start()
    return BackgroundClock(scheduler, stop)


class BackgroundClock:
    """A running in-process clock."""

    def __init__(self, scheduler: BackgroundScheduler, stop: threading.Event):
        self.scheduler, self.stop_event = scheduler, stop

    def stop(self, *, wait: bool = True) -> None:
        """Finish the current batch and stop."""
        self.stop_event.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=wait)


def run_blocking(db: Database, settings: Settings, *, holder: str | None = None) -> None:
    """Run the clock in this process until SIGTERM or SIGINT (``careplan scheduler``)."""
    stop = threading.Event()
    scheduler = configure(BlockingScheduler(**_scheduler_options()), db, settings, stop=stop, holder=holder)

    def finish(signum, _frame) -> None:
        log.info("scheduler stopping (signal %s)", signum)
        stop.set()  # the running tick stops after its current batch
        scheduler.shutdown(wait=False)

    previous = {sig: signal.signal(sig, finish) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        scheduler.start()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
