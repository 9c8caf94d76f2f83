"""retention and legal hold: legal holds on a case's data, and what retention erased

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 10:30:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models.dbtypes


revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('legal_hold',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('case_id', sa.Uuid(), nullable=False),
    sa.Column('reason', sa.String(length=2000), nullable=False),
    sa.Column('set_by_id', sa.Uuid(), nullable=False),
    sa.Column('set_at', models.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('released_at', models.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('released_by_id', sa.Uuid(), nullable=True),
    sa.Column('release_reason', sa.String(length=2000), nullable=True),
    sa.ForeignKeyConstraint(['case_id'], ['remediation_case.id'], name=op.f('fk_legal_hold_case_id_remediation_case')),
    sa.ForeignKeyConstraint(['released_by_id'], ['stakeholder.id'], name=op.f('fk_legal_hold_released_by_id_stakeholder')),
    sa.ForeignKeyConstraint(['set_by_id'], ['stakeholder.id'], name=op.f('fk_legal_hold_set_by_id_stakeholder')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_legal_hold'))
    )
    with op.batch_alter_table('legal_hold', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_legal_hold_case_id'), ['case_id'], unique=False)

    op.create_table('retention_erasure',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('case_id', sa.Uuid(), nullable=False),
    sa.Column('category', sa.String(length=20), nullable=False),
    sa.Column('values_erased', sa.Integer(), nullable=False),
    sa.Column('erased_at', models.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['remediation_case.id'], name=op.f('fk_retention_erasure_case_id_remediation_case')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_retention_erasure')),
    sa.UniqueConstraint('case_id', 'category', name=op.f('uq_retention_erasure_case_id_category'))
    )
    with op.batch_alter_table('retention_erasure', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_retention_erasure_case_id'), ['case_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('retention_erasure', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_retention_erasure_case_id'))
    op.drop_table('retention_erasure')
    with op.batch_alter_table('legal_hold', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_legal_hold_case_id'))
    op.drop_table('legal_hold')
