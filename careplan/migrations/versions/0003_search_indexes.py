"""search indexes: prefix string matching on any PostgreSQL collation, type-ordered resource scans

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 10:00:00.000000
"""
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A search without criteria (or one sorted by creation) walks one type in pk order.
    with op.batch_alter_table('resource', schema=None) as batch_op:
        batch_op.create_index('ix_resource_type_pk', ['res_type', 'pk'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        # LIKE 'prefix%' only uses a B-tree index in the C collation, or with text_pattern_ops in any other.
        op.drop_index('ix_search_string_lookup', table_name='search_string')
        op.create_index('ix_search_string_lookup', 'search_string', ['res_type', 'param', 'normalized'],
                        unique=False, postgresql_ops={'normalized': 'text_pattern_ops'})


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.drop_index('ix_search_string_lookup', table_name='search_string')
        op.create_index('ix_search_string_lookup', 'search_string', ['res_type', 'param', 'normalized'],
                        unique=False)
    with op.batch_alter_table('resource', schema=None) as batch_op:
        batch_op.drop_index('ix_resource_type_pk')
