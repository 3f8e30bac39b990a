"""authentication: OAuth clients, token signing keys, used client assertions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 12:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('oauth_client',
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=32), nullable=False),
    sa.Column('organization', sa.String(length=100), nullable=True),
    sa.Column('scopes', sa.Text(), nullable=False),
    sa.Column('grant_types', sa.String(length=200), nullable=False),
    sa.Column('secret_hash', sa.Text(), nullable=True),
    sa.Column('jwks', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('client_id', name=op.f('pk_oauth_client'))
    )
    op.create_table('oauth_signing_key',
    sa.Column('kid', sa.String(length=64), nullable=False),
    sa.Column('algorithm', sa.String(length=16), nullable=False),
    sa.Column('private_key', sa.Text(), nullable=True),
    sa.Column('public_jwk', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('rotated_out_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('retire_after', sa.DateTime(timezone=True), nullable=True),
    sa.Column('retired_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('kid', name=op.f('pk_oauth_signing_key'))
    )
    with op.batch_alter_table('oauth_signing_key', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oauth_signing_key_created_at'), ['created_at'], unique=False)

    op.create_table('oauth_used_assertion',
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('jti', sa.String(length=255), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('client_id', 'jti', name=op.f('pk_oauth_used_assertion'))
    )
    with op.batch_alter_table('oauth_used_assertion', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oauth_used_assertion_expires_at'), ['expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('oauth_used_assertion', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_oauth_used_assertion_expires_at'))
    op.drop_table('oauth_used_assertion')
    with op.batch_alter_table('oauth_signing_key', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_oauth_signing_key_created_at'))
    op.drop_table('oauth_signing_key')
    op.drop_table('oauth_client')
