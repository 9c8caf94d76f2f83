"""the status a reporter was last told of, and when the status first gave them feedback

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 06:55:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models.dbtypes


revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('reporter_receipt', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status_told', sa.Enum('received', 'being_verified', 'planning', 'under_way', 'closed', name='reporterstatus', native_enum=False, length=40), nullable=True))
        batch_op.add_column(sa.Column('status_feedback_at', models.dbtypes.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('reporter_receipt', schema=None) as batch_op:
        batch_op.drop_column('status_feedback_at')
        batch_op.drop_column('status_told')
