"""The case lifecycle applied to stored cases: moving a case, binding step runs, and what the
guards look at. Every public function that opens a session is one unit of work, safe to repeat.

The rules themselves (states, events, guards) are pure and live in models/lifecycle.py.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session, col, func, select

from models.enums import (
    CaseEvent,
    CaseState,
    MilestoneStatus,
    PlanStatus,
    Step,
    StepRunStatus,
)
from models.lifecycle import WORK_STATES, WORKING, CaseFacts, Transition, apply, step_of
from models.policy import MilestoneSummary
from models.tables import (
    ActionPlan,
    PlanAction,
    RemediationCase,
    SafetyAssessment,
    StepRun,
    VerificationFinding,
)
from tasks.context import current_policy
from tasks.store.audit import append_audit
from tasks.store.cases import get_case
from tasks.store.consent import case_may_work
from tasks.store.db import read_only, unit_of_work

SYSTEM = "system:remedy"


CLOSED_MILESTONES = (MilestoneStatus.VERIFIED, MilestoneStatus.WAIVED, MilestoneStatus.CANCELLED)


class StepContext(BaseModel):
    """Where a step flow stands: whether it has work, and the scope its decisions live in."""

    case_ref: str
    step: Step
    active: bool
    entry: int = 0
    state: CaseState
    note: str = ""

    @property
    def scope(self) -> str:
        return f"entry-{self.entry}"


def milestone_summary(session: Session, case_id: uuid.UUID) -> MilestoneSummary:
    """Count the milestones of the case's approved plan by how far they are."""
    plan = current_plan(session, case_id, PlanStatus.APPROVED)
    if plan is None:
        return MilestoneSummary(total=0, verified=0, waived_with_reason=0, open=0)
    rows = session.exec(
        select(PlanAction.status, PlanAction.waived_reason).where(PlanAction.plan_id == plan.id)
    ).all()
    counted = [(s, r) for s, r in rows if s != MilestoneStatus.CANCELLED]
    verified = sum(1 for s, _ in counted if s == MilestoneStatus.VERIFIED)
    waived = sum(1 for s, r in counted if s == MilestoneStatus.WAIVED and (r or "").strip())
    return MilestoneSummary(
        total=len(counted),
        verified=verified,
        waived_with_reason=waived,
        open=len(counted) - verified - waived,
    )


def current_plan(session: Session, case_id: uuid.UUID, status: PlanStatus) -> ActionPlan | None:
    """Return the newest plan version of a case in the given status."""
    return session.exec(
        select(ActionPlan)
        .where(ActionPlan.case_id == case_id, ActionPlan.status == status)
        .order_by(col(ActionPlan.version).desc())
    ).first()


def facts_for(
    session: Session, case: RemediationCase, *, now: datetime, **overrides: Any
) -> CaseFacts:
    """Gather what the lifecycle's guards look at (overrides come from the decision at hand)."""
    safety = session.exec(select(SafetyAssessment).where(SafetyAssessment.case_id == case.id)).all()
    draft = current_plan(session, case.id, PlanStatus.DRAFT)
    draft_actions_n = 0
    if draft is not None:
        draft_actions_n = session.exec(
            select(func.count()).select_from(PlanAction).where(PlanAction.plan_id == draft.id)
        ).one()
    summary = milestone_summary(session, case.id)
    facts: dict[str, Any] = {
        "safety_assessed": any(s.valid_until is None or s.valid_until > now for s in safety),
        "findings_recorded": session.exec(
            select(VerificationFinding.id).where(VerificationFinding.case_id == case.id)
        ).first()
        is not None,
        "involvement_assessed": case.involvement is not None,
        "severity_assessed": case.severity_is_final,
        "has_plan_actions": draft_actions_n > 0,
        # one person's withdrawal holds their actions; the case, when nobody's consent stands
        "consent_active": case_may_work(session, case.id, current_policy().consent),
        "milestones_total": summary.total,
        "milestones_open": summary.open,
        "held_from": case.held_from,
        "has_approved_plan": current_plan(session, case.id, PlanStatus.APPROVED) is not None,
        "required_closure_approvers": current_policy().approvals.closure_required_approvers,
    }
    facts.update(overrides)
    return CaseFacts(**facts)


def latest_step_run(session: Session, case_id: uuid.UUID, step: int) -> StepRun | None:
    return session.exec(
        select(StepRun)
        .where(StepRun.case_id == case_id, StepRun.step == step)
        .order_by(col(StepRun.entry).desc())
    ).first()


def move(
    session: Session,
    case: RemediationCase,
    event: CaseEvent,
    *,
    now: datetime,
    actor: str,
    **overrides: Any,
) -> Transition:
    """Apply a lifecycle event to a stored case: state, step runs, audit (caller's unit of work)."""
    transition = apply(case.state, event, facts_for(session, case, now=now, **overrides))
    source = case.state
    if transition.target == CaseState.ON_HOLD:
        case.held_from = source
    elif source == CaseState.ON_HOLD:
        case.held_from = None
    case.state, case.step, case.status = transition.target, int(transition.step), transition.status
    case.state_changed_at = now
    case.version += 1
    if transition.target == CaseState.CLOSED:
        case.closed_at = now
    session.add(case)
    if transition.target != source:
        left = latest_step_run(session, case.id, int(step_of_state(source, case)))
        if left is not None and left.status != StepRunStatus.FINISHED:
            left.status, left.finished_at = StepRunStatus.FINISHED, now
            session.add(left)
        if transition.target not in (CaseState.ON_HOLD, CaseState.LESSONS_CAPTURED):
            previous = latest_step_run(session, case.id, int(transition.step))
            session.add(
                StepRun(
                    case_id=case.id,
                    step=int(transition.step),
                    entry=(previous.entry if previous else 0) + 1,
                    created_at=now,
                )
            )
    session.flush()
    append_audit(
        session,
        chain=case.reference,
        actor=actor,
        action="case.transition",
        at=now,
        subject_type="case",
        subject_id=str(case.id),
        details={
            "event": event.value,
            "from": source.value,
            "to": transition.target.value,
            "step": int(transition.step),
        },
    )
    return transition


def step_of_state(state: CaseState, case: RemediationCase) -> Step:
    """Return the step whose work a state is; outside the work states, the case's own step."""
    return step_of(state) if state in WORKING else Step(case.step)


def begin_case(case_ref: str, *, now: datetime) -> StepContext:
    """Start a freshly opened case on step 1 (nothing happens if it has started already)."""
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        if case.state == CaseState.INTAKE:
            move(session, case, CaseEvent.START_VERIFICATION, now=now, actor=SYSTEM)
        return StepContext(case_ref=case_ref, step=Step(case.step), active=True, state=case.state)


def step_run_binding(case_ref: str, step: Step) -> uuid.UUID | None:
    """Return the flow run the latest entry into a step is bound to, if any."""
    with read_only() as session:
        case = get_case(session, case_ref)
        run = latest_step_run(session, case.id, int(step))
        return run.flow_run_id if run else None


def open_step(
    case_ref: str,
    step: Step,
    *,
    flow_run_id: uuid.UUID | None,
    now: datetime,
    other_run_alive: bool = False,
) -> StepContext:
    """Bind this run to the case's entry into the step, or say why it has nothing to do."""
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        run = latest_step_run(session, case.id, int(step))
        if case.state not in WORK_STATES[step] or run is None:
            return StepContext(
                case_ref=case_ref,
                step=step,
                active=False,
                state=case.state,
                note=f"the case is {case.state.value}; nothing to do in step {int(step)}",
            )
        if run.flow_run_id not in (None, flow_run_id) and other_run_alive:
            return StepContext(
                case_ref=case_ref,
                step=step,
                active=False,
                entry=run.entry,
                state=case.state,
                note=f"step {int(step)} is already carried by flow run {run.flow_run_id}",
            )
        if run.flow_run_id != flow_run_id or run.status != StepRunStatus.STARTED:
            run.flow_run_id = flow_run_id
            run.status = StepRunStatus.STARTED
            run.started_at = run.started_at or now
            session.add(run)
        return StepContext(
            case_ref=case_ref, step=step, active=True, entry=run.entry, state=case.state
        )


class Handover(BaseModel):
    """The step a case is in now, and whether its run still has to be started."""

    case_ref: str
    step: Step
    state: CaseState
    entry: int
    needs_start: bool
    idempotency_key: str


def pending_handover(case_ref: str) -> Handover | None:
    """Return the entry into a step whose run has not been started yet, if there is one."""
    with read_only() as session:
        case = get_case(session, case_ref)
        step = step_of_state(case.state, case)
        if case.state not in WORK_STATES[step]:
            return None
        run = latest_step_run(session, case.id, int(step))
        if run is None or run.status != StepRunStatus.PENDING:
            return None
        return Handover(
            case_ref=case_ref,
            step=step,
            state=case.state,
            entry=run.entry,
            needs_start=True,
            idempotency_key=f"{case_ref.lower()}-step-{int(step)}-entry-{run.entry}",
        )


def mark_handed_over(
    case_ref: str, step: Step, entry: int, flow_run_id: uuid.UUID | None, *, now: datetime
) -> None:
    """Record that the run for an entry into a step was started (or its event emitted)."""
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        run = session.exec(
            select(StepRun).where(
                StepRun.case_id == case.id, StepRun.step == int(step), StepRun.entry == entry
            )
        ).one()
        if run.status == StepRunStatus.PENDING:
            run.status = StepRunStatus.STARTED
            run.flow_run_id = run.flow_run_id or flow_run_id
            run.started_at = run.started_at or now
            session.add(run)
