"""What the remedy ledger of closed cases adds to the lessons report: totals repaid by kind and
currency, and the median days from plan approval to a confirmed payment (docs/domain.md, The
remedy ledger). Amounts only: never a person, a pseudonym or a payment's reference.
"""

from __future__ import annotations

import statistics
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session, col, func, select

from models.enums import OwedKind, PlanStatus
from models.ledger import LedgerEntry, Payment
from models.tables import ActionPlan

COUNTED_PLANS = (PlanStatus.APPROVED, PlanStatus.SUPERSEDED)


class Repaid(BaseModel):
    """What the closed cases owed, paid and saw confirmed of one kind in one currency.

    Amounts are summed in Python as Decimal (SQLite keeps them as text: models/ledger.py).
    """

    kind: OwedKind
    currency: str
    persons: int
    owed: Decimal = Decimal(0)  # not waived
    waived: Decimal = Decimal(0)
    paid: Decimal = Decimal(0)
    confirmed: Decimal = Decimal(0)


def repaid(session: Session, scope: Any) -> dict[str, Any]:
    """Totals repaid by kind and currency, and the median days from plan approval to a confirmed
    payment (one row per entry and per payment: the amounts are exact only in Python)."""
    totals: dict[tuple[OwedKind, str], Repaid] = {}
    persons: dict[tuple[OwedKind, str], set[uuid.UUID]] = defaultdict(set)
    entries = session.exec(select(LedgerEntry).where(col(LedgerEntry.case_id).in_(scope))).all()
    kind_of: dict[uuid.UUID, tuple[OwedKind, str]] = {}
    for entry in entries:
        key = kind_of[entry.id] = (entry.kind, entry.currency)
        row = totals.setdefault(key, Repaid(kind=entry.kind, currency=entry.currency, persons=0))
        persons[key].add(entry.person_id)
        if entry.waived_at is not None:
            row.waived += entry.amount
        else:
            row.owed += entry.amount
    approved = dict(
        session.exec(
            select(ActionPlan.case_id, func.min(col(ActionPlan.approved_at)))
            .where(
                col(ActionPlan.case_id).in_(scope),
                col(ActionPlan.status).in_(COUNTED_PLANS),
                col(ActionPlan.approved_at).is_not(None),
            )
            .group_by(col(ActionPlan.case_id))
        ).all()
    )
    days: list[float] = []
    for payment in session.exec(select(Payment).where(col(Payment.case_id).in_(scope))).all():
        row = totals[kind_of[payment.entry_id]]
        row.paid += payment.amount
        if payment.confirmed_at is None:
            continue
        row.confirmed += payment.amount
        start = approved.get(payment.case_id)
        if start is not None:
            days.append((_aware(payment.confirmed_at) - _aware(start)).total_seconds() / 86400)
    for key, row in totals.items():
        row.persons = len(persons[key])
    order = list(OwedKind)
    return {
        "repaid": sorted(totals.values(), key=lambda r: (order.index(r.kind), r.currency)),
        "confirmed_payments": len(days),
        "median_days_to_confirmed_payment": round(statistics.median(days), 1) if days else None,
    }


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
