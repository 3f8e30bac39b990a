"""Tables of the reminder domain: reminders, their delivery outbox, and each recipient's channels and preferences."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from careplan.models import Base, BigPK, JSONDocument, UTCDateTime, utcnow

REMINDER_STATES = ("scheduled", "claimed", "sent", "cancelled")
REMINDER_OPEN = ("scheduled", "claimed")
DELIVERY_STATES = ("pending", "claimed", "delivered", "dead")
DELIVERY_OPEN = ("pending", "claimed")
CHANNELS = ("inbox", "webhook", "email")
EXTERNAL_CHANNELS = ("webhook", "email")
OVERDUE_WHERE = "state = 'sent' AND done_at IS NULL AND kind <> 'digest'"


class Reminder(Base):
    """One follow-up that falls due at a moment; ``key`` is deterministic so producers upsert instead of duplicating."""

    __tablename__ = "reminder"

    id: Mapped[int] = mapped_column(BigPK, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(300), unique=True)
    kind: Mapped[str] = mapped_column(String(40))
    source: Mapped[str] = mapped_column(String(200), index=True)
    recipient: Mapped[str] = mapped_column(String(200), index=True)
    patient: Mapped[str | None] = mapped_column(String(100), nullable=True)
    tier: Mapped[str | None] = mapped_column(String(20), nullable=True)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    state: Mapped[str] = mapped_column(String(20), default="scheduled")
    lease_holder: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    payload: Mapped[dict] = mapped_column(JSONDocument, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    # The due scan: PostgreSQL indexes only open rows (sent ones pile up forever); SQLite gets a composite index.
    __table_args__ = (
        Index("ix_reminder_due", "due_at",
              postgresql_where=text("state IN ('scheduled', 'claimed')")).ddl_if(dialect="postgresql"),
        Index("ix_reminder_state_due_at", "state", "due_at").ddl_if(dialect="sqlite"),
        # The digest's recipients with overdue items: sent, not done, not a digest. Done history stays out of it.
        Index("ix_reminder_overdue", "recipient", "kind",
              postgresql_where=text(OVERDUE_WHERE), sqlite_where=text(OVERDUE_WHERE)),
    )


class Delivery(Base):
    """One message of a reminder on one channel (the outbox); ``idempotency_key`` makes every send repeatable."""

    __tablename__ = "delivery"

    id: Mapped[int] = mapped_column(BigPK, primary_key=True, autoincrement=True)
    reminder_id: Mapped[int | None] = mapped_column(ForeignKey("reminder.id", ondelete="SET NULL"), nullable=True,
                                                    index=True)
    channel: Mapped[str] = mapped_column(String(20))
    # The recipient_channel row (address and secret are read at send time, so a rotated secret applies).
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("recipient_channel.id", ondelete="SET NULL"),
                                                   nullable=True)
    recipient: Mapped[str] = mapped_column(String(200))
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    state: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Start of the retry window; reset by a requeue.
    first_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lease_holder: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    payload: Mapped[dict] = mapped_column(JSONDocument, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        Index("ix_delivery_due", "next_attempt_at",
              postgresql_where=text("state IN ('pending', 'claimed')")).ddl_if(dialect="postgresql"),
        Index("ix_delivery_state_next_attempt_at", "state", "next_attempt_at").ddl_if(dialect="sqlite"),
    )


class RecipientChannel(Base):
    """An external address (webhook URL or e-mail) where a recipient wants its reminders."""

    __tablename__ = "recipient_channel"

    id: Mapped[int] = mapped_column(BigPK, primary_key=True, autoincrement=True)
    recipient: Mapped[str] = mapped_column(String(200), index=True)
    channel: Mapped[str] = mapped_column(String(20))
    address: Mapped[str] = mapped_column(String(500))
    secret: Mapped[str | None] = mapped_column(String(200), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (UniqueConstraint("recipient", "channel", "address", name="uq_recipient_channel_address"),)


class RecipientPreference(Base):
    """A recipient's time zone, quiet hours and digest time (local "HH:MM")."""

    __tablename__ = "recipient_preference"

    recipient: Mapped[str] = mapped_column(String(200), primary_key=True)
    timezone: Mapped[str] = mapped_column(String(64))
    quiet_start: Mapped[str | None] = mapped_column(String(5), nullable=True)
    quiet_end: Mapped[str | None] = mapped_column(String(5), nullable=True)
    digest_time: Mapped[str] = mapped_column(String(5), default="07:30")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
