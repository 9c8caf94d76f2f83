"""Waiting decisions: requests mirrored from Prefect, one-time approval codes, and verdicts.

A step asks for a decision with `prepare_decision` (idempotent: the same request comes back until
it is decided), suspends its run with the request's key, and on resume hands the submitted form to
`record_submission`, which checks who submitted it and either records the decision together with
its consequences, or refuses it, audits the refusal and opens the next round.
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlmodel import Session, col, select

from models.enums import (
    CaseState,
    DecisionKind,
    DecisionRequestStatus,
    LinkPurpose,
    NotificationEvent,
    Severity,
)
from models.forms import APPROVER_ROLES, DECISION_TITLES, FORMS, ApprovalForm
from models.policy import Policy, decision_due
from models.tables import (
    ApprovalCode,
    ApprovalLink,
    CaseMember,
    Decision,
    DecisionRequest,
    RemediationCase,
    Stakeholder,
)
from notifications.outbox import notify
from tasks.audit import append_audit
from tasks.cases import get_case
from tasks.context import current_policy, current_routing
from tasks.db import read_only, unit_of_work
from tasks.links import create_link
from tasks.vault import Vault, get_vault

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I to misread
CODE_LENGTH = 8


class NoApproverError(RuntimeError):
    """Nobody on the case holds a role that may take this decision."""


class StepLeftError(RuntimeError):
    """The case left the step that asks: nothing is asked any more (a run caught in a race)."""


class RefusedError(Exception):
    """A submission breaks a rule of its decision; `reason` tells the approver what to change."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DecisionView(BaseModel):
    """A recorded decision, as flows and commands see it (references only)."""

    id: uuid.UUID
    request_id: uuid.UUID | None
    kind: DecisionKind
    outcome: str
    approver_id: uuid.UUID
    approver: str
    decided_at: datetime


class Pending(BaseModel):
    """What a step needs to wait for a decision, or the decision if it was already taken."""

    case_ref: str
    kind: DecisionKind
    request_id: uuid.UUID
    round: int
    suspend_key: str
    due_at: datetime | None
    description: str
    initial: dict[str, Any] = {}
    decision: DecisionView | None = None
    # the run this request waited in before (crashed or lost): its submission may be there
    previous_flow_run_id: uuid.UUID | None = None


class SubmissionResult(BaseModel):
    accepted: bool
    reason: str | None = None
    decision: DecisionView | None = None


def new_code() -> str:
    """Return a fresh one-time approval code."""
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def code_hash(vault: Vault, stakeholder_id: uuid.UUID, code: str) -> str:
    """Hash a code for one stakeholder (keyed: a copied table does not reveal codes)."""
    normalised = code.strip().upper().replace("-", "").replace(" ", "")
    return vault.keyed_hash(f"approval:{stakeholder_id}:{normalised}".encode())


def suspend_key_for(kind: DecisionKind, reference: str, round_: int) -> str:
    """Return the suspend key: lowercase letters, digits and dashes only (design.md §9)."""
    return f"{kind.value.replace('_', '-')}-{reference.lower()}-r{round_}"


def designated_approvers(
    session: Session, case_id: uuid.UUID, kind: DecisionKind, *, exclude: set[uuid.UUID]
) -> list[Stakeholder]:
    """Return the case's members who may take a decision of this kind."""
    rows = session.exec(
        select(Stakeholder)
        .join(CaseMember, col(CaseMember.stakeholder_id) == col(Stakeholder.id))
        .where(
            CaseMember.case_id == case_id,
            col(CaseMember.role).in_(APPROVER_ROLES[kind]),
            Stakeholder.active == True,  # noqa: E712
        )
        .order_by(col(Stakeholder.key))
    ).all()
    seen: dict[uuid.UUID, Stakeholder] = {}
    for person in rows:
        if person.id not in exclude:
            seen.setdefault(person.id, person)
    return list(seen.values())


def _view(session: Session, decision: Decision) -> DecisionView:
    approver = session.get(Stakeholder, decision.approver_id)
    return DecisionView(
        id=decision.id,
        request_id=decision.request_id,
        kind=decision.kind,
        outcome=decision.outcome,
        approver_id=decision.approver_id,
        approver=approver.key if approver else "?",
        decided_at=decision.decided_at,
    )


def _latest_request(
    session: Session, case_id: uuid.UUID, kind: DecisionKind, scope: str
) -> DecisionRequest | None:
    return session.exec(
        select(DecisionRequest)
        .where(
            DecisionRequest.case_id == case_id,
            DecisionRequest.kind == kind,
            DecisionRequest.scope == scope,
        )
        .order_by(col(DecisionRequest.round).desc())
    ).first()


def _decision_of(session: Session, request_id: uuid.UUID) -> Decision | None:
    return session.exec(
        select(Decision)
        .where(Decision.request_id == request_id)
        .order_by(col(Decision.decided_at).desc())
    ).first()


# Describers and initial-data providers are registered by tasks.steps (kind -> function).
Describer = Callable[[Session, RemediationCase, DecisionRequest], str]
InitialData = Callable[[Session, RemediationCase], dict[str, Any]]
DESCRIBERS: dict[DecisionKind, Describer] = {}
INITIAL_DATA: dict[DecisionKind, InitialData] = {}


def _describe(session: Session, case: RemediationCase, request: DecisionRequest) -> str:
    title = DECISION_TITLES[request.kind]
    roles = " or ".join(r.value.replace("_", " ") for r in APPROVER_ROLES[request.kind])
    keys = ", ".join(_approver_keys(session, request))
    due = f"{request.due_at:%Y-%m-%d %H:%M} UTC" if request.due_at else "no deadline"
    body = DESCRIBERS[request.kind](session, case, request) if request.kind in DESCRIBERS else ""
    return (
        f"## {title}: case {case.reference}\n\n"
        f"Step {case.step} of 6. Decided by the case's {roles}: {keys}. Due {due}.\n\n"
        f"{body}\n\n"
        "Enter **your stakeholder key** and the **one-time approval code** from your "
        "notification. Refer to people by pseudonym only (P-01); never enter names or contacts."
    )


def _approver_keys(session: Session, request: DecisionRequest) -> list[str]:
    ids = [uuid.UUID(i) for i in request.approver_ids]
    rows = session.exec(select(Stakeholder.key).where(col(Stakeholder.id).in_(ids))).all()
    return sorted(rows)


def _issue_codes(
    session: Session,
    *,
    case: RemediationCase,
    request: DecisionRequest,
    approvers: list[Stakeholder],
    policy: Policy,
    vault: Vault,
    now: datetime,
    carry_from: DecisionRequest | None = None,
) -> dict[uuid.UUID, uuid.UUID]:
    """Give each approver a code and an approval-page link for this request.

    An unused, unexpired code carries over from the round this one replaces (with a new link
    for the new round); a fresh code is sent in a decision_requested message. Returns the
    approvers' link ids.
    """
    previous: dict[uuid.UUID, ApprovalCode] = {}
    old_links: dict[uuid.UUID, ApprovalLink] = {}
    if carry_from is not None:
        for code_row in session.exec(
            select(ApprovalCode).where(ApprovalCode.request_id == carry_from.id)
        ).all():
            previous[code_row.stakeholder_id] = code_row
        for link in session.exec(
            select(ApprovalLink).where(ApprovalLink.request_id == carry_from.id)
        ).all():
            old_links[link.stakeholder_id] = link
    ttl = timedelta(hours=policy.approvals.code_ttl_hours)
    links: dict[uuid.UUID, uuid.UUID] = {}
    fresh: list[Stakeholder] = []
    private: dict[uuid.UUID, dict[str, Any]] = {}
    for person in approvers:
        old = previous.get(person.id)
        if old is not None and old.used_at is None and old.expires_at > now:
            session.add(
                ApprovalCode(
                    request_id=request.id,
                    stakeholder_id=person.id,
                    code_hash=old.code_hash,
                    expires_at=old.expires_at,
                )
            )
            old_link = old_links.get(person.id)
            if old_link is not None and old_link.code_ciphertext:
                link = create_link(
                    session,
                    purpose=LinkPurpose.DECIDE,
                    case_id=case.id,
                    stakeholder_id=person.id,
                    request_id=request.id,
                    now=now,
                    expires_at=old.expires_at,
                )
                link.code_ciphertext = old_link.code_ciphertext
                links[person.id] = link.id
            continue
        code = new_code()
        session.add(
            ApprovalCode(
                request_id=request.id,
                stakeholder_id=person.id,
                code_hash=code_hash(vault, person.id, code),
                expires_at=now + ttl,
            )
        )
        link = create_link(
            session,
            purpose=LinkPurpose.DECIDE,
            case_id=case.id,
            stakeholder_id=person.id,
            request_id=request.id,
            now=now,
            expires_at=now + ttl,
            code=code,
        )
        links[person.id] = link.id
        fresh.append(person)
        # the code travels encrypted and is readable only by the delivery task
        private[person.id] = {
            "link_id": str(link.id),
            "code_ciphertext": vault.encrypt({"code": code}),
            "code_expires_at": (now + ttl).isoformat(),
        }
    if fresh:
        notify(
            session,
            routing=current_routing(),
            event=NotificationEvent.DECISION_REQUESTED,
            case=case,
            key=f"decision-requested:{request.id}",
            now=now,
            approvers=fresh,
            private=private,
            context=request_context(case, request),
        )
    return links


def request_context(case: RemediationCase, request: DecisionRequest) -> dict[str, Any]:
    """What every message about a waiting decision says (references only)."""
    return {
        "case_ref": case.reference,
        "step": request.step,
        "kind": request.kind.value,
        "round": request.round,
        "due_at": request.due_at.isoformat() if request.due_at else None,
        "flow_run_id": str(request.flow_run_id) if request.flow_run_id else None,
        "request_id": str(request.id),
    }


def _new_request(
    session: Session,
    *,
    case: RemediationCase,
    kind: DecisionKind,
    scope: str,
    step: int,
    flow_run_id: uuid.UUID | None,
    approvers: list[Stakeholder],
    now: datetime,
    carry_from: DecisionRequest | None = None,
) -> DecisionRequest:
    policy, vault = current_policy(), get_vault()
    last_round = session.exec(
        select(DecisionRequest.round)
        .where(DecisionRequest.case_id == case.id, DecisionRequest.kind == kind)
        .order_by(col(DecisionRequest.round).desc())
    ).first()
    round_ = (last_round or 0) + 1
    request = DecisionRequest(
        case_id=case.id,
        kind=kind,
        step=step,
        round=round_,
        scope=scope,
        flow_run_id=flow_run_id,
        suspend_key=suspend_key_for(kind, case.reference, round_),
        requested_at=now,
        due_at=decision_due(case.severity or Severity.HIGH, now, policy),
        approver_ids=[str(p.id) for p in approvers],
    )
    session.add(request)
    session.flush()
    _issue_codes(
        session,
        case=case,
        request=request,
        approvers=approvers,
        policy=policy,
        vault=vault,
        now=now,
        carry_from=carry_from,
    )
    append_audit(
        session,
        chain=case.reference,
        actor="system:remedy",
        action="decision.requested",
        at=now,
        subject_type="decision_request",
        subject_id=str(request.id),
        details={
            "kind": kind.value,
            "round": round_,
            "scope": scope,
            "approvers": [p.key for p in approvers],
            "due_at": request.due_at,
        },
    )
    return request


def prepare_decision(
    case_ref: str,
    kind: DecisionKind,
    *,
    scope: str,
    flow_run_id: uuid.UUID | None,
    now: datetime,
    exclude_approvers: list[uuid.UUID] | None = None,
    step: int | None = None,
) -> Pending:
    """Return the waiting request for this decision (creating it once), or the decision taken.

    With `step`, a case that left that step (held, closed early, revised) is asked nothing.
    """
    _registered()
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        request = _latest_request(session, case.id, kind, scope)
        if request is not None and request.status == DecisionRequestStatus.DECIDED:
            decision = _decision_of(session, request.id)
            if decision is not None:
                return _pending(session, case, request, decision=_view(session, decision))
        if step is not None and (case.step != step or case.state == CaseState.ON_HOLD):
            raise StepLeftError(
                f"{case_ref} is {case.state.value}: step {step} asks for nothing any more"
            )
        if request is None or request.status != DecisionRequestStatus.WAITING:
            approvers = designated_approvers(
                session, case.id, kind, exclude=set(exclude_approvers or [])
            )
            if not approvers:
                roles = ", ".join(r.value for r in APPROVER_ROLES[kind])
                raise NoApproverError(
                    f"{case_ref}: nobody on the case may take the {kind.value} decision "
                    f"(roles: {roles}); add one with `remedy members add {case_ref} KEY ROLE`"
                )
            request = _new_request(
                session,
                case=case,
                kind=kind,
                scope=scope,
                step=case.step,
                flow_run_id=flow_run_id,
                approvers=approvers,
                now=now,
                carry_from=request,
            )
        elif flow_run_id is not None and request.flow_run_id != flow_run_id:
            previous = request.flow_run_id
            request.flow_run_id = flow_run_id  # the step is carried by a new run now
            session.add(request)
            pending = _pending(session, case, request)
            pending.previous_flow_run_id = previous
            return pending
        return _pending(session, case, request)


def _pending(
    session: Session,
    case: RemediationCase,
    request: DecisionRequest,
    *,
    decision: DecisionView | None = None,
) -> Pending:
    initial = INITIAL_DATA[request.kind](session, case) if request.kind in INITIAL_DATA else {}
    return Pending(
        case_ref=case.reference,
        kind=request.kind,
        request_id=request.id,
        round=request.round,
        suspend_key=request.suspend_key,
        due_at=request.due_at,
        description="" if decision else _describe(session, case, request),
        initial=initial,
        decision=decision,
    )


@dataclass
class Verdict:
    """What a handler made of an accepted submission."""

    outcome: str
    final: bool = True  # False: recorded, and the same decision is asked again (new round)
    payload: dict[str, Any] | None = None


@dataclass
class HandlerContext:
    session: Session
    case: RemediationCase
    request: DecisionRequest
    form: ApprovalForm
    approver: Stakeholder
    now: datetime
    policy: Policy


Handler = Callable[[HandlerContext], Verdict]
HANDLERS: dict[DecisionKind, Handler] = {}


def _registered() -> None:
    """Load the step handlers, describers and initial data (tasks.steps registers them)."""
    import tasks.steps  # noqa: F401


def _check_submitter(
    session: Session, request: DecisionRequest, form: ApprovalForm, now: datetime
) -> tuple[Stakeholder, ApprovalCode]:
    approver = session.exec(select(Stakeholder).where(Stakeholder.key == form.approver)).first()
    if approver is None or not approver.active or str(approver.id) not in request.approver_ids:
        raise RefusedError("the submitter is not a designated approver of this decision")
    code_row = session.exec(
        select(ApprovalCode).where(
            ApprovalCode.request_id == request.id, ApprovalCode.stakeholder_id == approver.id
        )
    ).first()
    expected = code_hash(get_vault(), approver.id, form.approval_code)
    if code_row is None or not hmac.compare_digest(code_row.code_hash, expected):
        raise RefusedError("the approval code is wrong")
    if code_row.used_at is not None:
        raise RefusedError("the approval code was used already")
    if code_row.expires_at <= now:
        raise RefusedError("the approval code has expired; a new one has been sent")
    roles = set(
        session.exec(
            select(CaseMember.role).where(
                CaseMember.case_id == request.case_id, CaseMember.stakeholder_id == approver.id
            )
        ).all()
    )
    if not roles & set(APPROVER_ROLES[request.kind]):
        raise RefusedError("the approver no longer holds a role that may take this decision")
    return approver, code_row


def record_submission(
    request_id: uuid.UUID, submission: dict[str, Any], *, now: datetime
) -> SubmissionResult:
    """Check a submitted form and record the decision with its consequences, or refuse it."""
    _registered()
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
            _audit_refusal(session, case, request, submitter, reason, now)
            return SubmissionResult(accepted=False, reason=reason)
        try:
            form = FORMS[request.kind].model_validate(submission)
            approver, code_row = _check_submitter(session, request, form, now)
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
                verdict = HANDLERS[request.kind](ctx)
                decision.outcome = verdict.outcome
                decision.payload = verdict.payload or _payload(form)
                decision.reason = _reason_of(form)
                session.add(decision)
                code_row.used_at = now
                session.add(code_row)
                request.status = DecisionRequestStatus.DECIDED
                request.decided_at = now
                session.add(request)
                session.flush()
        except ValidationError:
            return _refuse(session, case, request, submitter, "the form is incomplete", now)
        except RefusedError as exc:
            return _refuse(session, case, request, submitter, exc.reason, now)
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
            },
        )
        _notify_decided(session, case, request, decision, approver, now)
        if not verdict.final:
            _new_request(
                session,
                case=case,
                kind=request.kind,
                scope=request.scope,
                step=case.step,
                flow_run_id=request.flow_run_id,
                approvers=_stakeholders(session, request.approver_ids),
                now=now,
            )
        return SubmissionResult(accepted=True, decision=_view(session, decision))


def _payload(form: ApprovalForm) -> dict[str, Any]:
    return form.model_dump(mode="json", exclude={"approver", "approval_code"})


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


def _stakeholders(session: Session, ids: list[str]) -> list[Stakeholder]:
    uuids = [uuid.UUID(i) for i in ids]
    rows = session.exec(select(Stakeholder).where(col(Stakeholder.id).in_(uuids))).all()
    return sorted(rows, key=lambda s: s.key)


def _audit_refusal(
    session: Session,
    case: RemediationCase,
    request: DecisionRequest,
    submitter: str,
    reason: str,
    now: datetime,
) -> None:
    append_audit(
        session,
        chain=case.reference,
        actor=f"submitter:{submitter or 'unknown'}",
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
    submitter: str,
    reason: str,
    now: datetime,
) -> SubmissionResult:
    """Audit a refused submission and open the next round: the step asks again, never fails."""
    _audit_refusal(session, case, request, submitter, reason, now)
    request.status = DecisionRequestStatus.SUPERSEDED
    session.add(request)
    session.flush()
    approvers = _stakeholders(session, request.approver_ids)
    current = designated_approvers(session, case.id, request.kind, exclude=set())
    if current and not {p.id for p in approvers} & {p.id for p in current}:
        # nobody asked can decide any more (roles changed): ask who holds the role now, or the
        # next round would wait forever; four eyes stay enforced by the closure handlers
        approvers = current
    nxt = _new_request(
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


def cancel_waiting(
    session: Session, case: RemediationCase, *, now: datetime, actor: str, why: str
) -> list[uuid.UUID]:
    """Cancel a case's waiting requests (the case left their step by other means); audited.

    Returns the runs that were waiting on them: they no longer carry anything and may be
    cancelled in Prefect (a resumed one would find its step gone and end without effect).
    """
    waiting = session.exec(
        select(DecisionRequest).where(
            DecisionRequest.case_id == case.id,
            DecisionRequest.status == DecisionRequestStatus.WAITING,
        )
    ).all()
    runs: list[uuid.UUID] = []
    for request in waiting:
        request.status = DecisionRequestStatus.CANCELLED
        session.add(request)
        if request.flow_run_id is not None and request.flow_run_id not in runs:
            runs.append(request.flow_run_id)
        append_audit(
            session,
            chain=case.reference,
            actor=actor,
            action="decision.cancelled",
            at=now,
            subject_type="decision_request",
            subject_id=str(request.id),
            details={"kind": request.kind.value, "round": request.round, "why": why},
        )
    return runs


def waiting_requests(case_ref: str) -> list[DecisionRequest]:
    """Return a case's waiting decision requests (for the CLI and the approval page)."""
    with read_only() as session:
        case = get_case(session, case_ref)
        return list(
            session.exec(
                select(DecisionRequest)
                .where(
                    DecisionRequest.case_id == case.id,
                    DecisionRequest.status == DecisionRequestStatus.WAITING,
                )
                .order_by(col(DecisionRequest.requested_at))
            ).all()
        )


def describe_request(request_id: uuid.UUID) -> str:
    """Return the markdown a waiting request shows its approver."""
    _registered()
    with read_only() as session:
        request = session.get(DecisionRequest, request_id)
        if request is None:
            raise LookupError(f"no decision request {request_id}")
        case = session.get(RemediationCase, request.case_id)
        assert case is not None
        return _describe(session, case, request)


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
