"""The safe horizon for incremental sync: every version stamped before it is already committed.

A write's lastUpdated is fixed when its transaction starts writing, but it only becomes visible at commit. A client
that polled "everything since T" and then asked from the time of its poll would miss a slow transaction that was
stamped before the poll and committed after it. Polls therefore hand back the horizon, not the wall clock, as the
point to continue from (Bundle.meta.lastUpdated): no open transaction was stamped before it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import text
from sqlalchemy.orm import Session

from careplan.models import utcnow

# PostgreSQL stamps versions with now() (the transaction start), so the oldest open transaction bounds the horizon.
_OLDEST_OPEN_TRANSACTION = text(
    """
    SELECT coalesce(min(xact_start), clock_timestamp())
      FROM pg_stat_activity
     WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
    """
)
TICK = timedelta(microseconds=1)


def horizon(session: Session) -> datetime:
    """Return the instant before which every write is committed; call it before reading the changes."""
    if session.get_bind().dialect.name == "postgresql":
        return session.execute(_OLDEST_OPEN_TRANSACTION).scalar_one().astimezone(timezone.utc) - TICK
    # SQLite: the caller holds the write lock (Database.polling), so no write is in flight.
    return utcnow() - TICK
