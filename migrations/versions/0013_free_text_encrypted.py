"""free text encrypted: the free-text columns hold values sealed with the case's data key

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 10:30:00.000000

A sealed value is longer than the text it seals, so the columns become unbounded text (the
forms keep their length limits). Sealing the rows written before needs the key, which a
migration does not hold: `remedy db upgrade` runs `seal_legacy_free_text` after migrating
(tasks/store/sealed.py, docs/security.md).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table: {column: the former length}
COLUMNS: dict[str, dict[str, int]] = {
    "allegation": {"screening_reason": 2000},
    "safety_assessment": {"mitigation": 2000},
    "decision": {"reason": 4000},
    "action_plan": {"victim_priorities": 4000},
    "plan_action": {"waived_reason": 2000, "extension_reason": 2000},
    "progress_update": {"note": 4000},
    "closure_record": {"victim_view": 4000, "unmet_needs": 4000},
    "lesson": {"summary": 4000},
    "ledger_entry": {"waived_reason": 2000},
}


def upgrade() -> None:
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            for column, length in columns.items():
                batch.alter_column(
                    column,
                    existing_type=sa.String(length=length),
                    type_=sa.Text(),
                    existing_nullable=True,
                )


def downgrade() -> None:
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            for column, length in columns.items():
                batch.alter_column(
                    column,
                    existing_type=sa.Text(),
                    type_=sa.String(length=length),
                    existing_nullable=True,
                )
