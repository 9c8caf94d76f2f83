"""The checks every ledger change makes before it writes anything: a known kind, an exact amount
in an active currency, a person of the case, the right role (tasks/store/ledger.py)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlmodel import Session, col, select

from models.enums import OwedKind, PlanStatus, Role
from models.iso4217 import AmountError, check_currency, in_units, parse_amount
from models.ledger import LedgerEntry, Payment, categories_for
from models.tables import (
    ActionPlan,
    AffectedPerson,
    CaseMember,
    PlanAction,
    RemediationCase,
    Stakeholder,
)
from tasks.store.ledger_view import ZERO, LedgerError

if TYPE_CHECKING:
    from tasks.actors import Operator

REFERENCE_MAX_CHARS = 200
REASON_MAX_CHARS = 2000
EVIDENCE_MAX = 20


def owed_kind_of(kind: OwedKind | str) -> OwedKind:
    try:
        return OwedKind(kind)
    except ValueError:
        known = ", ".join(k.value for k in OwedKind)
        raise LedgerError(f"kind {str(kind)[:40]!r} is not one of {known}") from None


def exact_money(amount: Decimal | str | int, currency: str) -> tuple[Decimal, str]:
    try:
        code = check_currency(currency)
        return parse_amount(amount, code), code
    except AmountError as exc:
        raise LedgerError(str(exc)) from None


def stakeholder_of(session: Session, key: str) -> Stakeholder:
    person = session.exec(select(Stakeholder).where(Stakeholder.key == key)).first()
    if person is None or not person.active:
        raise LedgerError(f"there is no active stakeholder {key}")
    return person


def holds_role(session: Session, case_id: uuid.UUID, who: Stakeholder, *roles: Role) -> bool:
    return (
        session.exec(
            select(CaseMember.id).where(
                CaseMember.case_id == case_id,
                CaseMember.stakeholder_id == who.id,
                col(CaseMember.role).in_(roles),
            )
        ).first()
        is not None
    )


def lead_of(session: Session, case: RemediationCase, key: str, doing: str) -> Stakeholder:
    who = stakeholder_of(session, key)
    if not holds_role(session, case.id, who, Role.CASE_LEAD):
        raise LedgerError(f"only the case lead {doing}; {key} is not case lead on {case.reference}")
    return who


def person_of(session: Session, case: RemediationCase, pseudonym: str) -> AffectedPerson:
    person = session.exec(
        select(AffectedPerson).where(
            AffectedPerson.case_id == case.id, AffectedPerson.pseudonym == pseudonym
        )
    ).first()
    if person is None:
        raise LedgerError(f"{case.reference} has no affected person {pseudonym[:20]}")
    return person


def entry_of(
    session: Session, case: RemediationCase, person: AffectedPerson, kind: OwedKind, currency: str
) -> LedgerEntry:
    """Return what `person` is owed of `kind` in `currency`, or say what they are owed instead."""
    entries = session.exec(
        select(LedgerEntry).where(
            LedgerEntry.case_id == case.id,
            LedgerEntry.person_id == person.id,
            LedgerEntry.kind == kind,
        )
    ).all()
    for entry in entries:
        if entry.currency == currency:
            return entry
    if entries:
        others = ", ".join(sorted(e.currency for e in entries))
        raise LedgerError(f"{person.pseudonym} is owed {kind.value} in {others}, not in {currency}")
    raise LedgerError(f"nothing is owed to {person.pseudonym} as {kind.value}")


def paid_of(session: Session, entry_id: uuid.UUID) -> tuple[Decimal, Decimal]:
    """Return what was paid against an entry, and how much of it is confirmed."""
    paid = confirmed = ZERO
    for payment in session.exec(select(Payment).where(Payment.entry_id == entry_id)).all():
        amount = in_units(payment.amount, payment.currency)
        paid += amount
        if payment.confirmed_at is not None:
            confirmed += amount
    return paid, confirmed


def approved_plan_of(session: Session, case_id: uuid.UUID) -> ActionPlan | None:
    return session.exec(
        select(ActionPlan)
        .where(ActionPlan.case_id == case_id, ActionPlan.status == PlanStatus.APPROVED)
        .order_by(col(ActionPlan.version).desc())
    ).first()


def owns_milestone_for(
    session: Session,
    case: RemediationCase,
    who: Stakeholder,
    person: AffectedPerson,
    kind: OwedKind,
) -> bool:
    """Tell whether `who` owns an approved milestone that repays `kind` to `person`."""
    plan = approved_plan_of(session, case.id)
    if plan is None:
        return False
    actions = session.exec(
        select(PlanAction).where(
            PlanAction.plan_id == plan.id,
            PlanAction.owner_id == who.id,
            col(PlanAction.category).in_(sorted(categories_for(kind))),
        )
    ).all()
    return any(a.person_id in (None, person.id) for a in actions)


def who_of(operator: Operator | None) -> dict[str, str]:
    return operator.audit_details() if operator else {}


def trimmed(value: str | None, limit: int) -> str:
    return (value or "").strip()[:limit]
