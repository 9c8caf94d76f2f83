"""Legal holds and the record of what retention destroyed (docs/security.md, Retention and
erasure).

A legal hold stops the retention sweep and a person's erasure on one case until it is released;
`RetentionErasure` records, per case and category, when the retention sweep erased it (category
"key": the case's data key was destroyed), so each is done once. Neither holds personal data.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from models.columns import fk_field as _fk
from models.columns import id_field as _id
from models.columns import when_field as _when


class LegalHold(SQLModel, table=True):
    """A legal hold on a case's data: set with a reason, released with one (None: in force)."""

    __tablename__ = "legal_hold"
    id: uuid.UUID = _id()
    case_id: uuid.UUID = _fk("remediation_case.id")
    reason: str = Field(max_length=2000)
    set_by_id: uuid.UUID = _fk("stakeholder.id", index=False)
    set_at: datetime = _when()
    released_at: datetime | None = _when(nullable=True)
    released_by_id: uuid.UUID | None = _fk("stakeholder.id", nullable=True, index=False)
    release_reason: str | None = Field(default=None, max_length=2000)

    def __repr__(self) -> str:
        return f"LegalHold(id={self.id!s})"


class RetentionErasure(SQLModel, table=True):
    """One category of a case's data erased by retention (or its data key destroyed): how many
    values, and when."""

    __tablename__ = "retention_erasure"
    __table_args__ = (sa.UniqueConstraint("case_id", "category"),)
    id: uuid.UUID = _id()
    case_id: uuid.UUID = _fk("remediation_case.id")
    category: str = Field(max_length=20)
    values_erased: int = 0
    erased_at: datetime = _when()
