"""The case team's side of the reporter's thread: read it, acknowledge, reply, add a note.

Only the people who may speak to the reporter for the case (its case lead and the victims'
representative) read or write the thread; everything they do is audited without content. The
first reply acknowledges the report unless an explicit acknowledgement came first. The reporter
hears that there is news when they agreed to (tasks.reporter.notices), never what it is.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from models.enums import Role
from models.tables import (
    CaseMember,
    RemediationCase,
    ReporterMessage,
    ReporterReceipt,
    Stakeholder,
)
from tasks.actors import Operator
from tasks.reporter.notices import is_email, tell_reporter
from tasks.reporter.receipts import FollowUp, check_message, follow_up_of
from tasks.store.audit import append_audit
from tasks.store.cases import get_case
from tasks.store.db import unit_of_work
from tasks.store.vault import get_vault

# who may read and write to the reporter for a case
WRITERS = frozenset({Role.CASE_LEAD, Role.VICTIM_REPRESENTATIVE})
NOTE_MAX_CHARS = 2000


class ReporterNotAllowed(Exception):
    """The person may not read or write the reporter's thread of this case."""


class ReporterError(Exception):
    """The command cannot be done as asked (no receipt, or several and none named)."""


@dataclass(frozen=True)
class StaffMessage:
    """One message as the case team sees it: who wrote it (a stakeholder key, or the reporter)."""

    from_reporter: bool
    at: datetime
    author: str | None
    text: str


@dataclass(frozen=True)
class StaffThread:
    """One receipt of a case, as the case team sees it."""

    receipt_ref: str
    filed_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    contact_ok: bool  # agreed to be told of news by e-mail, and gave an e-mail address
    follow_up: FollowUp  # what the reporter sees with their code
    messages: list[StaffMessage]


@dataclass(frozen=True)
class Replied:
    """What a reply did: on which receipt, whether it acknowledged the report, whether the
    reporter will be told by e-mail that there is news."""

    receipt_ref: str
    acknowledged: bool
    reporter_told: bool


def _writer(session: Session, case: RemediationCase, by: str) -> Stakeholder:
    person = session.exec(select(Stakeholder).where(Stakeholder.key == by)).first()
    if person is None or not person.active:
        raise ReporterNotAllowed(f"there is no active stakeholder {by}")
    roles = set(
        session.exec(
            select(CaseMember.role).where(
                CaseMember.case_id == case.id, CaseMember.stakeholder_id == person.id
            )
        ).all()
    )
    if not roles & WRITERS:
        allowed = " or ".join(sorted(r.value for r in WRITERS))
        raise ReporterNotAllowed(
            f"{by} may not read or write to the reporter of {case.reference}: that needs the "
            f"{allowed} role on the case (remedy members add)"
        )
    return person


def _receipts(session: Session, case: RemediationCase) -> list[ReporterReceipt]:
    return list(
        session.exec(
            select(ReporterReceipt)
            .where(ReporterReceipt.case_id == case.id)
            .order_by(col(ReporterReceipt.filed_at), col(ReporterReceipt.receipt_ref))
        ).all()
    )


def _one_receipt(
    session: Session, case: RemediationCase, receipt_ref: str | None
) -> ReporterReceipt:
    receipts = _receipts(session, case)
    if receipt_ref is not None:
        for receipt in receipts:
            if receipt.receipt_ref == receipt_ref.strip().upper():
                return receipt
        raise ReporterError(f"{case.reference} has no receipt {receipt_ref}")
    if not receipts:
        raise ReporterError(f"{case.reference} has no reporter's receipt (no report was filed)")
    if len(receipts) > 1:
        refs = ", ".join(r.receipt_ref for r in receipts)
        raise ReporterError(
            f"{case.reference} has several receipts ({refs}): name one with --receipt"
        )
    return receipts[0]


def _details(receipt: ReporterReceipt, operator: Operator | None, **more: Any) -> dict[str, Any]:
    return {"receipt_ref": receipt.receipt_ref, **more} | (
        operator.audit_details() if operator else {}
    )


def threads(
    case_ref: str, *, by: str, now: datetime, operator: Operator | None = None
) -> list[StaffThread]:
    """Return every receipt of a case with its thread, decrypted (the read is audited)."""
    vault = get_vault()
    with unit_of_work() as session:
        case = get_case(session, case_ref)
        _writer(session, case, by)
        keys = {s.id: s.key for s in session.exec(select(Stakeholder)).all()}
        found = []
        for receipt in _receipts(session, case):
            rows = session.exec(
                select(ReporterMessage)
                .where(ReporterMessage.receipt_id == receipt.id)
                .order_by(col(ReporterMessage.at), col(ReporterMessage.id))
            ).all()
            contact = None
            if receipt.contact_ciphertext:
                sealed = receipt.contact_ciphertext
                contact = vault.decrypt_for_case(session, case.id, sealed).get("contact")
            found.append(
                StaffThread(
                    receipt_ref=receipt.receipt_ref,
                    filed_at=receipt.filed_at,
                    acknowledged_at=receipt.acknowledged_at,
                    acknowledged_by=keys.get(receipt.acknowledged_by_id)
                    if receipt.acknowledged_by_id
                    else None,
                    contact_ok=receipt.contact_ok and is_email(contact),
                    follow_up=follow_up_of(session, receipt),
                    messages=[
                        StaffMessage(
                            from_reporter=row.from_reporter,
                            at=row.at,
                            author=keys.get(row.author_id) if row.author_id else None,
                            text=str(
                                vault.decrypt_for_case(session, case.id, row.text_ciphertext)[
                                    "text"
                                ]
                            ),
                        )
                        for row in rows
                    ],
                )
            )
        append_audit(
            session,
            chain=case.reference,
            actor=f"stakeholder:{by}",
            action="reporter.read",
            at=now,
            subject_type="remediation_case",
            subject_id=str(case.id),
            details={"receipts": len(found)} | (operator.audit_details() if operator else {}),
        )
        return found


def _acknowledge(
    session: Session,
    case: RemediationCase,
    receipt: ReporterReceipt,
    person: Stakeholder,
    *,
    now: datetime,
    operator: Operator | None,
    by_reply: bool,
) -> bool:
    if receipt.acknowledged_at is not None:
        return False
    receipt.acknowledged_at = now
    receipt.acknowledged_by_id = person.id
    session.add(receipt)
    append_audit(
        session,
        chain=case.reference,
        actor=f"stakeholder:{person.key}",
        action="reporter.acknowledged",
        at=now,
        subject_type="reporter_receipt",
        subject_id=str(receipt.id),
        details=_details(receipt, operator, by_reply=by_reply),
    )
    return True


def acknowledge(
    case_ref: str,
    *,
    by: str,
    now: datetime,
    receipt_ref: str | None = None,
    operator: Operator | None = None,
) -> Replied:
    """Acknowledge a report to its reporter (once; a later call changes nothing)."""
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        person = _writer(session, case, by)
        receipt = _one_receipt(session, case, receipt_ref)
        done = _acknowledge(
            session, case, receipt, person, now=now, operator=operator, by_reply=False
        )
        told = done and tell_reporter(
            session, receipt=receipt, key=f"reporter-news:ack:{receipt.id}", now=now
        )
        return Replied(receipt.receipt_ref, acknowledged=done, reporter_told=told)


def reply(
    case_ref: str,
    text: str,
    *,
    by: str,
    now: datetime,
    receipt_ref: str | None = None,
    operator: Operator | None = None,
) -> Replied:
    """Write to the reporter (encrypted); the first reply acknowledges the report too."""
    kept = check_message(text)
    vault = get_vault()
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        person = _writer(session, case, by)
        receipt = _one_receipt(session, case, receipt_ref)
        message = ReporterMessage(
            id=uuid.uuid4(),
            receipt_id=receipt.id,
            case_id=case.id,
            from_reporter=False,
            at=now,
            author_id=person.id,
            text_ciphertext=vault.encrypt_for_case(session, case.id, {"text": kept}),
        )
        session.add(message)
        session.flush()
        append_audit(
            session,
            chain=case.reference,
            actor=f"stakeholder:{person.key}",
            action="reporter.reply",
            at=now,
            subject_type="reporter_message",
            subject_id=str(message.id),
            details=_details(receipt, operator),
        )
        acknowledged = _acknowledge(
            session, case, receipt, person, now=now, operator=operator, by_reply=True
        )
        told = tell_reporter(
            session, receipt=receipt, key=f"reporter-news:reply:{message.id}", now=now
        )
        return Replied(receipt.receipt_ref, acknowledged=acknowledged, reporter_told=told)


def set_note(
    case_ref: str,
    text: str,
    *,
    by: str,
    now: datetime,
    receipt_ref: str | None = None,
    operator: Operator | None = None,
) -> list[str]:
    """Set the note the reporter sees with the status (every receipt of the case, or one).

    Returns the receipts changed. An empty text removes the note.
    """
    kept = text.strip()
    if len(kept) > NOTE_MAX_CHARS:
        raise ValueError(f"the note is longer than {NOTE_MAX_CHARS} characters")
    vault = get_vault()
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        person = _writer(session, case, by)
        if receipt_ref is not None:
            receipts = [_one_receipt(session, case, receipt_ref)]
        else:
            receipts = _receipts(session, case)
            if not receipts:
                raise ReporterError(f"{case.reference} has no reporter's receipt")
        stamp = f"{now:%Y%m%dT%H%M%S%f}"
        for receipt in receipts:
            receipt.reason_note_ciphertext = (
                vault.encrypt_for_case(session, case.id, {"text": kept}) if kept else None
            )
            session.add(receipt)
            append_audit(
                session,
                chain=case.reference,
                actor=f"stakeholder:{person.key}",
                action="reporter.note",
                at=now,
                subject_type="reporter_receipt",
                subject_id=str(receipt.id),
                details=_details(receipt, operator, cleared=not kept),
            )
            if kept:
                key = f"reporter-news:note:{receipt.id}:{stamp}"
                tell_reporter(session, receipt=receipt, key=key, now=now)
        return [r.receipt_ref for r in receipts]
