"""Receipts for filed reports: the code a reporter keeps, the follow-up it opens, the thread.

A receipt code is shown once and stored only as a keyed hash, so a copied table reveals no code
and a wrong code is simply an unknown one. Nothing here logs, raises or notifies with a report's
content, a message's text or the reporter's contact.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from models.enums import ClosedReason, Locale, ReporterStatus
from models.intake import ReportIn
from models.tables import Allegation, RemediationCase, ReporterMessage, ReporterReceipt
from tasks.intake import open_case
from tasks.reporter.notices import seal_contact, tell_case_team
from tasks.reporter.status import closed_reason, reporter_status
from tasks.store.audit import append_audit
from tasks.store.db import read_only, unit_of_work
from tasks.store.vault import Vault, get_vault

__all__ = [
    "MESSAGE_MAX_CHARS",
    "ClosedReason",
    "Filed",
    "FollowUp",
    "ReporterStatus",
    "ThreadMessage",
    "file_report",
    "follow_up",
    "reporter_writes",
]

MESSAGE_MAX_CHARS = 5000
# RFC 4648 base32: upper-case letters and 2-7, so 0/1/8 typed for O/I/B can be read back
BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
CODE_GROUPS = 7  # 28 characters, 140 bits
REF_GROUPS = 2  # R-2026-7KQ3-F2ZD: a public reference, unique, not a secret
_TYPOS = str.maketrans({"0": "O", "1": "I", "8": "B"})

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Filed:
    """What the reporter is shown once after filing: the public reference and the secret code."""

    receipt_ref: str  # public, names no case: "R-2026-7KQ3-F2ZD"
    code: str  # secret, >= 128 bits, groups of 4 upper-case base32 characters joined by '-'
    filed_at: datetime  # aware UTC


@dataclass(frozen=True)
class ThreadMessage:
    """One message of the thread between the reporter and the case team, decrypted for display."""

    from_reporter: bool
    at: datetime
    text: str


@dataclass(frozen=True)
class FollowUp:
    """What a receipt code shows: the status in plain language and the thread."""

    receipt_ref: str
    filed_at: datetime
    status: ReporterStatus
    closed_reason: ClosedReason | None
    reason_note: str | None
    acknowledged_at: datetime | None
    messages: list[ThreadMessage]  # oldest first
    can_reply: bool


def new_code() -> str:
    """Return a fresh receipt code: 7 groups of 4 base32 characters (140 bits)."""
    return _groups(CODE_GROUPS)


def _groups(n: int) -> str:
    return "-".join("".join(secrets.choice(BASE32) for _ in range(4)) for _ in range(n))


def normalise_code(code: str) -> str:
    """Read a code as typed: any case, spaces and dashes ignored, 0/1/8 read as O/I/B."""
    kept = "".join(ch for ch in code.upper() if not ch.isspace() and ch != "-")
    return kept.translate(_TYPOS)


def receipt_code_hash(vault: Vault, code: str) -> str:
    """Hash a receipt code (keyed, like approval codes: a copied table reveals no code)."""
    return vault.keyed_hash(f"receipt:{normalise_code(code)}".encode())


def reporter_locale(language: str) -> Locale:
    """The locale of the reporter's messages: the report's language if we write it, else English."""
    primary = language.split("-")[0].split("_")[0].lower()
    return Locale(primary) if primary in {loc.value for loc in Locale} else Locale.EN


def check_message(text: str) -> str:
    """Return a message as it is kept (trimmed); ValueError if empty or too long (no content)."""
    kept = text.strip()
    if not kept:
        raise ValueError("the message is empty")
    if len(kept) > MESSAGE_MAX_CHARS:
        raise ValueError(f"the message is longer than {MESSAGE_MAX_CHARS} characters")
    return kept


def file_report(
    report: ReportIn, *, now: datetime, actor: str, contact_ok: bool, start: bool = True
) -> Filed:
    """Open the case from a report, record its receipt and start the case's entry run.

    A duplicate report joins its case and still gets a receipt of its own (its run already
    exists). The code is stored only as a keyed hash. The case and the receipt are two
    transactions: should the receipt fail, the reporter files again and joins the same case.
    Once both are stored the receipt is returned whatever happens next: a run that cannot start
    (Prefect down) is audited and left to the monitoring sweep, which starts a case left at
    intake (tasks/monitoring/reconcile.py). Raises nothing that names the report's content.
    """
    opened = open_case(report, now=now, actor=actor)
    contact = report.reporter.contact if report.reporter and not report.anonymous else None
    filed = _record_receipt(
        opened.reference,
        contact=contact,
        contact_ok=contact_ok and contact is not None,
        locale=reporter_locale(report.language),
        duplicate=opened.duplicate,
        now=now,
        actor=actor,
    )
    if start and not opened.duplicate:
        _start_case(opened.reference, now=now, actor=actor)
    return filed


def _start_case(reference: str, *, now: datetime, actor: str) -> None:
    """Start the case's entry run, as `remedy intake` does; a failure is audited, not raised.

    The exception's text may quote what Prefect was sent, so only its type is kept.
    """
    from tasks.orchestration.runs import prefect_configured, start_case_run

    if not prefect_configured():
        return
    try:
        start_case_run(reference)
    except Exception as exc:  # Prefect down or refusing: the sweep starts the case later
        error = type(exc).__name__
        log.warning("%s: its run could not start (%s); the next sweep starts it", reference, error)
        with unit_of_work() as session:
            append_audit(
                session,
                chain=reference,
                actor=actor,
                action="reporter.start_failed",
                at=now,
                details={"error": error},
            )


def _record_receipt(
    reference: str,
    *,
    contact: str | None,
    contact_ok: bool,
    locale: Locale,
    duplicate: bool,
    now: datetime,
    actor: str,
) -> Filed:
    vault = get_vault()
    for _ in range(5):  # a reference or code already taken (vanishingly rare): draw again
        code = new_code()
        receipt_ref = f"R-{now.year}-{_groups(REF_GROUPS)}"
        try:
            with unit_of_work() as session:
                case = session.exec(
                    select(RemediationCase).where(RemediationCase.reference == reference)
                ).one()
                receipt = ReporterReceipt(
                    case_id=case.id,
                    receipt_ref=receipt_ref,
                    code_hash=receipt_code_hash(vault, code),
                    filed_at=now,
                    locale=locale,
                    contact_ok=contact_ok,
                    contact_ciphertext=seal_contact(vault, session, case.id, contact),
                )
                session.add(receipt)
                session.flush()
                append_audit(
                    session,
                    chain=reference,
                    actor=actor,
                    action="reporter.filed",
                    at=now,
                    subject_type="reporter_receipt",
                    subject_id=str(receipt.id),
                    details={
                        "receipt_ref": receipt_ref,
                        "duplicate": duplicate,
                        "contact_ok": contact_ok,
                    },
                )
        except IntegrityError:
            continue
        return Filed(receipt_ref=receipt_ref, code=code, filed_at=now)
    raise RuntimeError("no free receipt reference could be drawn")


def find_receipt(session: Session, code: str) -> ReporterReceipt | None:
    """Find a receipt by its code: an unknown and a wrong code are the same look-up, and miss."""
    digest = receipt_code_hash(get_vault(), code)
    return session.exec(select(ReporterReceipt).where(ReporterReceipt.code_hash == digest)).first()


def follow_up(code: str, *, now: datetime) -> FollowUp | None:
    """Return the follow-up for a receipt code; None for an unknown or a wrong code alike."""
    with read_only() as session:
        receipt = find_receipt(session, code)
        if receipt is None:
            return None
        return follow_up_of(session, receipt)


def follow_up_of(session: Session, receipt: ReporterReceipt) -> FollowUp:
    """Build what a receipt shows: the status, the reason the reporter may see, the thread."""
    vault = get_vault()
    case = session.get(RemediationCase, receipt.case_id)
    assert case is not None
    allegation = session.exec(select(Allegation).where(Allegation.case_id == case.id)).first()
    screening = allegation.screening_outcome if allegation else None
    status = reporter_status(case.state, held_from=case.held_from, closure_type=case.closure_type)
    note = None
    if receipt.reason_note_ciphertext:
        sealed = receipt.reason_note_ciphertext
        note = str(vault.decrypt_for_case(session, case.id, sealed)["text"])
    return FollowUp(
        receipt_ref=receipt.receipt_ref,
        filed_at=receipt.filed_at,
        status=status,
        closed_reason=closed_reason(status, closure_type=case.closure_type, screening=screening),
        reason_note=note,
        acknowledged_at=receipt.acknowledged_at,
        messages=thread_of(session, receipt, vault),
        can_reply=True,
    )


def thread_of(session: Session, receipt: ReporterReceipt, vault: Vault) -> list[ThreadMessage]:
    """Return a receipt's messages, oldest first, decrypted."""
    rows = session.exec(
        select(ReporterMessage)
        .where(ReporterMessage.receipt_id == receipt.id)
        .order_by(col(ReporterMessage.at), col(ReporterMessage.id))
    ).all()
    return [
        ThreadMessage(
            from_reporter=row.from_reporter,
            at=row.at,
            text=str(vault.decrypt_for_case(session, row.case_id, row.text_ciphertext)["text"]),
        )
        for row in rows
    ]


def reporter_writes(code: str, text: str, *, now: datetime) -> bool:
    """Add the reporter's message to the thread and tell the case team (no content).

    False for an unknown or a wrong code; ValueError for an empty or too long message.
    """
    kept = check_message(text)
    vault = get_vault()
    with unit_of_work() as session:
        receipt = find_receipt(session, code)
        if receipt is None:
            return False
        case = session.get(RemediationCase, receipt.case_id)
        assert case is not None
        message = ReporterMessage(
            receipt_id=receipt.id,
            case_id=case.id,
            from_reporter=True,
            at=now,
            text_ciphertext=vault.encrypt_for_case(session, case.id, {"text": kept}),
        )
        session.add(message)
        session.flush()
        append_audit(
            session,
            chain=case.reference,
            actor="reporter",
            action="reporter.message",
            at=now,
            subject_type="reporter_message",
            subject_id=str(message.id),
            details={"receipt_ref": receipt.receipt_ref},
        )
        tell_case_team(
            session, case=case, receipt=receipt, key=f"reporter-message:{message.id}", now=now
        )
    return True
