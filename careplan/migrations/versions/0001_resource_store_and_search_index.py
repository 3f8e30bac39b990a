"""resource store and search index

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 02:18:01.304010
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('resource',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('last_updated', sa.DateTime(timezone=True), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('content', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_resource')),
    sa.UniqueConstraint('res_type', 'res_id', name='uq_resource_type_id')
    )
    with op.batch_alter_table('resource', schema=None) as batch_op:
        batch_op.create_index('ix_resource_last_updated', ['last_updated'], unique=False)
        batch_op.create_index('ix_resource_type_last_updated', ['res_type', 'last_updated'], unique=False)

    op.create_table('resource_version',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('resource_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('last_updated', sa.DateTime(timezone=True), nullable=False),
    sa.Column('method', sa.String(length=8), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('content', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.ForeignKeyConstraint(['resource_pk'], ['resource.pk'], name=op.f('fk_resource_version_resource_pk_resource')),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_resource_version')),
    sa.UniqueConstraint('resource_pk', 'version_id', name='uq_resource_version_resource_version')
    )
    with op.batch_alter_table('resource_version', schema=None) as batch_op:
        batch_op.create_index('ix_resource_version_last_updated', ['last_updated'], unique=False)
        batch_op.create_index('ix_resource_version_type_last_updated', ['res_type', 'last_updated'], unique=False)

    op.create_table('search_date',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('resource_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('low', sa.DateTime(timezone=True), nullable=False),
    sa.Column('high', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['resource_pk'], ['resource.pk'], name=op.f('fk_search_date_resource_pk_resource'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_search_date'))
    )
    with op.batch_alter_table('search_date', schema=None) as batch_op:
        batch_op.create_index('ix_search_date_high', ['res_type', 'param', 'high'], unique=False)
        batch_op.create_index('ix_search_date_low', ['res_type', 'param', 'low'], unique=False)
        batch_op.create_index(batch_op.f('ix_search_date_resource_pk'), ['resource_pk'], unique=False)

    op.create_table('search_number',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('resource_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('value', sa.Numeric(), nullable=False),
    sa.ForeignKeyConstraint(['resource_pk'], ['resource.pk'], name=op.f('fk_search_number_resource_pk_resource'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_search_number'))
    )
    with op.batch_alter_table('search_number', schema=None) as batch_op:
        batch_op.create_index('ix_search_number_lookup', ['res_type', 'param', 'value'], unique=False)
        batch_op.create_index(batch_op.f('ix_search_number_resource_pk'), ['resource_pk'], unique=False)

    op.create_table('search_quantity',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('resource_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('value', sa.Numeric(), nullable=False),
    sa.Column('system', sa.Text(), nullable=True),
    sa.Column('code', sa.Text(), nullable=True),
    sa.Column('unit', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['resource_pk'], ['resource.pk'], name=op.f('fk_search_quantity_resource_pk_resource'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_search_quantity'))
    )
    with op.batch_alter_table('search_quantity', schema=None) as batch_op:
        batch_op.create_index('ix_search_quantity_lookup', ['res_type', 'param', 'value'], unique=False)
        batch_op.create_index(batch_op.f('ix_search_quantity_resource_pk'), ['resource_pk'], unique=False)

    op.create_table('search_reference',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('resource_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('target_type', sa.String(length=64), nullable=True),
    sa.Column('target_id', sa.String(length=64), nullable=True),
    sa.Column('url', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['resource_pk'], ['resource.pk'], name=op.f('fk_search_reference_resource_pk_resource'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_search_reference'))
    )
    with op.batch_alter_table('search_reference', schema=None) as batch_op:
        batch_op.create_index('ix_search_reference_lookup', ['res_type', 'param', 'target_id', 'target_type'], unique=False)
        batch_op.create_index(batch_op.f('ix_search_reference_resource_pk'), ['resource_pk'], unique=False)
        batch_op.create_index('ix_search_reference_target', ['target_type', 'target_id'], unique=False)
        batch_op.create_index('ix_search_reference_url', ['res_type', 'param', 'url'], unique=False)

    op.create_table('search_string',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('resource_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.Column('normalized', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['resource_pk'], ['resource.pk'], name=op.f('fk_search_string_resource_pk_resource'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_search_string'))
    )
    with op.batch_alter_table('search_string', schema=None) as batch_op:
        batch_op.create_index('ix_search_string_lookup', ['res_type', 'param', 'normalized'], unique=False)
        batch_op.create_index(batch_op.f('ix_search_string_resource_pk'), ['resource_pk'], unique=False)

    op.create_table('search_token',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('resource_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('system', sa.Text(), nullable=True),
    sa.Column('code', sa.Text(), nullable=True),
    sa.Column('text', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['resource_pk'], ['resource.pk'], name=op.f('fk_search_token_resource_pk_resource'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_search_token'))
    )
    with op.batch_alter_table('search_token', schema=None) as batch_op:
        batch_op.create_index('ix_search_token_lookup', ['res_type', 'param', 'code', 'system'], unique=False)
        batch_op.create_index(batch_op.f('ix_search_token_resource_pk'), ['resource_pk'], unique=False)

    op.create_table('search_uri',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('resource_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('uri', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['resource_pk'], ['resource.pk'], name=op.f('fk_search_uri_resource_pk_resource'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_search_uri'))
    )
    with op.batch_alter_table('search_uri', schema=None) as batch_op:
        batch_op.create_index('ix_search_uri_lookup', ['res_type', 'param', 'uri'], unique=False)
        batch_op.create_index(batch_op.f('ix_search_uri_resource_pk'), ['resource_pk'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('search_uri', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_search_uri_resource_pk'))
        batch_op.drop_index('ix_search_uri_lookup')

    op.drop_table('search_uri')
    with op.batch_alter_table('search_token', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_search_token_resource_pk'))
        batch_op.drop_index('ix_search_token_lookup')

    op.drop_table('search_token')
    with op.batch_alter_table('search_string', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_search_string_resource_pk'))
        batch_op.drop_index('ix_search_string_lookup')

    op.drop_table('search_string')
    with op.batch_alter_table('search_reference', schema=None) as batch_op:
        batch_op.drop_index('ix_search_reference_url')
        batch_op.drop_index('ix_search_reference_target')
        batch_op.drop_index(batch_op.f('ix_search_reference_resource_pk'))
        batch_op.drop_index('ix_search_reference_lookup')

    op.drop_table('search_reference')
    with op.batch_alter_table('search_quantity', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_search_quantity_resource_pk'))
        batch_op.drop_index('ix_search_quantity_lookup')

    op.drop_table('search_quantity')
    with op.batch_alter_table('search_number', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_search_number_resource_pk'))
        batch_op.drop_index('ix_search_number_lookup')

    op.drop_table('search_number')
    with op.batch_alter_table('search_date', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_search_date_resource_pk'))
        batch_op.drop_index('ix_search_date_low')
        batch_op.drop_index('ix_search_date_high')

    op.drop_table('search_date')
    with op.batch_alter_table('resource_version', schema=None) as batch_op:
        batch_op.drop_index('ix_resource_version_type_last_updated')
        batch_op.drop_index('ix_resource_version_last_updated')

    op.drop_table('resource_version')
    with op.batch_alter_table('resource', schema=None) as batch_op:
        batch_op.drop_index('ix_resource_type_last_updated')
        batch_op.drop_index('ix_resource_last_updated')

    op.drop_table('resource')
