"""Column helpers shared by every table module (models/tables.py, models/ledger.py, ...), and the
naming convention of the case store's constraints. Table modules import these, never each other,
so that models/tables.py can import the others at its end without a cycle.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlmodel import Field, SQLModel

from models.dbtypes import JSONType, UTCDateTime, enum_type

# Named constraints keep Alembic's batch migrations on SQLite deterministic.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def id_field() -> Any:
    return Field(default_factory=uuid.uuid4, primary_key=True)


def when_field(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(default=None, sa_type=UTCDateTime(), nullable=nullable, index=index)


def enum_field(
    enum_cls: Any, *, nullable: bool = False, default: Any = None, index: bool = False
) -> Any:
    return Field(default=default, sa_type=enum_type(enum_cls), nullable=nullable, index=index)


def json_field(*, default_factory: Any = list) -> Any:
    return Field(default_factory=default_factory, sa_type=JSONType, nullable=False)


def fk_field(target: str, *, nullable: bool = False, index: bool = True) -> Any:
    return Field(default=None, foreign_key=target, nullable=nullable, index=index)
