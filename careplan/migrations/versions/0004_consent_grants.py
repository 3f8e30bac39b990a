"""consent grants: privacy Consent provisions flattened for SQL access checks

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "consent_grant",
        sa.Column("pk", BigPK, autoincrement=True, nullable=False),
        sa.Column("consent_pk", BigPK, nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.Column("resource_class", sa.String(length=64), nullable=True),
        sa.Column("label", sa.String(length=64), nullable=True),
        sa.Column("purpose", sa.String(length=64), nullable=True),
        sa.Column("start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("path", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(["consent_pk"], ["resource.pk"], name=op.f("fk_consent_grant_consent_pk_resource"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_consent_grant")),
    )
    with op.batch_alter_table("consent_grant") as batch_op:
        batch_op.create_index("ix_consent_grant_consent_pk", ["consent_pk"])
        batch_op.create_index("ix_consent_grant_lookup", ["patient_id", "actor", "kind"])


def downgrade() -> None:
    op.drop_table("consent_grant")
