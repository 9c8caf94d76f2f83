"""each affected person's view of the remedy, encrypted, for the closure's signers

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 07:25:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import models.dbtypes


revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('person_remedy_view',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('case_id', sa.Uuid(), nullable=False),
    sa.Column('person_id', sa.Uuid(), nullable=False),
    sa.Column('given_by', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('recorded_by_id', sa.Uuid(), nullable=False),
    sa.Column('recorded_at', models.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('text_ciphertext', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['remediation_case.id'], name=op.f('fk_person_remedy_view_case_id_remediation_case')),
    sa.ForeignKeyConstraint(['person_id'], ['affected_person.id'], name=op.f('fk_person_remedy_view_person_id_affected_person')),
    sa.ForeignKeyConstraint(['recorded_by_id'], ['stakeholder.id'], name=op.f('fk_person_remedy_view_recorded_by_id_stakeholder')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_person_remedy_view'))
    )
    with op.batch_alter_table('person_remedy_view', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_person_remedy_view_case_id'), ['case_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_person_remedy_view_person_id'), ['person_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_person_remedy_view_recorded_by_id'), ['recorded_by_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('person_remedy_view', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_person_remedy_view_recorded_by_id'))
        batch_op.drop_index(batch_op.f('ix_person_remedy_view_person_id'))
        batch_op.drop_index(batch_op.f('ix_person_remedy_view_case_id'))

    op.drop_table('person_remedy_view')
