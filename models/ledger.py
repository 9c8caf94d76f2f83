"""The remedy ledger: what each affected person is owed, what was paid, and who confirmed it
(docs/domain.md, The remedy ledger).

One `LedgerEntry` per person, kind and currency (a group of 30 workers owed 1,500 USD each is 30
entries sharing a `group_id`); `Payment` rows record each payment to one person against one
entry, and the person's (or their representative's) confirmation. Amounts are `Decimal` in an
ISO 4217 currency (models.iso4217), stored exactly: NUMERIC on PostgreSQL, text on SQLite (whose
NUMERIC is a binary float). Amounts are not personal data; the payment's reference (it may name
an account) is sealed by the vault like an identity.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel

from models.columns import enum_field as _enum
from models.columns import fk_field as _fk
from models.columns import id_field as _id
from models.columns import json_field as _json
from models.columns import when_field as _when
from models.enums import OwedKind

GivenBy = Literal["person", "representative"]
Source = Literal["intake", "case_lead"]


class PaymentMethod(StrEnum):
    """How a payment reached the person."""

    BANK_TRANSFER = "bank_transfer"
    MOBILE_MONEY = "mobile_money"
    CASH = "cash"
    CHEQUE = "cheque"
    OTHER = "other"


# The plan action categories that repay a kind of amount owed (models/plan_templates.toml): a
# milestone of one of these categories is verified only once its persons' amounts are settled.
OWED_FOR_CATEGORY: dict[str, frozenset[OwedKind]] = {
    "fee_reimbursement": frozenset({OwedKind.RECRUITMENT_FEE}),
    "back_pay": frozenset({OwedKind.WITHHELD_WAGES, OwedKind.ILLEGAL_DEDUCTIONS}),
    "debt_cancellation": frozenset({OwedKind.DEBT_CANCELLED}),
    "compensation": frozenset({OwedKind.COMPENSATION}),
}


def categories_for(kind: OwedKind) -> frozenset[str]:
    """Return the plan action categories that settle amounts of `kind`."""
    return frozenset(c for c, kinds in OWED_FOR_CATEGORY.items() if kind in kinds)


class Amount(sa.types.TypeDecorator[Decimal]):
    """An exact amount: NUMERIC(18, 4) on PostgreSQL, its decimal text on SQLite."""

    impl = sa.Numeric(18, 4, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(40))
        return dialect.type_descriptor(sa.Numeric(18, 4, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError("an amount is stored from a Decimal only, never a float")
        exact = value.quantize(Decimal("0.0001"))
        return str(exact) if dialect.name == "sqlite" else exact

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(str(value))


def _amount() -> Any:
    return Field(sa_type=Amount(), nullable=False)


class LedgerEntry(SQLModel, table=True):
    """What one affected person is owed of one kind in one currency; waived with a reason."""

    __tablename__ = "ledger_entry"
    __table_args__ = (sa.UniqueConstraint("case_id", "person_id", "kind", "currency"),)
    id: uuid.UUID = _id()
    case_id: uuid.UUID = _fk("remediation_case.id")
    person_id: uuid.UUID = _fk("affected_person.id")
    # entries recorded together for several persons ("30 workers x 1,500 USD") share it
    group_id: uuid.UUID | None = Field(default=None, nullable=True)
    kind: OwedKind = _enum(OwedKind)
    currency: str = Field(max_length=3)
    amount: Decimal = _amount()
    source: str = Field(max_length=20)
    recorded_by_id: uuid.UUID | None = _fk("stakeholder.id", nullable=True)
    recorded_at: datetime = _when()
    waived_reason: str | None = Field(default=None, sa_type=sa.Text)  # sealed (case key)
    waived_by_id: uuid.UUID | None = _fk("stakeholder.id", nullable=True, index=False)
    waived_at: datetime | None = _when(nullable=True)

    def __repr__(self) -> str:
        return f"LedgerEntry(id={self.id!s}, kind={self.kind!s}, currency={self.currency!r})"


class Payment(SQLModel, table=True):
    """One payment to one person against one ledger entry, and its confirmation."""

    __tablename__ = "ledger_payment"
    id: uuid.UUID = _id()
    case_id: uuid.UUID = _fk("remediation_case.id")
    entry_id: uuid.UUID = _fk("ledger_entry.id")
    person_id: uuid.UUID = _fk("affected_person.id")
    amount: Decimal = _amount()
    currency: str = Field(max_length=3)
    paid_on: date
    method: PaymentMethod = _enum(PaymentMethod)
    # the bank or transfer reference may identify an account: sealed (tasks.store.vault)
    reference_ciphertext: str | None = Field(default=None, sa_type=sa.Text)
    evidence_refs: list[str] = _json()
    recorded_by_id: uuid.UUID = _fk("stakeholder.id", index=False)
    recorded_at: datetime = _when()
    confirmed_at: datetime | None = _when(nullable=True)
    confirmed_given_by: str | None = Field(default=None, max_length=20)
    confirmed_by_id: uuid.UUID | None = _fk("stakeholder.id", nullable=True, index=False)
    idempotency_key: str | None = Field(default=None, max_length=120, unique=True)

    def __repr__(self) -> str:
        return f"Payment(id={self.id!s}, currency={self.currency!r})"
