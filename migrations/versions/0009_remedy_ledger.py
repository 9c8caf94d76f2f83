"""remedy ledger: amounts owed to each affected person, payments and their confirmation

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 09:30:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

import models.dbtypes
import models.ledger


revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('ledger_entry',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('case_id', sa.Uuid(), nullable=False),
    sa.Column('person_id', sa.Uuid(), nullable=False),
    sa.Column('group_id', sa.Uuid(), nullable=True),
    sa.Column('kind', sa.Enum('recruitment_fee', 'withheld_wages', 'illegal_deductions', 'debt_cancelled', 'compensation', name='owedkind', native_enum=False, length=40), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('amount', models.ledger.Amount(), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('recorded_by_id', sa.Uuid(), nullable=True),
    sa.Column('recorded_at', models.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('waived_reason', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
    sa.Column('waived_by_id', sa.Uuid(), nullable=True),
    sa.Column('waived_at', models.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['case_id'], ['remediation_case.id'], name=op.f('fk_ledger_entry_case_id_remediation_case')),
    sa.ForeignKeyConstraint(['person_id'], ['affected_person.id'], name=op.f('fk_ledger_entry_person_id_affected_person')),
    sa.ForeignKeyConstraint(['recorded_by_id'], ['stakeholder.id'], name=op.f('fk_ledger_entry_recorded_by_id_stakeholder')),
    sa.ForeignKeyConstraint(['waived_by_id'], ['stakeholder.id'], name=op.f('fk_ledger_entry_waived_by_id_stakeholder')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_entry')),
    sa.UniqueConstraint('case_id', 'person_id', 'kind', 'currency', name=op.f('uq_ledger_entry_case_id_person_id_kind_currency'))
    )
    with op.batch_alter_table('ledger_entry', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ledger_entry_case_id'), ['case_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_ledger_entry_person_id'), ['person_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_ledger_entry_recorded_by_id'), ['recorded_by_id'], unique=False)

    op.create_table('ledger_payment',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('case_id', sa.Uuid(), nullable=False),
    sa.Column('entry_id', sa.Uuid(), nullable=False),
    sa.Column('person_id', sa.Uuid(), nullable=False),
    sa.Column('amount', models.ledger.Amount(), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('paid_on', sa.Date(), nullable=False),
    sa.Column('method', sa.Enum('bank_transfer', 'mobile_money', 'cash', 'cheque', 'other', name='paymentmethod', native_enum=False, length=40), nullable=False),
    sa.Column('reference_ciphertext', sa.Text(), nullable=True),
    sa.Column('evidence_refs', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('recorded_by_id', sa.Uuid(), nullable=False),
    sa.Column('recorded_at', models.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('confirmed_at', models.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('confirmed_given_by', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True),
    sa.Column('confirmed_by_id', sa.Uuid(), nullable=True),
    sa.Column('idempotency_key', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=True),
    sa.ForeignKeyConstraint(['case_id'], ['remediation_case.id'], name=op.f('fk_ledger_payment_case_id_remediation_case')),
    sa.ForeignKeyConstraint(['confirmed_by_id'], ['stakeholder.id'], name=op.f('fk_ledger_payment_confirmed_by_id_stakeholder')),
    sa.ForeignKeyConstraint(['entry_id'], ['ledger_entry.id'], name=op.f('fk_ledger_payment_entry_id_ledger_entry')),
    sa.ForeignKeyConstraint(['person_id'], ['affected_person.id'], name=op.f('fk_ledger_payment_person_id_affected_person')),
    sa.ForeignKeyConstraint(['recorded_by_id'], ['stakeholder.id'], name=op.f('fk_ledger_payment_recorded_by_id_stakeholder')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_payment')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_ledger_payment_idempotency_key'))
    )
    with op.batch_alter_table('ledger_payment', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ledger_payment_case_id'), ['case_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_ledger_payment_entry_id'), ['entry_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_ledger_payment_person_id'), ['person_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('ledger_payment', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ledger_payment_person_id'))
        batch_op.drop_index(batch_op.f('ix_ledger_payment_entry_id'))
        batch_op.drop_index(batch_op.f('ix_ledger_payment_case_id'))

    op.drop_table('ledger_payment')
    with op.batch_alter_table('ledger_entry', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ledger_entry_recorded_by_id'))
        batch_op.drop_index(batch_op.f('ix_ledger_entry_person_id'))
        batch_op.drop_index(batch_op.f('ix_ledger_entry_case_id'))

    op.drop_table('ledger_entry')
