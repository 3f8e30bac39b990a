"""reminders: reminder rows, the delivery outbox, recipient channels and preferences

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BigPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSONDocument = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _time(name: str, *, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "reminder",
        sa.Column("id", BigPK, autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("recipient", sa.String(length=200), nullable=False),
        sa.Column("patient", sa.String(length=100), nullable=True),
        sa.Column("tier", sa.String(length=20), nullable=True),
        _time("due_at"),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("lease_holder", sa.String(length=100), nullable=True),
        _time("lease_expires_at", nullable=True),
        _time("done_at", nullable=True),
        sa.Column("payload", JSONDocument, nullable=False),
        _time("created_at"),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reminder")),
        sa.UniqueConstraint("key", name=op.f("uq_reminder_key")),
    )
    op.create_table(
        "recipient_channel",
        sa.Column("id", BigPK, autoincrement=True, nullable=False),
        sa.Column("recipient", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("address", sa.String(length=500), nullable=False),
        sa.Column("secret", sa.String(length=200), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        _time("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recipient_channel")),
        sa.UniqueConstraint("recipient", "channel", "address", name="uq_recipient_channel_address"),
    )
    op.create_table(
        "delivery",
        sa.Column("id", BigPK, autoincrement=True, nullable=False),
        sa.Column("reminder_id", BigPK, nullable=True),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("channel_id", BigPK, nullable=True),
        sa.Column("recipient", sa.String(length=200), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _time("next_attempt_at"),
        _time("first_attempt_at", nullable=True),
        sa.Column("lease_holder", sa.String(length=100), nullable=True),
        _time("lease_expires_at", nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        _time("delivered_at", nullable=True),
        sa.Column("payload", JSONDocument, nullable=False),
        _time("created_at"),
        sa.ForeignKeyConstraint(["reminder_id"], ["reminder.id"], name=op.f("fk_delivery_reminder_id_reminder"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["channel_id"], ["recipient_channel.id"],
                                name=op.f("fk_delivery_channel_id_recipient_channel"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_delivery_idempotency_key")),
    )
    op.create_table(
        "recipient_preference",
        sa.Column("recipient", sa.String(length=200), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("quiet_start", sa.String(length=5), nullable=True),
        sa.Column("quiet_end", sa.String(length=5), nullable=True),
        sa.Column("digest_time", sa.String(length=5), nullable=False),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("recipient", name=op.f("pk_recipient_preference")),
    )
    with op.batch_alter_table("reminder") as batch_op:
        batch_op.create_index("ix_reminder_source", ["source"])
        batch_op.create_index("ix_reminder_recipient", ["recipient"])
    with op.batch_alter_table("delivery") as batch_op:
        batch_op.create_index("ix_delivery_reminder_id", ["reminder_id"])
    with op.batch_alter_table("recipient_channel") as batch_op:
        batch_op.create_index("ix_recipient_channel_recipient", ["recipient"])
    # The due scans read only open rows; on PostgreSQL a partial index keeps them small while sent rows pile up.
    if postgres:
        op.create_index("ix_reminder_due", "reminder", ["due_at"],
                        postgresql_where=sa.text("state IN ('scheduled', 'claimed')"))
        op.create_index("ix_delivery_due", "delivery", ["next_attempt_at"],
                        postgresql_where=sa.text("state IN ('pending', 'claimed')"))
    else:
        with op.batch_alter_table("reminder") as batch_op:
            batch_op.create_index("ix_reminder_state_due_at", ["state", "due_at"])
        with op.batch_alter_table("delivery") as batch_op:
            batch_op.create_index("ix_delivery_state_next_attempt_at", ["state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("delivery")
    op.drop_table("recipient_preference")
    op.drop_table("recipient_channel")
    op.drop_table("reminder")
