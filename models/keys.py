"""Per-case data keys: envelope encryption (docs/security.md, Keys: per-case data keys and
rotation).

Each case's personal data is encrypted with a data key of its own; the data key is stored here only
wrapped (encrypted) by the master key(s). Rotating the master key re-wraps these rows; destroying
a case's data key (retention, erasure) leaves every copy of its data unreadable.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from models.columns import id_field as _id
from models.columns import when_field as _when


class CaseKey(SQLModel, table=True):
    """A case's data key, wrapped by the master key; None once destroyed (crypto-shredding)."""

    __tablename__ = "case_key"
    id: uuid.UUID = _id()
    case_id: uuid.UUID = Field(foreign_key="remediation_case.id", unique=True)
    wrapped_key: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime = _when()
    rotated_at: datetime | None = _when(nullable=True)
    destroyed_at: datetime | None = _when(nullable=True)

    def __repr__(self) -> str:
        return f"CaseKey(case_id={self.case_id!s})"
