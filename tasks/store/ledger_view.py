"""Reading the remedy ledger: each person's lines, the payments, totals per currency, and what a
financial milestone still has to settle (docs/domain.md, The remedy ledger). Writing it:
tasks/store/ledger.py.

Amounts are brought back to their currency's decimals (models.iso4217.in_units) and summed as
Decimal in Python: SQLite keeps them as text (models/ledger.py).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import date
from decimal import Decimal

from pydantic import BaseModel
from sqlmodel import Session, col, select

from models.enums import OwedKind
from models.iso4217 import format_amount, in_units
from models.ledger import OWED_FOR_CATEGORY, LedgerEntry, Payment, PaymentMethod
from models.tables import AffectedPerson, PlanAction, RemediationCase
from tasks.store.sealed import open_text

ZERO = Decimal(0)


class LedgerError(Exception):
    """A ledger change or read that cannot be done; the message says why (no personal data)."""


class LedgerLine(BaseModel):
    """One person's amount of one kind in one currency, and how far it is settled."""

    pseudonym: str
    kind: OwedKind
    currency: str
    owed: Decimal
    paid: Decimal
    confirmed: Decimal
    waived: bool
    waived_reason: str | None = None
    settled: bool
    payments: int

    @property
    def remaining(self) -> Decimal:
        """What is still to be paid (nothing once waived)."""
        return ZERO if self.waived else max(self.owed - self.paid, ZERO)

    @property
    def status(self) -> str:
        """One word for the line: waived, confirmed, paid, part-paid or owed."""
        if self.waived:
            return "waived"
        if self.settled:
            return "confirmed"
        if self.paid >= self.owed:
            return "paid"
        return "part-paid" if self.paid > 0 else "owed"


class PaymentLine(BaseModel):
    """One recorded payment (its reference stays sealed)."""

    id: uuid.UUID
    pseudonym: str
    kind: OwedKind
    currency: str
    amount: Decimal
    paid_on: date
    method: PaymentMethod
    confirmed: bool
    confirmed_given_by: str | None = None


class CurrencyTotal(BaseModel):
    """The case's totals in one currency: owed (entries not waived), waived, paid, confirmed."""

    currency: str
    owed: Decimal = ZERO
    waived: Decimal = ZERO
    paid: Decimal = ZERO
    confirmed: Decimal = ZERO


class LedgerSummary(BaseModel):
    """A case's ledger: a line per person, kind and currency; its payments; totals per currency."""

    case_ref: str
    lines: list[LedgerLine]
    payments: list[PaymentLine]
    totals: dict[str, CurrencyTotal]

    @property
    def settled(self) -> bool:
        """Tell whether every line is confirmed in full or waived."""
        return all(line.settled for line in self.lines)


# --- reading --------------------------------------------------------------------------------------


def _lines(session: Session, case_id: uuid.UUID) -> tuple[list[LedgerLine], list[PaymentLine]]:
    found = session.exec(
        select(LedgerEntry, AffectedPerson.pseudonym)
        .join(AffectedPerson, col(AffectedPerson.id) == col(LedgerEntry.person_id))
        .where(LedgerEntry.case_id == case_id)
    ).all()
    paid: dict[uuid.UUID, list[Payment]] = defaultdict(list)
    for payment in session.exec(
        select(Payment)
        .where(Payment.case_id == case_id)
        .order_by(col(Payment.paid_on), col(Payment.recorded_at))
    ).all():
        paid[payment.entry_id].append(payment)
    lines, payments = [], []
    for entry, pseudonym in sorted(found, key=lambda f: (f[1], f[0].kind.value, f[0].currency)):
        made = paid[entry.id]
        amounts = {p.id: in_units(p.amount, p.currency) for p in made}
        owed = in_units(entry.amount, entry.currency)
        total = sum((amounts[p.id] for p in made), ZERO)
        confirmed = sum((amounts[p.id] for p in made if p.confirmed_at is not None), ZERO)
        waived = entry.waived_at is not None
        lines.append(
            LedgerLine(
                pseudonym=pseudonym,
                kind=entry.kind,
                currency=entry.currency,
                owed=owed,
                paid=total,
                confirmed=confirmed,
                waived=waived,
                waived_reason=open_text(session, entry.case_id, entry.waived_reason),
                settled=waived or confirmed >= owed,
                payments=len(made),
            )
        )
        payments += [
            PaymentLine(
                id=p.id,
                pseudonym=pseudonym,
                kind=entry.kind,
                currency=p.currency,
                amount=amounts[p.id],
                paid_on=p.paid_on,
                method=p.method,
                confirmed=p.confirmed_at is not None,
                confirmed_given_by=p.confirmed_given_by,
            )
            for p in made
        ]
    return lines, payments


def ledger_summary(session: Session, case_id: uuid.UUID) -> LedgerSummary:
    """Return a case's ledger: each person's lines, the payments, and totals per currency."""
    case = session.get(RemediationCase, case_id)
    if case is None:
        raise LedgerError(f"there is no case {case_id}")
    lines, payments = _lines(session, case_id)
    totals: dict[str, CurrencyTotal] = {}
    for line in lines:
        total = totals.setdefault(line.currency, CurrencyTotal(currency=line.currency))
        if line.waived:
            total.waived += line.owed
        else:
            total.owed += line.owed
        total.paid += line.paid
        total.confirmed += line.confirmed
    return LedgerSummary(
        case_ref=case.reference,
        lines=lines,
        payments=payments,
        totals=dict(sorted(totals.items())),
    )


def by_action(session: Session, action: PlanAction) -> list[LedgerLine]:
    """Return the ledger lines a financial plan action covers ([] for any other action).

    An action for one person covers that person's lines; any other covers every person's, of
    the kinds its category repays (models.ledger.OWED_FOR_CATEGORY).
    """
    kinds = OWED_FOR_CATEGORY.get(action.category)
    if not kinds:
        return []
    lines, _ = _lines(session, action.case_id)
    if action.person_id is not None:
        person = session.get(AffectedPerson, action.person_id)
        only = person.pseudonym if person else None
        lines = [line for line in lines if line.pseudonym == only]
    return [line for line in lines if line.kind in kinds]


def unsettled(session: Session, action: PlanAction) -> list[str]:
    """Return who a financial action still has to settle, as "P-03 (recruitment_fee)".

    Settled means confirmed in full or waived; [] for a non-financial action.
    """
    return [
        f"{line.pseudonym} ({line.kind.value})"
        for line in by_action(session, action)
        if not line.settled
    ]


def owed_kinds(session: Session, case_id: uuid.UUID) -> frozenset[OwedKind]:
    """Return the kinds with an amount owed (not waived) to anyone in the case."""
    found = session.exec(
        select(LedgerEntry.kind).where(
            LedgerEntry.case_id == case_id, col(LedgerEntry.waived_at).is_(None)
        )
    ).all()
    return frozenset(OwedKind(k) for k in found)


def unsettled_note(session: Session, action: PlanAction, *, shown: int = 5) -> str | None:
    """Say why a financial action cannot be verified yet ("P-03 (recruitment_fee): payment not
    confirmed"), or None when every person it covers is settled."""
    owing = unsettled(session, action)
    if not owing:
        return None
    more = f"; and {len(owing) - shown} more" if len(owing) > shown else ""
    return "; ".join(f"{o}: payment not confirmed" for o in owing[:shown]) + more


def owed_words(kind: OwedKind) -> str:
    """Say a kind of amount owed in words ("recruitment fee")."""
    return kind.value.replace("_", " ")


def totals_text(summary: LedgerSummary) -> str:
    """The amounts owed (not waived) per currency, with how many persons each: "45,000.00 USD
    (30 persons); 350,000.50 CDF (1 person)"; "nothing" when nobody is owed anything."""
    persons: dict[str, set[str]] = defaultdict(set)
    for line in summary.lines:
        if not line.waived:
            persons[line.currency].add(line.pseudonym)
    parts = []
    for currency, total in summary.totals.items():
        if total.owed > 0:
            n = len(persons[currency])
            parts.append(
                f"{format_amount(total.owed, currency)} ({n} person{'s' if n != 1 else ''})"
            )
    return "; ".join(parts) or "nothing"


def action_owed(lines: list[LedgerLine]) -> tuple[str, int] | None:
    """What a financial action repays (not waived), per currency, and to how many persons:
    ("450.00 USD; 630,000.00 CDF", 3); None when it repays nothing. Numbers and codes only, so
    that a message can put them in any language."""
    owed: dict[str, Decimal] = defaultdict(lambda: ZERO)
    persons: set[str] = set()
    for line in lines:
        if not line.waived:
            owed[line.currency] += line.owed
            persons.add(line.pseudonym)
    if not owed:
        return None
    amounts = "; ".join(format_amount(owed[c], c) for c in sorted(owed))
    return amounts, len(persons)


def action_amount(lines: list[LedgerLine]) -> str | None:
    """What a financial action repays, in English: "450.00 USD to 3 persons"."""
    owed = action_owed(lines)
    if owed is None:
        return None
    amounts, n = owed
    return f"{amounts} to {n} person{'s' if n != 1 else ''}"


def ledger_markdown(summary: LedgerSummary) -> str:
    """Each person's amounts (by pseudonym) and the totals, as a Markdown table; "" if none."""
    if not summary.lines:
        return ""
    rows = [
        "| person | owed for | amount | paid | confirmed | status |",
        "|---|---|---:|---:|---:|---|",
    ]
    for line in summary.lines:
        rows.append(
            f"| {line.pseudonym} | {owed_words(line.kind)} "
            f"| {format_amount(line.owed, line.currency)} "
            f"| {format_amount(line.paid, line.currency)} "
            f"| {format_amount(line.confirmed, line.currency)} | {line.status} |"
        )
    paid = "; ".join(
        f"{format_amount(t.paid, c)} paid, {format_amount(t.confirmed, c)} confirmed"
        for c, t in summary.totals.items()
    )
    return "\n".join([*rows, "", f"**Total owed:** {totals_text(summary)}  ", f"{paid}."])
