"""The remedy ledger: record what each person is owed, each payment and its confirmation, and
tell whether a financial milestone's persons are settled (docs/domain.md, The remedy ledger).

Who may do what: the case lead records amounts owed and waives them (with a reason); the case
lead or the owner of the approved plan's milestone that repays that kind records a payment; the
case's victim representative confirms it, or the case lead when the person confirmed it to them.
Every change is audited on the case's chain with amounts, kinds, currencies and pseudonyms only:
never a name, a payment reference (it is sealed by the vault) or a waiver's reason.

A refusal raises `LedgerError` before anything is written, so the unit of work stores nothing.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, ParamSpec, TypeVar, get_args

from sqlmodel import Session, col, select

from models.enums import OwedKind, Role
from models.iso4217 import AmountError, check_currency, in_units
from models.ledger import (
    GivenBy,
    LedgerEntry,
    Payment,
    PaymentMethod,
    Source,
)
from models.tables import (
    AffectedPerson,
    RemediationCase,
    Stakeholder,
)
from tasks.store.audit import append_audit
from tasks.store.cases import get_case
from tasks.store.db import unit_of_work
from tasks.store.ledger_checks import (
    entry_of,
    exact_money,
    holds_role,
    lead_of,
    owed_kind_of,
    owns_milestone_for,
    paid_of,
    person_of,
    stakeholder_of,
    trimmed,
    who_of,
)
from tasks.store.ledger_view import LedgerError
from tasks.store.sealed import seal_text
from tasks.store.vault import get_vault

if TYPE_CHECKING:
    from tasks.actors import Operator

P = ParamSpec("P")
R = TypeVar("R")
REFERENCE_MAX_CHARS = 200
REASON_MAX_CHARS = 2000
EVIDENCE_MAX = 20


# --- recording ------------------------------------------------------------------------------------


def owe(
    session: Session,
    case: RemediationCase,
    *,
    kind: OwedKind | str,
    currency: str,
    amount: Decimal | str | int,
    pseudonyms: list[str] | None,
    recorded_by: Stakeholder | None,
    actor: str,
    now: datetime,
    source: Source,
    extra: dict[str, str] | None = None,
) -> list[uuid.UUID]:
    """Record an amount owed to each named person (None: all), in the caller's unit of work.

    One entry per person; several share a group id. An entry of the same person, kind and
    currency is replaced while nothing is paid against it, and refused otherwise.
    """
    if source not in get_args(Source):
        raise LedgerError(f"source {source!r}: say intake or case_lead")
    owed_kind = owed_kind_of(kind)
    exact, code = exact_money(amount, currency)
    if pseudonyms is None:
        persons = list(
            session.exec(
                select(AffectedPerson)
                .where(AffectedPerson.case_id == case.id)
                .order_by(col(AffectedPerson.pseudonym))
            ).all()
        )
        if not persons:
            raise LedgerError(f"{case.reference} has no affected persons to owe anything to")
    else:
        if not pseudonyms:
            raise LedgerError("name at least one person (or none, for every person of the case)")
        persons = [person_of(session, case, p) for p in dict.fromkeys(pseudonyms)]
    replaced: list[tuple[LedgerEntry, AffectedPerson]] = []
    for person in persons:
        current = session.exec(
            select(LedgerEntry).where(
                LedgerEntry.case_id == case.id,
                LedgerEntry.person_id == person.id,
                LedgerEntry.kind == owed_kind,
                LedgerEntry.currency == code,
            )
        ).first()
        if current is None:
            continue
        if paid_of(session, current.id)[0] > 0:
            raise LedgerError(
                f"{person.pseudonym} ({owed_kind.value}, {code}) has payments already: the "
                "amount owed can no longer be replaced"
            )
        if current.waived_at is not None:
            raise LedgerError(f"{person.pseudonym} ({owed_kind.value}, {code}) is waived")
        replaced.append((current, person))
    group_id = uuid.uuid4() if len(persons) > 1 else None
    kept = {p.id: e for e, p in replaced}
    ids = []
    for person in persons:
        entry = kept.get(person.id) or LedgerEntry(
            case_id=case.id,
            person_id=person.id,
            kind=owed_kind,
            currency=code,
            amount=exact,
            source=source,
        )
        entry.amount, entry.group_id, entry.source = exact, group_id, source
        entry.recorded_by_id = recorded_by.id if recorded_by else None
        entry.recorded_at = now
        session.add(entry)
        ids.append(entry.id)
    session.flush()
    append_audit(
        session,
        chain=case.reference,
        actor=actor,
        action="ledger.owed",
        at=now,
        # one event per recording: its group, or its one entry
        subject_type="ledger_group" if group_id else "ledger_entry",
        subject_id=str(group_id or ids[0]),
        details={
            "kind": owed_kind.value,
            "currency": code,
            "amount": str(exact),
            "persons": [p.pseudonym for p in persons],
            "replaced": [p.pseudonym for _, p in replaced],
            "source": source,
            **({"group": str(group_id)} if group_id else {}),
            **(extra or {}),
        },
    )
    return ids


def record_owed(
    case_ref: str,
    *,
    kind: OwedKind | str,
    currency: str,
    amount: Decimal | str | int,
    pseudonyms: list[str] | None,
    by: str,
    now: datetime,
    source: Source = "case_lead",
    operator: Operator | None = None,
) -> list[uuid.UUID]:
    """Record what each named person (None: every person of the case) is owed; the case lead."""
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        lead = lead_of(session, case, by, "records amounts owed")
        return owe(
            session,
            case,
            kind=kind,
            currency=currency,
            amount=amount,
            pseudonyms=pseudonyms,
            recorded_by=lead,
            actor=f"stakeholder:{lead.key}",
            now=now,
            source=source,
            extra=who_of(operator),
        )


def record_payment(
    case_ref: str,
    pseudonym: str,
    *,
    kind: OwedKind | str,
    currency: str,
    amount: Decimal | str | int,
    paid_on: date,
    method: PaymentMethod | str,
    reference: str | None,
    evidence: list[str] | None,
    by: str,
    now: datetime,
    idempotency_key: str | None = None,
    operator: Operator | None = None,
) -> uuid.UUID:
    """Record a payment to one person against what they are owed; refused past what remains."""
    owed_kind = owed_kind_of(kind)
    exact, code = exact_money(amount, currency)
    try:
        how = PaymentMethod(method)
    except ValueError:
        known = ", ".join(m.value for m in PaymentMethod)
        raise LedgerError(f"method {str(method)[:40]!r} is not one of {known}") from None
    if paid_on > now.date():
        raise LedgerError(f"paid on {paid_on.isoformat()}: that is in the future")
    refs = [e.strip()[:200] for e in (evidence or []) if e.strip()][:EVIDENCE_MAX]
    kept_reference = trimmed(reference, REFERENCE_MAX_CHARS + 1)
    if len(kept_reference) > REFERENCE_MAX_CHARS:
        raise LedgerError(f"the payment reference is longer than {REFERENCE_MAX_CHARS} characters")
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        if idempotency_key:
            seen = session.exec(
                select(Payment).where(Payment.idempotency_key == idempotency_key)
            ).first()
            if seen is not None:
                if seen.case_id != case.id:
                    raise LedgerError("this payment key was used for another case")
                return seen.id
        person = person_of(session, case, pseudonym)
        entry = entry_of(session, case, person, owed_kind, code)
        who = stakeholder_of(session, by)
        if not (
            holds_role(session, case.id, who, Role.CASE_LEAD)
            or owns_milestone_for(session, case, who, person, owed_kind)
        ):
            raise LedgerError(
                f"only the case lead or the owner of the milestone repaying {owed_kind.value} "
                f"records a payment; {by} is neither on {case.reference}"
            )
        if entry.waived_at is not None:
            raise LedgerError(f"{pseudonym} ({owed_kind.value}, {code}) is waived: nothing is due")
        paid, _ = paid_of(session, entry.id)
        owed = in_units(entry.amount, code)
        remaining = owed - paid
        if exact > remaining:
            raise LedgerError(
                f"{exact} {code} to {pseudonym} ({owed_kind.value}) is more than remains owed: "
                f"{remaining} {code} of {owed} {code}"
            )
        payment = Payment(
            case_id=case.id,
            entry_id=entry.id,
            person_id=person.id,
            amount=exact,
            currency=code,
            paid_on=paid_on,
            method=how,
            reference_ciphertext=(
                get_vault().encrypt_for_case(session, case.id, {"reference": kept_reference})
                if kept_reference
                else None
            ),
            evidence_refs=refs,
            recorded_by_id=who.id,
            recorded_at=now,
            idempotency_key=idempotency_key,
        )
        session.add(payment)
        session.flush()
        append_audit(
            session,
            chain=case.reference,
            actor=f"stakeholder:{who.key}",
            action="ledger.payment_recorded",
            at=now,
            subject_type="ledger_payment",
            subject_id=str(payment.id),
            details={
                "person": pseudonym,
                "kind": owed_kind.value,
                "currency": code,
                "amount": str(exact),
                "remaining": str(remaining - exact),
                "paid_on": paid_on.isoformat(),
                "method": how.value,
                "evidence": len(refs),
                **who_of(operator),
            },
        )
        return payment.id


def confirm_payment(
    case_ref: str,
    payment_id: uuid.UUID,
    *,
    given_by: GivenBy | str,
    by: str,
    now: datetime,
    operator: Operator | None = None,
) -> None:
    """Record that the person received a payment: confirmed by them or their representative.

    The case's victim representative records it; the case lead too when the person confirmed it
    to them (`given_by="person"`). A payment is confirmed once.
    """
    if given_by not in get_args(GivenBy):
        raise LedgerError(f"given by {str(given_by)[:20]!r}: say person or representative")
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        payment = session.get(Payment, payment_id)
        if payment is None or payment.case_id != case.id:
            raise LedgerError(f"{case_ref} has no payment {payment_id}")
        who = stakeholder_of(session, by)
        may = (
            (Role.VICTIM_REPRESENTATIVE, Role.CASE_LEAD)
            if given_by == "person"
            else (Role.VICTIM_REPRESENTATIVE,)
        )
        if not holds_role(session, case.id, who, *may):
            raise LedgerError(
                "only the case's victim representative confirms a payment (or the case lead, "
                f"when the person confirmed it to them); {by} is not on {case_ref} in that role"
            )
        if payment.confirmed_at is not None:
            raise LedgerError(
                f"payment {payment_id} was confirmed already, on "
                f"{payment.confirmed_at.date().isoformat()}"
            )
        payment.confirmed_at, payment.confirmed_given_by = now, given_by
        payment.confirmed_by_id = who.id
        session.add(payment)
        entry = session.get(LedgerEntry, payment.entry_id)
        person = session.get(AffectedPerson, payment.person_id)
        assert entry is not None and person is not None  # foreign keys
        append_audit(
            session,
            chain=case.reference,
            actor=f"stakeholder:{who.key}",
            action="ledger.payment_confirmed",
            at=now,
            subject_type="ledger_payment",
            subject_id=str(payment.id),
            details={
                "person": person.pseudonym,
                "kind": entry.kind.value,
                "currency": payment.currency,
                "amount": str(in_units(payment.amount, payment.currency)),
                "given_by": given_by,
                **who_of(operator),
            },
        )


def waive(
    case_ref: str,
    pseudonym: str,
    kind: OwedKind | str,
    currency: str,
    *,
    reason: str,
    by: str,
    now: datetime,
    operator: Operator | None = None,
) -> None:
    """Waive what one person is owed of a kind in a currency, with a reason; the case lead."""
    owed_kind = owed_kind_of(kind)
    try:
        code = check_currency(currency)
    except AmountError as exc:
        raise LedgerError(str(exc)) from None
    kept = trimmed(reason, REASON_MAX_CHARS + 1)
    if not kept:
        raise LedgerError("waiving an amount owed needs a reason (--reason)")
    if len(kept) > REASON_MAX_CHARS:
        raise LedgerError(f"the reason is longer than {REASON_MAX_CHARS} characters")
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        lead = lead_of(session, case, by, "waives an amount owed")
        person = person_of(session, case, pseudonym)
        entry = entry_of(session, case, person, owed_kind, code)
        if entry.waived_at is not None:
            raise LedgerError(f"{pseudonym} ({owed_kind.value}, {code}) is waived already")
        entry.waived_reason = seal_text(session, case.id, kept)
        entry.waived_by_id, entry.waived_at = lead.id, now
        session.add(entry)
        paid, confirmed = paid_of(session, entry.id)
        append_audit(
            session,
            chain=case.reference,
            actor=f"stakeholder:{lead.key}",
            action="ledger.waived",
            at=now,
            subject_type="ledger_entry",
            subject_id=str(entry.id),
            details={
                "person": pseudonym,
                "kind": owed_kind.value,
                "currency": code,
                "amount": str(in_units(entry.amount, code)),
                "paid": str(paid),
                "confirmed": str(confirmed),
                **who_of(operator),
            },
        )
