"""Checking a submitted decision and recording it with its consequences, or refusing it.

`record_submission` checks who submitted the form (designated approver, the code or submission
ticket they present, which it consumes: tasks/decisions/tickets.py; their role), hands it to the
decision's handler from the steps' table, and records the decision in the same unit of work. A
submission the rules refuse is audited and the next round is asked, so a person's input never
fails the step; one that proves nothing is counted and the same round waits again.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlmodel import Session, col, select

from models.enums import DecisionRequestStatus, NotificationEvent
from models.forms import ApprovalForm
from models.tables import (
    ApprovalLink,
    CaseMember,
    Decision,
    DecisionRequest,
    RemediationCase,
    Stakeholder,
)
from notifications.outbox import notify
from tasks.context import current_policy, current_routing
from tasks.decisions.codes import request_context
from tasks.decisions.requests import (
    DecisionView,
    decision_view,
    designated_approvers,
    open_round,
    suspend_key_for,
)
from tasks.decisions.tickets import AttemptFailedError, Proof, check_presented, record_failure
from tasks.steps.base import HandlerContext, RefusedError
from tasks.steps.table import spec_of
from tasks.store.audit import append_audit
from tasks.store.cases import get_case
from tasks.store.db import read_only, unit_of_work
from tasks.store.sealed import seal_payload, seal_text


class SubmissionResult(BaseModel):
    accepted: bool
    reason: str | None = None
    # the submission proved nothing (wrong code, replayed reference): the same round waits
    attempt_failed: bool = False
    decision: DecisionView | None = None


def _check_role(session: Session, request: DecisionRequest, approver: Stakeholder) -> None:
    roles = set(
        session.exec(
            select(CaseMember.role).where(
                CaseMember.case_id == request.case_id, CaseMember.stakeholder_id == approver.id
            )
        ).all()
    )
    if not roles & set(spec_of(request.kind).roles):
        raise RefusedError("the approver no longer holds a role that may take this decision")


def record_submission(
    request_id: uuid.UUID, submission: dict[str, Any], *, now: datetime
) -> SubmissionResult:
    """Check a submitted form and record the decision with its consequences, or refuse it."""
    with unit_of_work() as session:
        # lock the case first, then the request: the same order as prepare_decision
        case_id = session.exec(
            select(DecisionRequest.case_id).where(DecisionRequest.id == request_id)
        ).one()
        case = get_case(session, _case_ref(session, case_id), lock=True)
        request = session.exec(
            select(DecisionRequest).where(DecisionRequest.id == request_id).with_for_update()
        ).one()
        submitter = str(submission.get("approver", ""))[:64]
        if request.status != DecisionRequestStatus.WAITING:
            reason = (
                "this decision was already taken"
                if request.status == DecisionRequestStatus.DECIDED
                else "this request was replaced by a newer one; use the latest notification"
            )
            actor = f"submitter:{submitter or 'unknown'}"  # unproven: the name the form gave
            _audit_refusal(session, case, request, actor, reason, now)
            return SubmissionResult(accepted=False, reason=reason)
        try:
            form = spec_of(request.kind).form.model_validate(submission)
            # the code or ticket is consumed here, for good, whatever the rules then say
            proof = check_presented(session, request, form.approver, form.approval_code, now)
        except ValidationError:
            failed = AttemptFailedError("the form is incomplete")
            return _failed_attempt(session, case, request, submitter, failed, now)
        except AttemptFailedError as exc:
            return _failed_attempt(session, case, request, submitter, exc, now)
        approver = proof.approver
        try:
            _check_role(session, request, approver)
            with session.begin_nested():
                decision = Decision(
                    case_id=case.id,
                    request_id=request.id,
                    kind=request.kind,
                    step=request.step,
                    outcome="pending",
                    payload={},
                    approver_id=approver.id,
                    decided_at=now,
                )
                ctx = HandlerContext(session, case, request, form, approver, now, current_policy())
                verdict = spec_of(request.kind).handle(ctx)
                decision.outcome = verdict.outcome
                decision.payload = seal_payload(session, case.id, verdict.payload or _payload(form))
                decision.reason = seal_text(session, case.id, _reason_of(form))
                session.add(decision)
                request.status = DecisionRequestStatus.DECIDED
                request.decided_at = now
                session.add(request)
                session.flush()
        except RefusedError as exc:
            return _refuse(session, case, request, f"stakeholder:{approver.key}", exc.reason, now)
        append_audit(
            session,
            chain=case.reference,
            actor=f"stakeholder:{approver.key}",
            action="decision.taken",
            at=now,
            subject_type="decision",
            subject_id=str(decision.id),
            details={
                "kind": request.kind.value,
                "round": request.round,
                "outcome": verdict.outcome,
                **_proof_details(proof),
            },
        )
        _notify_decided(session, case, request, decision, approver, now)
        if not verdict.final:
            open_round(
                session,
                case=case,
                kind=request.kind,
                scope=request.scope,
                step=case.step,
                flow_run_id=request.flow_run_id,
                approvers=stakeholders_of(session, request.approver_ids),
                now=now,
            )
        return SubmissionResult(accepted=True, decision=decision_view(session, decision))


def _proof_details(proof: Proof) -> dict[str, str]:
    """How the person proved themselves, for the audit: the channel, and the OS user if any."""
    return {"via": proof.channel, **({"os_user": proof.os_user} if proof.os_user else {})}


def _failed_attempt(
    session: Session,
    case: RemediationCase,
    request: DecisionRequest,
    submitter: str,
    failure: AttemptFailedError,
    now: datetime,
) -> SubmissionResult:
    """Count a submission that proved nothing; the same round waits again, under a fresh key.

    No new round and no message: a wrong guess costs nobody else anything (the run resumed, so
    Prefect will not take the old key again; the request's links and codes stay as they were).
    """
    record_failure(session, case, request, submitter, failure, now)
    request.tries += 1
    request.suspend_key = suspend_key_for(
        request.kind, case.reference, request.round, request.tries
    )
    session.add(request)
    return SubmissionResult(accepted=False, reason=failure.reason, attempt_failed=True)


def _payload(form: ApprovalForm) -> dict[str, Any]:
    return form.decided()


def _reason_of(form: ApprovalForm) -> str | None:
    for name in ("reason", "override_reason", "comments"):
        value = getattr(form, name, "")
        if isinstance(value, str) and value.strip():
            return value.strip()[:4000]
    return None


def _case_ref(session: Session, case_id: uuid.UUID) -> str:
    case = session.get(RemediationCase, case_id)
    assert case is not None
    return case.reference


def stakeholders_of(session: Session, ids: list[str]) -> list[Stakeholder]:
    uuids = [uuid.UUID(i) for i in ids]
    rows = session.exec(select(Stakeholder).where(col(Stakeholder.id).in_(uuids))).all()
    return sorted(rows, key=lambda s: s.key)


def _audit_refusal(
    session: Session,
    case: RemediationCase,
    request: DecisionRequest,
    actor: str,
    reason: str,
    now: datetime,
) -> None:
    append_audit(
        session,
        chain=case.reference,
        actor=actor,
        action="decision.refused",
        at=now,
        subject_type="decision_request",
        subject_id=str(request.id),
        details={"kind": request.kind.value, "round": request.round, "reason": reason},
    )


def _refuse(
    session: Session,
    case: RemediationCase,
    request: DecisionRequest,
    actor: str,
    reason: str,
    now: datetime,
) -> SubmissionResult:
    """Audit a refused submission and open the next round: the step asks again, never fails."""
    _audit_refusal(session, case, request, actor, reason, now)
    request.status = DecisionRequestStatus.SUPERSEDED
    session.add(request)
    session.flush()
    approvers = stakeholders_of(session, request.approver_ids)
    current = designated_approvers(session, case.id, request.kind, exclude=set())
    if current and not {p.id for p in approvers} & {p.id for p in current}:
        # nobody asked can decide any more (roles changed): ask who holds the role now, or the
        # next round would wait forever; four eyes stay enforced by the closure handlers
        approvers = current
    nxt = open_round(
        session,
        case=case,
        kind=request.kind,
        scope=request.scope,
        step=request.step,
        flow_run_id=request.flow_run_id,
        approvers=approvers,
        now=now,
        carry_from=request,
    )
    new_links = session.exec(select(ApprovalLink).where(ApprovalLink.request_id == nxt.id)).all()
    notify(
        session,
        routing=current_routing(),
        event=NotificationEvent.DECISION_REFUSED,
        case=case,
        key=f"decision-refused:{request.id}",
        now=now,
        approvers=approvers,
        private={link.stakeholder_id: {"link_id": str(link.id)} for link in new_links},
        context={**request_context(case, nxt), "reason": reason},
    )
    return SubmissionResult(accepted=False, reason=reason)


def _notify_decided(
    session: Session,
    case: RemediationCase,
    request: DecisionRequest,
    decision: Decision,
    approver: Stakeholder,
    now: datetime,
) -> None:
    notify(
        session,
        routing=current_routing(),
        event=NotificationEvent.DECISION_TAKEN,
        case=case,
        key=f"decision-taken:{decision.id}",
        now=now,
        context={
            **request_context(case, request),
            "outcome": decision.outcome,
            "approver": approver.key,
        },
    )


def refusal_reason(request_id: uuid.UUID) -> str | None:
    """Return why a submission for a request was refused, from the audit chain."""
    from models.tables import AuditEvent

    with read_only() as session:
        row = session.exec(
            select(AuditEvent)
            .where(
                AuditEvent.action == "decision.refused",
                AuditEvent.subject_id == str(request_id),
            )
            .order_by(col(AuditEvent.seq).desc())
        ).first()
        return str(row.details.get("reason")) if row else None
