"""Waiting decisions: the request a step asks (mirrored from its suspended Prefect run), who may
answer it, what they are shown, and cancelling what a case no longer needs.

A step asks with `prepare_decision` (idempotent: the same request comes back until it is decided),
suspends its run with the request's key, and on resume hands the submitted form to
`tasks.decisions.submissions.record_submission`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session, col, select

from models.enums import CaseState, DecisionKind, DecisionRequestStatus, Severity
from models.policy import decision_due
from models.tables import CaseMember, Decision, DecisionRequest, RemediationCase, Stakeholder
from tasks.context import current_policy
from tasks.decisions.codes import issue_codes
from tasks.markdown import md_text
from tasks.steps.table import spec_of
from tasks.store.audit import append_audit
from tasks.store.cases import get_case
from tasks.store.db import read_only, unit_of_work
from tasks.store.vault import get_vault


class NoApproverError(RuntimeError):
    """Nobody on the case holds a role that may take this decision."""


class StepLeftError(RuntimeError):
    """The case left the step that asks: nothing is asked any more (a run caught in a race)."""


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


def suspend_key_for(kind: DecisionKind, reference: str, round_: int, tries: int = 0) -> str:
    """Return the suspend key: lowercase letters, digits and dashes only, as Prefect requires.

    After a failed attempt the same round waits under a fresh key (`-t1`, `-t2`...): Prefect
    does not let a run suspend twice on one key.
    """
    # docs/architecture.md, Prefect behaviour this design relies on
    key = f"{kind.value.replace('_', '-')}-{reference.lower()}-r{round_}"
    return f"{key}-t{tries}" if tries else key


def designated_approvers(
    session: Session, case_id: uuid.UUID, kind: DecisionKind, *, exclude: set[uuid.UUID]
) -> list[Stakeholder]:
    """Return the case's members who may take a decision of this kind."""
    rows = session.exec(
        select(Stakeholder)
        .join(CaseMember, col(CaseMember.stakeholder_id) == col(Stakeholder.id))
        .where(
            CaseMember.case_id == case_id,
            col(CaseMember.role).in_(spec_of(kind).roles),
            Stakeholder.active == True,  # noqa: E712
        )
        .order_by(col(Stakeholder.key))
    ).all()
    seen: dict[uuid.UUID, Stakeholder] = {}
    for person in rows:
        if person.id not in exclude:
            seen.setdefault(person.id, person)
    return list(seen.values())


def decision_view(session: Session, decision: Decision) -> DecisionView:
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


def latest_request(
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


def decision_of(session: Session, request_id: uuid.UUID) -> Decision | None:
    return session.exec(
        select(Decision)
        .where(Decision.request_id == request_id)
        .order_by(col(Decision.decided_at).desc())
    ).first()


def describe(
    session: Session, case: RemediationCase, request: DecisionRequest, *, for_page: bool = False
) -> str:
    """Return the markdown a waiting request shows: in the Prefect UI (who decides, and that the
    form wants their key and code) or on the approval page (`for_page`: neither; the page knows
    whose link it is and never hints at what it asks)."""
    title = spec_of(request.kind).title
    roles = " or ".join(r.value.replace("_", " ") for r in spec_of(request.kind).roles)
    due = f"{request.due_at:%Y-%m-%d %H:%M} UTC" if request.due_at else "no deadline"
    body = spec_of(request.kind).describe(session, case, request)
    head = f"## {title}: case {md_text(case.reference)}\n\n"
    if for_page:
        return f"{head}Step {case.step} of 6. Decided by the case's {roles}. Due {due}.\n\n{body}"
    keys = ", ".join(map(md_text, _approver_keys(session, request)))
    return (
        f"{head}Step {case.step} of 6. Decided by the case's {roles}: {keys}. Due {due}.\n\n"
        f"{body}\n\n"
        "Enter **your stakeholder key** and the **one-time approval code** from your "
        "notification. Refer to people by pseudonym only (P-01); never enter names or contacts."
    )


def _approver_keys(session: Session, request: DecisionRequest) -> list[str]:
    ids = [uuid.UUID(i) for i in request.approver_ids]
    rows = session.exec(select(Stakeholder.key).where(col(Stakeholder.id).in_(ids))).all()
    return sorted(rows)


def open_round(
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
    issue_codes(
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
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        request = latest_request(session, case.id, kind, scope)
        if request is not None and request.status == DecisionRequestStatus.DECIDED:
            decision = decision_of(session, request.id)
            if decision is not None:
                return pending_of(session, case, request, decision=decision_view(session, decision))
        if step is not None and (case.step != step or case.state == CaseState.ON_HOLD):
            raise StepLeftError(
                f"{case_ref} is {case.state.value}: step {step} asks for nothing any more"
            )
        if request is None or request.status != DecisionRequestStatus.WAITING:
            approvers = designated_approvers(
                session, case.id, kind, exclude=set(exclude_approvers or [])
            )
            if not approvers:
                roles = ", ".join(r.value for r in spec_of(kind).roles)
                raise NoApproverError(
                    f"{case_ref}: nobody on the case may take the {kind.value} decision "
                    f"(roles: {roles}); add one with `remedy members add {case_ref} KEY ROLE`"
                )
            request = open_round(
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
            pending = pending_of(session, case, request)
            pending.previous_flow_run_id = previous
            return pending
        return pending_of(session, case, request)


def pending_of(
    session: Session,
    case: RemediationCase,
    request: DecisionRequest,
    *,
    decision: DecisionView | None = None,
) -> Pending:
    initial = spec_of(request.kind).initial(session, case)
    return Pending(
        case_ref=case.reference,
        kind=request.kind,
        request_id=request.id,
        round=request.round,
        suspend_key=request.suspend_key,
        due_at=request.due_at,
        description="" if decision else describe(session, case, request),
        initial=initial,
        decision=decision,
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
    return case_state_and_waiting(case_ref)[1]


def case_state_and_waiting(case_ref: str) -> tuple[CaseState, list[DecisionRequest]]:
    """Return a case's state and its waiting decision requests, oldest first, read together.

    What someone taking a case's decisions looks at between two of them (the scripted people
    of the demo and the tests poll it): one short read, not the case summary's six queries.
    """
    with read_only() as session:
        case = get_case(session, case_ref)
        return case.state, waiting_in(session, case.id)


def waiting_in(session: Session, case_id: uuid.UUID) -> list[DecisionRequest]:
    """Return a case's waiting decision requests, oldest first, in an open session."""
    return list(
        session.exec(
            select(DecisionRequest)
            .where(
                DecisionRequest.case_id == case_id,
                DecisionRequest.status == DecisionRequestStatus.WAITING,
            )
            .order_by(col(DecisionRequest.requested_at))
        ).all()
    )


def describe_request(request_id: uuid.UUID, *, for_page: bool = False) -> str:
    """Return the markdown a waiting request shows its approver (see `describe`)."""
    with read_only() as session:
        request = session.get(DecisionRequest, request_id)
        if request is None:
            raise LookupError(f"no decision request {request_id}")
        case = session.get(RemediationCase, request.case_id)
        assert case is not None
        return describe(session, case, request, for_page=for_page)
