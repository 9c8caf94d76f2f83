"""per-case data keys: each case's data key, wrapped by the master key(s)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 09:40:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models.dbtypes


revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('case_key',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('case_id', sa.Uuid(), nullable=False),
    sa.Column('wrapped_key', sa.Text(), nullable=True),
    sa.Column('created_at', models.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('rotated_at', models.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('destroyed_at', models.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['case_id'], ['remediation_case.id'], name=op.f('fk_case_key_case_id_remediation_case')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_case_key')),
    sa.UniqueConstraint('case_id', name=op.f('uq_case_key_case_id'))
    )


def downgrade() -> None:
    op.drop_table('case_key')
