"""Retention and erasure of a case's personal data (docs/security.md, Retention and erasure).

Each category of personal data is kept a number of days from the case's closure ([retention] in
models/policy.toml). A case has one data key (tasks.store.vault), so:

- when a category's period ends before the longest, its values are overwritten in the store: a
  nullable column becomes NULL, a required one a marker sealed with the case's key (readers show
  "[erased: retention]"). A backup taken earlier keeps them until the key is destroyed.
- when the longest period ends, the case's data key is destroyed (crypto-shredding): everything
  it sealed, in every copy and backup, is unreadable for good.

A legal hold (set and released with a reason by the case lead or a senior approver) stops both, as
it stops a person's erasure; a reopened case (no closure date) is skipped. Every erasure is audited
on the case's chain with its categories and counts, never the data; figures, the audit and lessons
stay. An affected person's access and erasure requests (`export_person`, `erase_person`) go
through the case lead or the victims' representative.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlmodel import Session, SQLModel, col, select

from models.enums import Role
from models.ledger import LedgerEntry, Payment
from models.retention import LegalHold, RetentionErasure
from models.tables import (
    ActionPlan,
    AffectedPerson,
    Allegation,
    ClosureRecord,
    Decision,
    Lesson,
    PersonRemedyView,
    PlanAction,
    ProgressUpdate,
    RemediationCase,
    ReporterMessage,
    ReporterReceipt,
    SafetyAssessment,
    Stakeholder,
)
from tasks.context import current_policy
from tasks.store.audit import append_audit
from tasks.store.cases import get_case
from tasks.store.db import read_only, unit_of_work
from tasks.store.directory import acting_member, given_reason
from tasks.store.vault import CASE_PREFIX, Vault, destroy_case_key, get_vault

if TYPE_CHECKING:
    from tasks.actors import Operator

ERASED = "[erased: retention]"
ERASED_ON_REQUEST = "[erased: at the person's request]"
RETENTION = "system:retention"
REASON_LIMIT = 2000
HOLDERS = (Role.CASE_LEAD, Role.SENIOR_APPROVER)
REPRESENTATIVES = (Role.CASE_LEAD, Role.VICTIM_REPRESENTATIVE)


class RetentionError(Exception):
    """A hold, export or erasure is not allowed now or not by this person; says why, never
    quoting personal data."""


@dataclass
class RetentionReport:
    """What one retention pass did: categories erased per case, cases shredded, cases held."""

    erased: dict[str, list[str]] = field(default_factory=dict)
    shredded: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)


@dataclass
class PersonErased:
    """What a person's erasure overwrote (counts only)."""

    identity: bool
    views: int
    payment_references: int


# --- who may ------------------------------------------------------------------------------------


def check_member(
    session: Session, case: RemediationCase, key: str, roles: tuple[Role, ...], what: str
) -> Stakeholder:
    """Return the active stakeholder `key` if they hold one of `roles` on the case."""
    return acting_member(session, case, key, roles, what, RetentionError)


def checked_reason(reason: str, what: str) -> str:
    return given_reason(reason, what, limit=REASON_LIMIT, error=RetentionError)


def who_details(by: str, operator: Operator | None) -> dict[str, str]:
    return operator.audit_details() if operator else {}


def active_hold(session: Session, case_id: uuid.UUID) -> LegalHold | None:
    """Return the case's legal hold in force, if any."""
    return session.exec(
        select(LegalHold).where(LegalHold.case_id == case_id, col(LegalHold.released_at).is_(None))
    ).first()


# --- legal holds --------------------------------------------------------------------------------


def set_hold(
    case_ref: str, *, reason: str, by: str, now: datetime, operator: Operator | None = None
) -> None:
    """Put a legal hold on the case's data: retention and erasure stop until it is released."""
    text = checked_reason(reason, "a legal hold")
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        who = check_member(session, case, by, HOLDERS, "put a legal hold on its data")
        if active_hold(session, case.id) is not None:
            raise RetentionError(f"{case_ref} is already under a legal hold")
        hold = LegalHold(case_id=case.id, reason=text, set_by_id=who.id, set_at=now)
        session.add(hold)
        session.flush()
        append_audit(
            session,
            chain=case.reference,
            actor=f"stakeholder:{by}",
            action="case.data_hold_set",
            at=now,
            subject_type="legal_hold",
            subject_id=str(hold.id),
            details={"reason": text, **who_details(by, operator)},
        )


def release_hold(
    case_ref: str, *, reason: str, by: str, now: datetime, operator: Operator | None = None
) -> None:
    """Release the case's legal hold: retention applies again at the next sweep."""
    text = checked_reason(reason, "releasing a legal hold")
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        who = check_member(session, case, by, HOLDERS, "release a legal hold on its data")
        hold = active_hold(session, case.id)
        if hold is None:
            raise RetentionError(f"{case_ref} has no legal hold to release")
        hold.released_at = now
        hold.released_by_id = who.id
        hold.release_reason = text
        session.add(hold)
        append_audit(
            session,
            chain=case.reference,
            actor=f"stakeholder:{by}",
            action="case.data_hold_released",
            at=now,
            subject_type="legal_hold",
            subject_id=str(hold.id),
            details={"reason": text, **who_details(by, operator)},
        )


# --- the retention pass -------------------------------------------------------------------------


def seal_marker(vault: Vault, session: Session, case_id: uuid.UUID, name: str, marker: str) -> str:
    return vault.encrypt_for_case(session, case_id, {name: marker})


# Each category's sealed columns: (table, column, the payload's name for a required column whose
# value is replaced by a sealed marker; None: a nullable column, emptied).
COLUMNS: dict[str, tuple[tuple[type[SQLModel], str, str | None], ...]] = {
    "identity": (
        (AffectedPerson, "identity_ciphertext", None),
        (Payment, "reference_ciphertext", None),
    ),
    "contact": (
        (ReporterReceipt, "contact_ciphertext", None),
        (Allegation, "reporter_ciphertext", None),
    ),
    "narrative": ((Allegation, "description_ciphertext", "description"),),
    "messages": (
        (ReporterMessage, "text_ciphertext", "text"),
        (ReporterReceipt, "reason_note_ciphertext", None),
    ),
    # free text about persons and decisions (sealed with the case key: tasks/store/sealed.py);
    # what is inside a decision's payload goes with the case key
    "free_text": (
        (PersonRemedyView, "text_ciphertext", "text"),
        (Allegation, "screening_reason", None),
        (SafetyAssessment, "mitigation", None),
        (Decision, "reason", None),
        (ActionPlan, "victim_priorities", None),
        (PlanAction, "waived_reason", None),
        (PlanAction, "extension_reason", None),
        (ProgressUpdate, "note", None),
        (ClosureRecord, "victim_view", None),
        (ClosureRecord, "unmet_needs", None),
        (Lesson, "summary", None),
        (LedgerEntry, "waived_reason", None),
    ),
}


def _erase_category(
    session: Session,
    vault: Vault,
    case_id: uuid.UUID,
    category: str,
    marker: str,
    *,
    master_sealed_only: bool = False,
) -> int:
    """Overwrite one category's values of a case; return how many there were.

    `master_sealed_only`: only values the master key sealed (from before per-case keys), which
    destroying the case's key would not make unreadable.
    """
    n = 0
    for table, column, payload in COLUMNS[category]:
        query = select(table).where(table.__table__.c.case_id == case_id)  # type: ignore[attr-defined]
        for row in session.exec(query).all():
            token = getattr(row, column)
            if token is None or (master_sealed_only and token.startswith(CASE_PREFIX)):
                continue
            if payload is None:
                setattr(row, column, None)
            else:
                setattr(row, column, seal_marker(vault, session, case_id, payload, marker))
            session.add(row)
            n += 1
    session.flush()
    return n


def _retain_case(
    case_ref: str, now: datetime, periods: dict[str, int], report: RetentionReport
) -> None:
    vault = get_vault()
    longest = max(periods.values())
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        if case.closed_at is None:  # reopened meanwhile
            return
        done = set(
            session.exec(
                select(RetentionErasure.category).where(RetentionErasure.case_id == case.id)
            ).all()
        )
        if "key" in done:
            return
        due = [c for c, d in periods.items() if case.closed_at + timedelta(days=d) <= now]
        shred = case.closed_at + timedelta(days=longest) <= now
        todo = [c for c in due if c not in done and periods[c] < longest]
        if not todo and not shred:
            return
        if active_hold(session, case.id) is not None:
            report.held.append(case_ref)
            return
        for category in todo:
            n = _erase_category(session, vault, case.id, category, ERASED)
            session.add(
                RetentionErasure(case_id=case.id, category=category, values_erased=n, erased_at=now)
            )
            append_audit(
                session,
                chain=case.reference,
                actor=RETENTION,
                action="retention.erased",
                at=now,
                subject_type="case",
                subject_id=str(case.id),
                details={"category": category, "values": n, "days": periods[category]},
            )
            report.erased.setdefault(case_ref, []).append(category)
        if shred:
            for category in (c for c, d in periods.items() if d == longest):
                _erase_category(session, vault, case.id, category, ERASED, master_sealed_only=True)
            destroyed = destroy_case_key(session, case.id, now)
            session.add(RetentionErasure(case_id=case.id, category="key", erased_at=now))
            append_audit(
                session,
                chain=case.reference,
                actor=RETENTION,
                action="retention.key_destroyed",
                at=now,
                subject_type="case",
                subject_id=str(case.id),
                details={
                    "categories": [c for c, d in periods.items() if d == longest],
                    "days": longest,
                    "key_existed": destroyed,
                },
            )
            report.shredded.append(case_ref)


def apply_retention(*, now: datetime) -> RetentionReport:
    """Erase what each closed case has kept past its retention periods (docs/security.md,
    Retention and erasure); one transaction per case. Held cases are named in `held`."""
    periods = current_policy().retention.periods()
    earliest = now - timedelta(days=min(periods.values()))
    with read_only() as session:
        refs = session.exec(
            select(RemediationCase.reference)
            .where(
                col(RemediationCase.closed_at).is_not(None),
                col(RemediationCase.closed_at) <= earliest,
                col(RemediationCase.id).not_in(  # shredded: nothing is left to do
                    select(RetentionErasure.case_id).where(RetentionErasure.category == "key")
                ),
            )
            .order_by(col(RemediationCase.reference))
        ).all()
    report = RetentionReport()
    for ref in refs:
        _retain_case(ref, now, periods, report)
    return report
