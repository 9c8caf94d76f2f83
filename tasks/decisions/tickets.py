"""Who may resume a waiting run in a person's name, and what Prefect ever holds of it.

Prefect stores a resumed run's input in clear, readable by any client of its API. So the approval
page and `remedy decide` never put a person's code there: once the person has proved themselves
to Remedy (their code, their link and passkey), Remedy issues a **submission ticket**, a single-use
reference bound to one request and one approver, and resumes the run with that. The step consumes
the ticket when it records the submission, accepted or refused; a copy read from Prefect is worth
nothing. A code typed straight into the Prefect UI (operators holding the API credential) is
consumed the same way by any submission that presents it.

A failed attempt (wrong code, a replayed or unknown ticket, a name that may not decide) opens no
new round and sends nothing; attempts are counted per request and name, and the name is locked out
of the request at the policy's limit, with one audit event per lock (docs/security.md).
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from models.enums import DecisionRequestStatus, Role
from models.security import ApprovalAttempt, SubmissionTicket
from models.tables import (
    ApprovalCode,
    CaseMember,
    DecisionRequest,
    RemediationCase,
    Stakeholder,
)
from tasks.context import current_policy
from tasks.decisions.codes import code_hash, reissue_code
from tasks.store.audit import append_audit
from tasks.store.db import unit_of_work
from tasks.store.vault import get_vault

TICKET_PREFIX = "ref-"
# long enough to wait for the run to be suspended, short enough to be useless when copied later
TICKET_TTL = timedelta(minutes=10)


class AttemptFailedError(Exception):
    """A submission did not prove who it names; counted, and the request waits as it was."""

    def __init__(
        self, reason: str, *, replay: bool = False, expired_for: Stakeholder | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.replay = replay
        # the right person's code, too old: they get a fresh one (to their own channels)
        self.expired_for = expired_for


@dataclass(frozen=True)
class Proof:
    """Who a submission proved to be, and how."""

    approver: Stakeholder
    channel: str
    os_user: str | None = None


def is_ticket(presented: str) -> bool:
    return presented.startswith(TICKET_PREFIX)


def _ticket_hash(reference: str) -> str:
    return get_vault().keyed_hash(f"ticket:{reference}".encode())


def _approver(session: Session, request: DecisionRequest, key: str) -> Stakeholder:
    person = session.exec(select(Stakeholder).where(Stakeholder.key == key)).first()
    if person is None or not person.active or str(person.id) not in request.approver_ids:
        raise AttemptFailedError("the submitter is not a designated approver of this decision")
    return person


def _attempts(session: Session, request_id: uuid.UUID, submitter: str) -> ApprovalAttempt | None:
    return session.exec(
        select(ApprovalAttempt).where(
            ApprovalAttempt.request_id == request_id, ApprovalAttempt.submitter == submitter
        )
    ).first()


def _refuse_if_locked(session: Session, request_id: uuid.UUID, submitter: str) -> None:
    row = _attempts(session, request_id, submitter)
    if row is not None and row.locked_at is not None:
        raise AttemptFailedError(
            "too many failed attempts in this name: locked out of this decision; "
            "the case lead can issue a new code (`remedy decide CASE --reissue-for KEY`)"
        )


def check_presented(
    session: Session, request: DecisionRequest, submitter: str, presented: str, now: datetime
) -> Proof:
    """Check the ticket or code a submission presents for its approver; consume it.

    Consumed means for good: a later submission presenting it fails (a replay), whatever the
    rules then make of this one. Raises AttemptFailedError when it proves nothing.
    """
    _refuse_if_locked(session, request.id, submitter)
    approver = _approver(session, request, submitter)
    if is_ticket(presented):
        return _consume_ticket(session, request, approver, presented, now)
    _check_code(session, request, approver, presented, now)
    _consume_code(session, request, approver, now)
    # typed into the Prefect UI or sent to its API: only holders of the API credential can
    return Proof(approver, channel="prefect-api")


def _check_code(
    session: Session, request: DecisionRequest, approver: Stakeholder, code: str, now: datetime
) -> None:
    code_row = session.exec(
        select(ApprovalCode).where(
            ApprovalCode.request_id == request.id, ApprovalCode.stakeholder_id == approver.id
        )
    ).first()
    expected = code_hash(get_vault(), approver.id, code)
    if code_row is None or not hmac.compare_digest(code_row.code_hash, expected):
        if _spent_before(session, approver, expected):
            # a code this person used up on an earlier round: someone read it somewhere
            raise AttemptFailedError("the approval code was used already", replay=True)
        raise AttemptFailedError("the approval code is wrong")
    if code_row.used_at is not None:
        raise AttemptFailedError("the approval code was used already", replay=True)
    if code_row.expires_at <= now:
        raise AttemptFailedError(
            "the approval code has expired; a new one has been sent", expired_for=approver
        )


def _spent_before(session: Session, approver: Stakeholder, expected: str) -> bool:
    spent = session.exec(
        select(ApprovalCode.id).where(
            ApprovalCode.stakeholder_id == approver.id,
            ApprovalCode.code_hash == expected,
            col(ApprovalCode.used_at).is_not(None),
        )
    ).first()
    return spent is not None


def _consume_ticket(
    session: Session,
    request: DecisionRequest,
    approver: Stakeholder,
    presented: str,
    now: datetime,
) -> Proof:
    ticket = session.exec(
        select(SubmissionTicket)
        .where(SubmissionTicket.token_hash == _ticket_hash(presented))
        .with_for_update()
    ).first()
    if ticket is None or ticket.request_id != request.id or ticket.stakeholder_id != approver.id:
        raise AttemptFailedError("the submission reference is not valid for this decision")
    if ticket.consumed_at is not None:
        raise AttemptFailedError("the submission reference was used already", replay=True)
    if ticket.expires_at <= now:
        raise AttemptFailedError("the submission reference has expired; submit again")
    ticket.consumed_at = now
    session.add(ticket)
    return Proof(approver, channel=ticket.channel, os_user=ticket.os_user)


def _consume_code(
    session: Session, request: DecisionRequest, approver: Stakeholder, now: datetime
) -> None:
    code_row = session.exec(
        select(ApprovalCode)
        .where(ApprovalCode.request_id == request.id, ApprovalCode.stakeholder_id == approver.id)
        .with_for_update()
    ).one()
    code_row.used_at = now
    session.add(code_row)


def record_failure(
    session: Session,
    case: RemediationCase,
    request: DecisionRequest,
    submitter: str,
    failure: AttemptFailedError,
    now: datetime,
) -> bool:
    """Count a failed attempt in a name; lock the name out of the request at the limit.

    Audits a replay (a consumed code or ticket presented again: someone read it somewhere) and
    the lock, never each wrong guess. Returns whether the name is locked now.
    """
    name = submitter[:64] or "unknown"
    row = _attempts(session, request.id, name)
    if row is None:
        row = ApprovalAttempt(request_id=request.id, submitter=name, last_failed_at=now)
    row.failures += 1
    row.last_failed_at = now
    details = {"kind": request.kind.value, "round": request.round, "named": name}
    if failure.replay:
        append_audit(
            session,
            chain=case.reference,
            actor="system:remedy",
            action="decision.replay_refused",
            at=now,
            subject_type="decision_request",
            subject_id=str(request.id),
            details={**details, "reason": failure.reason},
        )
    locked_now = (
        row.locked_at is None and row.failures >= current_policy().approvals.max_failed_attempts
    )
    if locked_now:
        row.locked_at = now
        append_audit(
            session,
            chain=case.reference,
            actor="system:remedy",
            action="decision.attempts_locked",
            at=now,
            subject_type="decision_request",
            subject_id=str(request.id),
            details={**details, "failures": row.failures},
        )
    session.add(row)
    if failure.expired_for is not None and row.locked_at is None:
        reissue_code(session, case=case, request=request, person=failure.expired_for, now=now)
    return row.locked_at is not None


def _new_ticket(
    session: Session,
    request: DecisionRequest,
    approver: Stakeholder,
    *,
    channel: str,
    now: datetime,
    os_user: str | None,
) -> str:
    reference = TICKET_PREFIX + secrets.token_urlsafe(18)
    session.add(
        SubmissionTicket(
            request_id=request.id,
            stakeholder_id=approver.id,
            token_hash=_ticket_hash(reference),
            channel=channel,
            os_user=os_user,
            created_at=now,
            expires_at=now + TICKET_TTL,
        )
    )
    return reference


def _waiting(session: Session, request_id: uuid.UUID) -> DecisionRequest:
    request = session.exec(
        select(DecisionRequest).where(DecisionRequest.id == request_id).with_for_update()
    ).first()
    if request is None or request.status != DecisionRequestStatus.WAITING:
        raise AttemptFailedError("this decision is not waiting any more (taken or replaced)")
    return request


def issue_ticket(
    request_id: uuid.UUID,
    approver_key: str,
    *,
    channel: str,
    now: datetime,
    os_user: str | None = None,
) -> str:
    """Issue a single-use submission reference for an approver who proved themselves.

    The caller has checked the proof (the person's link, and passkey where the policy asks).
    Raises AttemptFailedError when the request no longer waits or the name may not decide it.
    """
    with unit_of_work() as session:
        request = _waiting(session, request_id)
        _refuse_if_locked(session, request.id, approver_key)
        approver = _approver(session, request, approver_key)
        return _new_ticket(session, request, approver, channel=channel, now=now, os_user=os_user)


def withdraw_ticket(reference: str) -> None:
    """Delete a ticket that was never presented (its submission did not reach the run)."""
    with unit_of_work() as session:
        ticket = session.exec(
            select(SubmissionTicket).where(SubmissionTicket.token_hash == _ticket_hash(reference))
        ).first()
        if ticket is not None and ticket.consumed_at is None:
            session.delete(ticket)


def redeem_code(
    request_id: uuid.UUID,
    approver_key: str,
    code: str,
    *,
    channel: str,
    now: datetime,
    os_user: str | None = None,
) -> str:
    """Exchange a person's code for a submission ticket (for `remedy decide` and scripts).

    The code never reaches Prefect, so it is not used up: a submission the rules refuse can be
    corrected and sent again with it, as on the approval page. A wrong code is counted against
    the name (and may lock it) and raises AttemptFailedError; nothing reaches Prefect, no round
    is opened and nobody is messaged.
    """
    failure: AttemptFailedError | None = None
    reference = ""
    with unit_of_work() as session:
        request = _waiting(session, request_id)
        case = session.get(RemediationCase, request.case_id)
        assert case is not None
        try:
            _refuse_if_locked(session, request.id, approver_key)
            approver = _approver(session, request, approver_key)
            _check_code(session, request, approver, code, now)
            reference = _new_ticket(
                session, request, approver, channel=channel, now=now, os_user=os_user
            )
        except AttemptFailedError as exc:
            record_failure(session, case, request, approver_key, exc, now)
            failure = exc  # raised after the count is committed
    if failure is not None:
        raise failure
    return reference


def reissue(
    request_id: uuid.UUID,
    person_key: str,
    *,
    by: str,
    now: datetime,
    os_user: str | None = None,
) -> None:
    """Send an approver a new code for a waiting request, lifting a lock; the case lead's act.

    Audited in the case lead's name. Raises AttemptFailedError when the request does not wait,
    the person may not decide it, or `by` is not a case lead of the case.
    """
    with unit_of_work() as session:
        request = _waiting(session, request_id)
        case = session.get(RemediationCase, request.case_id)
        assert case is not None
        person = _approver(session, request, person_key)
        lead = session.exec(
            select(Stakeholder)
            .join(CaseMember, col(CaseMember.stakeholder_id) == col(Stakeholder.id))
            .where(
                Stakeholder.key == by,
                CaseMember.case_id == case.id,
                CaseMember.role == Role.CASE_LEAD,
            )
        ).first()
        if lead is None:
            raise AttemptFailedError(f"{by} is not a case lead of {case.reference}")
        row = _attempts(session, request.id, person.key)
        if row is not None:
            session.delete(row)
        reissue_code(session, case=case, request=request, person=person, now=now)
        append_audit(
            session,
            chain=case.reference,
            actor=f"stakeholder:{lead.key}",
            action="decision.code_reissued",
            at=now,
            subject_type="decision_request",
            subject_id=str(request.id),
            details={
                "kind": request.kind.value,
                "round": request.round,
                "approver": person.key,
                "was_locked": row is not None and row.locked_at is not None,
                **({"os_user": os_user} if os_user else {}),
            },
        )
