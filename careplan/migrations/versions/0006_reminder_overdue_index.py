"""reminder overdue index: the digest finds recipients with sent, not-done reminders without reading history

Revision ID: 0006_reminder_overdue
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa

revision = "0006_reminder_overdue"
down_revision = "0005"
branch_labels = None
depends_on = None

WHERE = "state = 'sent' AND done_at IS NULL AND kind <> 'digest'"


def upgrade() -> None:
    op.create_index("ix_reminder_overdue", "reminder", ["recipient", "kind"],
                    postgresql_where=sa.text(WHERE), sqlite_where=sa.text(WHERE))


def downgrade() -> None:
    op.drop_index("ix_reminder_overdue", table_name="reminder")
