"""Dead-lettered deliveries: list them for operators and put them back in the queue."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select, update

from careplan.db import Database
from careplan.models import utcnow
from careplan.reminders.models import Delivery


def list_dead(db: Database, *, limit: int = 100, offset: int = 0) -> list[Delivery]:
    """Return dead deliveries, newest first."""
    with db.reading() as session:
        rows = list(session.scalars(select(Delivery).where(Delivery.state == "dead")
                                    .order_by(Delivery.id.desc()).limit(limit).offset(offset)))
        session.expunge_all()  # detached but loaded: the read transaction's rollback must not expire them
        return rows


def count_dead(db: Database) -> int:
    """Return how many deliveries are dead."""
    from sqlalchemy import func

    with db.reading() as session:
        return session.scalar(select(func.count()).select_from(Delivery).where(Delivery.state == "dead")) or 0


def requeue(db: Database, *, ids: Iterable[int] | None, now: datetime | None = None) -> int:
    """Put dead deliveries back to pending with a fresh retry window (ids=None: every dead one); return the count."""
    statement = (update(Delivery).where(Delivery.state == "dead")
                 .values(state="pending", attempts=0, next_attempt_at=now or utcnow(), first_attempt_at=None,
                         lease_holder=None, lease_expires_at=None)
                 .execution_options(synchronize_session=False))
    if ids is not None:
        wanted = sorted({int(i) for i in ids})
        if not wanted:
            return 0
        statement = statement.where(Delivery.id.in_(wanted))
    with db.writing() as session:
        return session.execute(statement).rowcount
