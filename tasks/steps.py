"""The six steps' work on the case store: entering steps, moving the lifecycle, and what each
decision changes. Every function here is one unit of work and safe to run again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session, col, func, select

from models.enums import (
    AnnexIICategory,
    CaseEvent,
    CaseState,
    ClosureType,
    ConsentMethod,
    ConsentPurpose,
    DecisionKind,
    DecisionRequestStatus,
    IloIndicator,
    IndicatorStatus,
    Involvement,
    LinkPurpose,
    MilestoneStatus,
    NotificationEvent,
    PlanStatus,
    RemedyRole,
    ResponseLevel,
    Role,
    Severity,
    Step,
    StepRunStatus,
)
from models.forms import (
    ClosureConfirmationForm,
    ClosureForm,
    ImpactAssessmentForm,
    LessonsForm,
    PlanAgreementForm,
    PlanBudgetForm,
    ResponseForm,
    SafetyForm,
    ScreeningForm,
    VerificationForm,
)
from models.lifecycle import CaseFacts, Transition, TransitionNotAllowed, apply
from models.plan import ActionDraft, PersonFacts, PlanFacts, draft_actions, revise_actions
from models.policy import (
    MilestoneSummary,
    SeverityInput,
    assess_severity,
    closure_check,
    remedy_role,
    response_level,
)
from models.settings import get_settings
from models.tables import (
    ActionPlan,
    AffectedPerson,
    Allegation,
    ClosureRecord,
    ConsentRecord,
    Decision,
    DecisionRequest,
    Lesson,
    PlanAction,
    ProgressUpdate,
    RemediationCase,
    SafetyAssessment,
    Stakeholder,
    StepRun,
    VerificationFinding,
)
from notifications.outbox import notify
from tasks.audit import append_audit
from tasks.cases import get_case
from tasks.consent import withdrawn_people
from tasks.context import current_plan_templates, current_policy, current_routing
from tasks.db import read_only, unit_of_work
from tasks.decisions import (
    DESCRIBERS,
    HANDLERS,
    INITIAL_DATA,
    HandlerContext,
    RefusedError,
    Verdict,
)
from tasks.directory import members_of
from tasks.links import create_link

SYSTEM = "system:remedy"

# The states in which a step's flow has work to do.
STEP_STATES: dict[Step, frozenset[CaseState]] = {
    Step.VERIFY: frozenset({CaseState.VERIFYING}),
    Step.RESPOND: frozenset({CaseState.DETERMINING_RESPONSE}),
    Step.PLAN: frozenset({CaseState.DESIGNING_PLAN}),
    Step.IMPLEMENT: frozenset({CaseState.IMPLEMENTING}),
    Step.CLOSE: frozenset({CaseState.CLOSING}),
    Step.LESSONS: frozenset({CaseState.CLOSED}),
}
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


# --- the lifecycle on stored cases ---------------------------------------------------------------


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
    withdrawn = withdrawn_people(session, case.id, [ConsentPurpose.CASE_HANDLING])
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
        "consent_active": not withdrawn,
        "milestones_total": summary.total,
        "milestones_open": summary.open,
        "held_from": case.held_from,
        "has_approved_plan": current_plan(session, case.id, PlanStatus.APPROVED) is not None,
        "required_closure_approvers": current_policy().approvals.closure_required_approvers,
    }
    facts.update(overrides)
    return CaseFacts(**facts)


def _latest_step_run(session: Session, case_id: uuid.UUID, step: int) -> StepRun | None:
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
        left = _latest_step_run(session, case.id, int(_step_of_state(source, case)))
        if left is not None and left.status != StepRunStatus.FINISHED:
            left.status, left.finished_at = StepRunStatus.FINISHED, now
            session.add(left)
        if transition.target not in (CaseState.ON_HOLD, CaseState.LESSONS_CAPTURED):
            previous = _latest_step_run(session, case.id, int(transition.step))
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


def _step_of_state(state: CaseState, case: RemediationCase) -> Step:
    for step, states in STEP_STATES.items():
        if state in states:
            return step
    return Step(case.step)


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
        run = _latest_step_run(session, case.id, int(step))
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
        run = _latest_step_run(session, case.id, int(step))
        if case.state not in STEP_STATES[step] or run is None:
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
        step = _step_of_state(case.state, case)
        if case.state not in STEP_STATES[step]:
            return None
        run = _latest_step_run(session, case.id, int(step))
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


# --- step 1: verify the allegation ---------------------------------------------------------------


def _allegation(session: Session, case: RemediationCase) -> Allegation:
    allegation = session.exec(
        select(Allegation)
        .where(Allegation.case_id == case.id)
        .order_by(col(Allegation.received_at))
    ).first()
    assert allegation is not None, "every case is opened from an allegation"
    return allegation


def _persons(session: Session, case: RemediationCase) -> list[AffectedPerson]:
    return list(
        session.exec(
            select(AffectedPerson)
            .where(AffectedPerson.case_id == case.id)
            .order_by(col(AffectedPerson.pseudonym))
        ).all()
    )


def _transition(ctx: HandlerContext, event: CaseEvent, **overrides: Any) -> Transition:
    try:
        return move(
            ctx.session,
            ctx.case,
            event,
            now=ctx.now,
            actor=f"stakeholder:{ctx.approver.key}",
            **overrides,
        )
    except TransitionNotAllowed as exc:
        raise RefusedError(exc.reason) from None


def handle_screening(ctx: HandlerContext) -> Verdict:
    form = ctx.form
    assert isinstance(form, ScreeningForm)
    allegation = _allegation(ctx.session, ctx.case)
    reason = form.reason.strip()
    if form.outcome != "accepted" and not reason:
        raise RefusedError("a reason is required to reject an allegation or mark it a duplicate")
    if form.outcome == "duplicate":
        if not form.duplicate_of or form.duplicate_of == ctx.case.reference:
            raise RefusedError("name the case this allegation duplicates (duplicate_of)")
        other = ctx.session.exec(
            select(RemediationCase).where(RemediationCase.reference == form.duplicate_of)
        ).first()
        if other is None:
            raise RefusedError(f"there is no case {form.duplicate_of}")
        allegation.duplicate_of_case_id = other.id
    allegation.screening_outcome = form.outcome  # type: ignore[assignment]
    allegation.screening_reason = reason or None
    ctx.session.add(allegation)
    if form.outcome != "accepted":
        ctx.case.closure_type = (
            ClosureType.DUPLICATE if form.outcome == "duplicate" else ClosureType.NO_BASIS
        )
        _transition(ctx, CaseEvent.SCREENED_OUT, screening_reason=reason)
    return Verdict(form.outcome)


def handle_safety(ctx: HandlerContext) -> Verdict:
    form = ctx.form
    assert isinstance(form, SafetyForm)
    ctx.session.add(
        SafetyAssessment(
            case_id=ctx.case.id,
            assessor_id=ctx.approver.id,
            assessed_at=ctx.now,
            risk_level=form.risk_level,
            risks=[r.value for r in form.risks],
            mitigation=form.mitigation.strip() or None,
            contact_cleared=form.contact_cleared,
            valid_until=ctx.now + timedelta(days=form.valid_days),
        )
    )
    return Verdict(form.risk_level.value)


INDICATOR_FIELDS = [i.value for i in IloIndicator]


def handle_verification(ctx: HandlerContext) -> Verdict:
    form = ctx.form
    assert isinstance(form, VerificationForm)
    indicators = {name: getattr(form, name).value for name in INDICATOR_FIELDS}
    present = IndicatorStatus.PRESENT
    act, means, purpose = form.palermo_act, form.palermo_means, form.palermo_purpose
    ctx.session.add(
        VerificationFinding(
            case_id=ctx.case.id,
            assessed_by_id=ctx.approver.id,
            assessed_at=ctx.now,
            ilo_indicators=indicators,
            palermo_act=act,
            palermo_means=means,
            palermo_purpose=purpose,
            annex_ii=[a.value for a in form.annex_ii],
            minors_involved=form.minors_involved,
            # for children no means is needed (Palermo Protocol, art. 3(c))
            trafficking_indicated=act == present
            and purpose == present
            and (means == present or form.minors_involved),
            forced_labour_indicated=any(v == present.value for v in indicators.values()),
        )
    )
    ctx.session.flush()
    event = {
        "substantiated": CaseEvent.SUBSTANTIATED,
        "unsubstantiated": CaseEvent.UNSUBSTANTIATED,
        "inconclusive": CaseEvent.INCONCLUSIVE,
    }[form.outcome]
    if event == CaseEvent.UNSUBSTANTIATED:
        ctx.case.closure_type = ClosureType.NO_BASIS
    _transition(ctx, event, decision_reason=form.reason)
    return Verdict(form.outcome, final=form.outcome != "inconclusive")


# --- step 2: determine the type and level of response --------------------------------------------


def _latest_finding(session: Session, case: RemediationCase) -> VerificationFinding | None:
    return session.exec(
        select(VerificationFinding)
        .where(VerificationFinding.case_id == case.id)
        .order_by(col(VerificationFinding.assessed_at).desc())
    ).first()


def handle_impact_assessment(ctx: HandlerContext) -> Verdict:
    form = ctx.form
    assert isinstance(form, ImpactAssessmentForm)
    finding = _latest_finding(ctx.session, ctx.case)
    annex = tuple(AnnexIICategory(a) for a in (finding.annex_ii if finding else []))
    severity = assess_severity(
        SeverityInput(
            scale=form.scale,
            persons_affected=form.persons_affected,
            irremediability=form.irremediability,
            minors_involved=form.minors_involved,
            annex_ii=annex,
        ),
        ctx.policy,
    )
    level = response_level(form.involvement, severity, ctx.policy)
    case = ctx.case
    case.involvement, case.severity, case.severity_is_final = form.involvement, severity, True
    case.response_level, case.remedy_role = level, remedy_role(form.involvement)
    ctx.session.add(case)
    payload = form.model_dump(mode="json", exclude={"approver", "approval_code"})
    payload |= {"severity": severity.value, "derived_response_level": level.value}
    return Verdict(severity.value, payload=payload)


def handle_response(ctx: HandlerContext) -> Verdict:
    form = ctx.form
    assert isinstance(form, ResponseForm)
    case = ctx.case
    if case.response_level is None or case.involvement is None:
        raise RefusedError("involvement and severity must be assessed first")
    derived = case.response_level
    if form.accept_response_level:
        level = derived
    else:
        if form.override_level == "none" or not form.override_reason.strip():
            raise RefusedError("to override the derived level, choose a level and give a reason")
        level = ResponseLevel(form.override_level)
    case.response_level = level
    ctx.session.add(case)
    _transition(ctx, CaseEvent.RESPONSE_APPROVED)
    payload = form.model_dump(mode="json", exclude={"approver", "approval_code"})
    payload |= {"derived_response_level": derived.value, "response_level": level.value}
    return Verdict(level.value, payload=payload)


# --- step 3: design the remediation action plan --------------------------------------------------


def _plan_facts(session: Session, case: RemediationCase) -> PlanFacts:
    allegation = _allegation(session, case)
    finding = _latest_finding(session, case)
    if finding is not None:
        indicators = {IloIndicator(k) for k, v in finding.ilo_indicators.items() if v == "present"}
        annex = {AnnexIICategory(a) for a in finding.annex_ii}
    else:
        indicators = {IloIndicator(i) for i in allegation.reported_indicators}
        annex = set()
    return PlanFacts(
        country=allegation.country,
        indicators=frozenset(indicators),
        persons=tuple(
            PersonFacts(
                pseudonym=p.pseudonym,
                is_minor=p.is_minor,
                age_uncertain=p.age_uncertain,
                nationality=p.nationality,
            )
            for p in _persons(session, case)
        ),
        involvement=case.involvement or Involvement.UNKNOWN,
        severity=case.severity or Severity.HIGH,
        annex_ii=frozenset(annex),
    )


def _draft_of(action: PlanAction, role: Role) -> ActionDraft:
    return ActionDraft(
        key=action.key,
        kind=action.kind,
        category=action.category,
        title=action.title,
        owner_role=role,
        due_on=action.due_on,
        verification_method=action.verification_method,
        consequence_if_missed=action.consequence_if_missed,
        person=None,
    )


def _owner_for(session: Session, case: RemediationCase, role: Role) -> Stakeholder | None:
    for candidate in (role, Role.CASE_LEAD):
        people = members_of(session, case.id, candidate)
        if people:
            return people[0]
    return None


def _store_plan(
    session: Session,
    case: RemediationCase,
    drafts: list[ActionDraft],
    *,
    version: int,
    now: datetime,
    carried: dict[str, PlanAction] | None = None,
) -> ActionPlan:
    plan = ActionPlan(case_id=case.id, version=version, status=PlanStatus.DRAFT, created_at=now)
    session.add(plan)
    session.flush()
    persons = {p.pseudonym: p.id for p in _persons(session, case)}
    for d in drafts:
        old = (carried or {}).get(d.key)
        owner = _owner_for(session, case, d.owner_role)
        session.add(
            PlanAction(
                plan_id=plan.id,
                case_id=case.id,
                key=d.key,
                kind=d.kind,
                category=d.category,
                title=d.title,
                person_id=old.person_id if old else persons.get(d.person or ""),
                owner_id=old.owner_id if old else (owner.id if owner else None),
                due_on=d.due_on,
                verification_method=d.verification_method,
                consequence_if_missed=d.consequence_if_missed,
                status=MilestoneStatus.PLANNED,
                status_changed_at=now,
                evidence_refs=list(old.evidence_refs) if old else [],
            )
        )
    session.flush()
    return plan


def draft_plan(case_ref: str, *, now: datetime) -> int:
    """Draft the plan for a case entering step 3 (a revision starts from the approved plan)."""
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        draft = current_plan(session, case.id, PlanStatus.DRAFT)
        if draft is not None or case.state != CaseState.DESIGNING_PLAN:
            return draft.version if draft else 0
        last = session.exec(
            select(func.max(ActionPlan.version)).where(ActionPlan.case_id == case.id)
        ).one()
        drafts = draft_actions(
            _plan_facts(session, case),
            current_plan_templates(),
            today=now.date(),
            policy=current_policy(),
        )
        carried: dict[str, PlanAction] = {}
        approved = current_plan(session, case.id, PlanStatus.APPROVED)
        if approved is not None:
            # a revision keeps the open actions as they are and adds what the facts now call for;
            # what was verified or waived stays settled in the plan it was settled in
            actions = session.exec(
                select(PlanAction).where(PlanAction.plan_id == approved.id)
            ).all()
            open_actions = [a for a in actions if a.status not in CLOSED_MILESTONES]
            settled = {a.key for a in actions if a.status != MilestoneStatus.CANCELLED} - {
                a.key for a in open_actions
            }
            carried = {a.key: a for a in open_actions}
            kept = [_draft_of(a, Role.CASE_LEAD) for a in open_actions]
            drafts = kept + [d for d in drafts if d.key not in carried and d.key not in settled]
        plan = _store_plan(session, case, drafts, version=(last or 0) + 1, now=now, carried=carried)
        append_audit(
            session,
            chain=case.reference,
            actor=SYSTEM,
            action="plan.drafted",
            at=now,
            subject_type="action_plan",
            subject_id=str(plan.id),
            details={"version": plan.version, "actions": [d.key for d in drafts]},
        )
        return plan.version


def handle_plan_agreement(ctx: HandlerContext) -> Verdict:
    form = ctx.form
    assert isinstance(form, PlanAgreementForm)
    session, case = ctx.session, ctx.case
    draft = current_plan(session, case.id, PlanStatus.DRAFT)
    if draft is None:
        raise RefusedError("there is no draft plan to agree to")
    if form.outcome == "refuse":
        if not form.comments.strip():
            raise RefusedError("say what has to change (comments) when refusing the plan")
        return Verdict("refused", final=False)
    if not form.consent_recorded:
        raise RefusedError("the affected persons' informed consent to the plan must be recorded")
    if form.outcome == "agree" and form.remove_actions:
        raise RefusedError("to remove actions, choose 'agree_with_changes'")
    if form.outcome == "agree_with_changes":
        actions = session.exec(select(PlanAction).where(PlanAction.plan_id == draft.id)).all()
        by_key = {a.key: a for a in actions}
        try:
            kept = revise_actions(
                [_draft_of(a, Role.CASE_LEAD) for a in actions], remove=form.remove_actions, add=[]
            )
        except ValueError as exc:
            raise RefusedError(str(exc)) from None
        draft.status = PlanStatus.SUPERSEDED
        session.add(draft)
        session.flush()
        draft = _store_plan(
            session, case, kept, version=draft.version + 1, now=ctx.now, carried=by_key
        )
    draft.victim_priorities = form.victim_priorities.strip() or None
    session.add(draft)
    for person in _persons(session, case):
        for purpose in (ConsentPurpose.CASE_HANDLING, ConsentPurpose.SHARE_WITH_SERVICE_PROVIDER):
            session.add(
                ConsentRecord(
                    case_id=case.id,
                    person_id=person.id,
                    purpose=purpose,
                    recipients=[Role.SERVICE_PROVIDER.value, Role.CASE_LEAD.value],
                    method=ConsentMethod(form.consent_method),
                    interpreter_used=form.interpreter_used,
                    given_at=ctx.now,
                    recorded_by_id=ctx.approver.id,
                )
            )
    payload = form.model_dump(mode="json", exclude={"approver", "approval_code"})
    payload["plan_version"] = draft.version
    return Verdict(form.outcome, payload=payload)


def _agreed_in_scope(session: Session, case: RemediationCase, scope: str) -> bool:
    row = session.exec(
        select(Decision.outcome)
        .join(DecisionRequest, col(DecisionRequest.id) == col(Decision.request_id))
        .where(
            Decision.case_id == case.id,
            Decision.kind == DecisionKind.PLAN_AGREEMENT,
            DecisionRequest.scope == scope,
        )
        .order_by(col(Decision.decided_at).desc())
    ).first()
    return row in ("agree", "agree_with_changes")


def handle_plan_budget(ctx: HandlerContext) -> Verdict:
    form = ctx.form
    assert isinstance(form, PlanBudgetForm)
    session, case = ctx.session, ctx.case
    if not form.approve:
        if not form.reason.strip():
            raise RefusedError("give a reason when refusing the budget")
        return Verdict("rejected", final=False)
    draft = current_plan(session, case.id, PlanStatus.DRAFT)
    if draft is None:
        raise RefusedError("there is no draft plan to fund")
    _transition(
        ctx,
        CaseEvent.PLAN_APPROVED,
        victim_agreement_recorded=_agreed_in_scope(session, case, ctx.request.scope),
        budget_approved=True,
    )
    previous = current_plan(session, case.id, PlanStatus.APPROVED)
    if previous is not None:
        previous.status = PlanStatus.SUPERSEDED
        session.add(previous)
        for action in session.exec(
            select(PlanAction).where(
                PlanAction.plan_id == previous.id,
                col(PlanAction.status).not_in(CLOSED_MILESTONES),
            )
        ).all():
            action.status, action.status_changed_at = MilestoneStatus.CANCELLED, ctx.now
            session.add(action)
    draft.status, draft.approved_at = PlanStatus.APPROVED, ctx.now
    session.add(draft)
    notify(
        session,
        routing=current_routing(),
        event=NotificationEvent.PLAN_APPROVED,
        case=case,
        key=f"plan-approved:{draft.id}",
        now=ctx.now,
        context={"case_ref": case.reference, "step": 3, "plan_version": draft.version},
    )
    payload = form.model_dump(mode="json", exclude={"approver", "approval_code"})
    payload["plan_version"] = draft.version
    return Verdict("approved", payload=payload)


# --- step 4: implement and monitor ---------------------------------------------------------------


def milestone_notice(
    session: Session,
    case: RemediationCase,
    action: PlanAction,
    owner: Stakeholder,
    *,
    event: NotificationEvent,
    key: str,
    now: datetime,
    extra: dict[str, Any] | None = None,
) -> None:
    """Tell a milestone's owner (and whoever the routing adds) about it, with a progress link."""
    link = create_link(
        session,
        purpose=LinkPurpose.PROGRESS,
        case_id=case.id,
        stakeholder_id=owner.id,
        action_id=action.id,
        now=now,
        expires_at=now + timedelta(days=get_settings().progress_link_days),
    )
    person = session.get(AffectedPerson, action.person_id) if action.person_id else None
    notify(
        session,
        routing=current_routing(),
        event=event,
        case=case,
        key=key,
        now=now,
        owner=owner,
        private={owner.id: {"link_id": str(link.id)}},
        mentions=[person.pseudonym] if person else [],
        context={
            "case_ref": case.reference,
            "step": case.step,
            "milestone": action.key,
            "title": action.title,
            "due_on": action.due_on.isoformat(),
            "verification_method": action.verification_method,
            **(extra or {}),
        },
    )


def activate_plan(case_ref: str, *, now: datetime) -> int:
    """Activate the approved plan's milestones and tell their owners (once)."""
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        plan = current_plan(session, case.id, PlanStatus.APPROVED)
        if plan is None or case.state != CaseState.IMPLEMENTING:
            return 0
        planned = session.exec(
            select(PlanAction).where(
                PlanAction.plan_id == plan.id, PlanAction.status == MilestoneStatus.PLANNED
            )
        ).all()
        for action in planned:
            action.status, action.status_changed_at = MilestoneStatus.ACTIVE, now
            session.add(action)
            owner = session.get(Stakeholder, action.owner_id) if action.owner_id else None
            if owner is not None:
                milestone_notice(
                    session,
                    case,
                    action,
                    owner,
                    event=NotificationEvent.MILESTONE_ASSIGNED,
                    key=f"milestone-assigned:{action.id}",
                    now=now,
                )
        entry = _latest_step_run(session, case.id, int(Step.IMPLEMENT))
        if entry is not None and entry.status != StepRunStatus.FINISHED:
            # step 4's run has done its part; the monitoring sweep carries the step from here
            entry.status, entry.finished_at = StepRunStatus.FINISHED, now
            session.add(entry)
        if planned:
            append_audit(
                session,
                chain=case.reference,
                actor=SYSTEM,
                action="plan.activated",
                at=now,
                subject_type="action_plan",
                subject_id=str(plan.id),
                details={"version": plan.version, "milestones": [a.key for a in planned]},
            )
        return len(planned)


class MilestoneUpdateError(Exception):
    """A milestone update is not allowed; the message says why."""


class MilestoneResult(BaseModel):
    case_ref: str
    key: str
    status: MilestoneStatus
    open_milestones: int
    plan_completed: bool


def update_milestone(
    case_ref: str,
    key: str,
    *,
    status: MilestoneStatus,
    by: str,
    now: datetime,
    note: str = "",
    evidence: list[str] | None = None,
    idempotency_key: str | None = None,
) -> MilestoneResult:
    """Record progress on a milestone; the case lead verifies or waives; the last one closes."""
    evidence = [e.strip()[:200] for e in (evidence or []) if e.strip()]
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        if idempotency_key:
            seen = session.exec(
                select(ProgressUpdate).where(ProgressUpdate.idempotency_key == idempotency_key)
            ).first()
            if seen is not None:
                seen_action = session.get(PlanAction, seen.action_id)
                if seen.case_id != case.id or seen_action is None or seen_action.key != key:
                    raise MilestoneUpdateError("this update key was used for another milestone")
                return _milestone_result(session, case, key, seen.status)
        if case.state != CaseState.IMPLEMENTING:
            raise MilestoneUpdateError(f"{case_ref} is {case.state.value}, not implementing a plan")
        plan = current_plan(session, case.id, PlanStatus.APPROVED)
        action = None
        if plan is not None:
            action = session.exec(
                select(PlanAction).where(PlanAction.plan_id == plan.id, PlanAction.key == key)
            ).first()
        if action is None:
            raise MilestoneUpdateError(f"{case_ref} has no milestone {key} in its approved plan")
        person = session.exec(select(Stakeholder).where(Stakeholder.key == by)).first()
        if person is None:
            raise MilestoneUpdateError(f"unknown stakeholder {by}")
        leads = {s.id for s in members_of(session, case.id, Role.CASE_LEAD)}
        is_owner, is_lead = action.owner_id == person.id, person.id in leads
        if status in (MilestoneStatus.VERIFIED, MilestoneStatus.WAIVED) and not is_lead:
            raise MilestoneUpdateError("only the case lead verifies or waives a milestone")
        if status in (MilestoneStatus.ACTIVE, MilestoneStatus.DONE) and not (is_owner or is_lead):
            raise MilestoneUpdateError(
                "only the milestone's owner or the case lead reports progress"
            )
        if status not in (
            MilestoneStatus.ACTIVE,
            MilestoneStatus.DONE,
            MilestoneStatus.VERIFIED,
            MilestoneStatus.WAIVED,
        ):
            raise MilestoneUpdateError(f"a milestone cannot be set to {status.value}")
        if status == MilestoneStatus.WAIVED and not note.strip():
            raise MilestoneUpdateError("waiving a milestone needs a reason (--note)")
        if status == MilestoneStatus.VERIFIED and not (evidence or action.evidence_refs):
            raise MilestoneUpdateError("verifying a milestone needs evidence (--evidence)")
        if action.status in CLOSED_MILESTONES:
            raise MilestoneUpdateError(f"milestone {key} is {action.status.value} already")
        session.add(
            ProgressUpdate(
                action_id=action.id,
                case_id=case.id,
                reported_by_id=person.id,
                reported_at=now,
                status=status,
                note=note.strip()[:4000] or None,
                evidence_refs=evidence,
                idempotency_key=idempotency_key,
            )
        )
        action.status, action.status_changed_at = status, now
        action.evidence_refs = [*action.evidence_refs, *evidence]
        if status == MilestoneStatus.WAIVED:
            action.waived_reason = note.strip()[:2000]
        session.add(action)
        session.flush()
        append_audit(
            session,
            chain=case.reference,
            actor=f"stakeholder:{person.key}",
            action="milestone.updated",
            at=now,
            subject_type="plan_action",
            subject_id=str(action.id),
            details={"milestone": key, "status": status.value, "evidence": len(evidence)},
        )
        summary = milestone_summary(session, case.id)
        if summary.total and summary.open == 0:
            move(session, case, CaseEvent.PLAN_COMPLETED, now=now, actor=f"stakeholder:{by}")
        return _milestone_result(session, case, key, status)


def _milestone_result(
    session: Session, case: RemediationCase, key: str, status: MilestoneStatus
) -> MilestoneResult:
    summary = milestone_summary(session, case.id)
    return MilestoneResult(
        case_ref=case.reference,
        key=key,
        status=status,
        open_milestones=summary.open,
        plan_completed=case.state != CaseState.IMPLEMENTING and summary.open == 0,
    )


# --- step 5: incident closure --------------------------------------------------------------------


def handle_closure(ctx: HandlerContext) -> Verdict:
    form = ctx.form
    assert isinstance(form, ClosureForm)
    problems = closure_check(
        form.closure_type,
        milestone_summary(ctx.session, ctx.case.id),
        form.victim_view_recorded,
        form.unresolved_authorised,
    )
    no_case = (ClosureType.NO_BASIS, ClosureType.DUPLICATE)
    if form.closure_type in no_case and ctx.case.closure_type not in no_case:
        # only screening or verification can find there is no case; a remedied case is not one
        problems.append(
            f"'{form.closure_type.value}' is for allegations screened out or unsubstantiated."
        )
    if problems:
        raise RefusedError("the closure criteria are not met: " + " ".join(problems))
    return Verdict(form.closure_type.value)


def closure_proposal(session: Session, case: RemediationCase) -> Decision | None:
    """Return the closure proposal that is waiting for its second approver, if any."""
    return session.exec(
        select(Decision)
        .join(DecisionRequest, col(DecisionRequest.id) == col(Decision.request_id))
        .where(
            Decision.case_id == case.id,
            Decision.kind == DecisionKind.CLOSURE,
            DecisionRequest.status == DecisionRequestStatus.DECIDED,
        )
        .order_by(col(Decision.decided_at).desc())
    ).first()


def handle_closure_confirmation(ctx: HandlerContext) -> Verdict:
    form = ctx.form
    assert isinstance(form, ClosureConfirmationForm)
    session, case = ctx.session, ctx.case
    proposal = closure_proposal(session, case)
    if proposal is None:
        raise RefusedError("there is no closure proposal to confirm")
    if proposal.approver_id == ctx.approver.id:
        raise RefusedError("the closure must be confirmed by a second, different approver")
    if not form.confirm:
        if not form.reason.strip():
            raise RefusedError("give a reason when rejecting the closure")
        proposal_request = session.get(DecisionRequest, proposal.request_id)
        assert proposal_request is not None
        proposal_request.status = DecisionRequestStatus.SUPERSEDED
        session.add(proposal_request)
        return Verdict("rejected")
    proposed = ClosureForm.model_validate(
        {**proposal.payload, "approver": "x", "approval_code": "xxxx"}
    )
    problems = closure_check(
        proposed.closure_type,
        milestone_summary(session, case.id),
        proposed.victim_view_recorded,
        proposed.unresolved_authorised,
    )
    approvers = (str(proposal.approver_id), str(ctx.approver.id))
    _transition(
        ctx,
        CaseEvent.CASE_CLOSED,
        closure_approvers=approvers,
        closure_criteria_met=not problems,
    )
    case.closure_type = proposed.closure_type
    session.add(case)
    session.add(
        ClosureRecord(
            case_id=case.id,
            closure_type=proposed.closure_type,
            victim_view_recorded=proposed.victim_view_recorded,
            victim_view=proposed.victim_view.strip() or None,
            unmet_needs=proposed.unmet_needs.strip() or None,
            approver_ids=list(approvers),
            closed_at=ctx.now,
            follow_up_on=(ctx.now + timedelta(days=proposed.follow_up_days)).date()
            if proposed.follow_up_days
            else None,
        )
    )
    notify(
        session,
        routing=current_routing(),
        event=NotificationEvent.CASE_CLOSED,
        case=case,
        key=f"case-closed:{case.id}:{case.version}",
        now=ctx.now,
        context={
            "case_ref": case.reference,
            "step": 5,
            "closure_type": proposed.closure_type.value,
        },
    )
    return Verdict("confirmed")


# --- step 6: capture lessons ---------------------------------------------------------------------


def handle_lessons(ctx: HandlerContext) -> Verdict:
    form = ctx.form
    assert isinstance(form, LessonsForm)
    session, case = ctx.session, ctx.case
    lesson = session.exec(select(Lesson).where(Lesson.case_id == case.id)).first()
    if lesson is None:
        lesson = Lesson(case_id=case.id, recorded_at=ctx.now)
    lesson.root_causes = [r.value for r in form.root_causes]
    lesson.changes = [
        {"change": c.strip()[:500], "owner_role": form.change_owner_role.value}
        for c in form.changes
        if c.strip()
    ]
    lesson.summary = form.summary.strip() or None
    lesson.recorded_at = ctx.now
    session.add(lesson)
    _transition(ctx, CaseEvent.LESSONS_RECORDED)
    notify(
        session,
        routing=current_routing(),
        event=NotificationEvent.LESSONS_READY,
        case=case,
        key=f"lessons-ready:{case.id}:{case.version}",
        now=ctx.now,
        context={"case_ref": case.reference, "step": 6, "root_causes": lesson.root_causes},
    )
    return Verdict("recorded")


# --- what approvers see, and what their forms start with -----------------------------------------


def _facts_md(session: Session, case: RemediationCase) -> str:
    a = _allegation(session, case)
    persons = _persons(session, case)
    people = ", ".join(
        f"{p.pseudonym} ({p.age_band.value}{', minor' if p.is_minor else ''}"
        f"{', age uncertain' if p.age_uncertain else ''})"
        for p in persons
    )
    lines = [
        f"- Reported by: {a.source_type.value} via {a.channel.value}"
        f"{' (anonymous)' if a.anonymous else ''}, received {a.received_at:%Y-%m-%d}",
        f"- Where: {a.country}{' / ' + a.site if a.site else ''}; mineral: {a.mineral.value}",
        f"- Persons reported: {a.persons_reported}; recorded: {people or 'none'}",
        f"- Preliminary severity: {case.severity.value if case.severity else 'unknown'}",
    ]
    if a.reported_indicators:
        lines.append("- ILO indicators reported: " + ", ".join(a.reported_indicators))
    return "\n".join(lines)


def _describe_screening(session: Session, case: RemediationCase, _r: DecisionRequest) -> str:
    return (
        "Is this allegation plausible and new? Accept it for verification, mark it a duplicate "
        "of another case, or reject it with a reason (it stays appealable).\n\n"
        + _facts_md(session, case)
    )


def _describe_safety(session: Session, case: RemediationCase, _r: DecisionRequest) -> str:
    return (
        "Before anyone contacts the affected persons or notifies the supplier, assess the risks "
        "to them (retaliation, contact by traffickers, immigration status, family). Assume the "
        "risk is high until evidence shows otherwise.\n\n" + _facts_md(session, case)
    )


def _describe_verification(session: Session, case: RemediationCase, _r: DecisionRequest) -> str:
    safety = session.exec(
        select(SafetyAssessment)
        .where(SafetyAssessment.case_id == case.id)
        .order_by(col(SafetyAssessment.assessed_at).desc())
    ).first()
    note = (
        f"- Safety: risk {safety.risk_level.value}; contact "
        f"{'cleared' if safety.contact_cleared else 'NOT cleared'}"
        if safety
        else "- Safety: not assessed"
    )
    return (
        "Record the findings against the 11 ILO indicators and the Palermo test (act, means, "
        "purpose; no means is needed for children), and decide: substantiated, unsubstantiated "
        "(the case closes with your reasons) or inconclusive (more inquiry; asked again).\n\n"
        + _facts_md(session, case)
        + "\n"
        + note
    )


def _describe_impact(session: Session, case: RemediationCase, _r: DecisionRequest) -> str:
    finding = _latest_finding(session, case)
    present = [k for k, v in finding.ilo_indicators.items() if v == "present"] if finding else []
    return (
        "How is the company involved (cause / contribute / directly linked, UNGP 19), and how "
        "severe is the harm (scale, scope, irremediable character)? Policy derives the response "
        "level from your answers.\n\n"
        f"- Indicators found present: {', '.join(present) or 'none'}\n"
        f"- Annex II: {', '.join(finding.annex_ii) if finding and finding.annex_ii else 'none'}\n"
        f"- Trafficking indicated: {'yes' if finding and finding.trafficking_indicated else 'no'}"
    )


def _describe_response(session: Session, case: RemediationCase, _r: DecisionRequest) -> str:
    level = case.response_level.value if case.response_level else "?"
    role = {
        RemedyRole.PROVIDE: "provide remedy itself",
        RemedyRole.COOPERATE: "provide or cooperate in remedy",
        RemedyRole.USE_LEVERAGE: "use its leverage (it may take part in remedy)",
    }
    return (
        f"- Involvement: **{case.involvement.value if case.involvement else '?'}**, so the "
        f"company must {role[case.remedy_role] if case.remedy_role else '?'}\n"
        f"- Severity: **{case.severity.value if case.severity else '?'}**\n"
        f"- Response level derived by policy: **{level}** "
        "(level_1 is the most urgent). Accept it, or override it with a reason.\n\n"
        "Decide the business relationship (disengagement is a last resort: weigh its effect on "
        "the workers) and whether to refer to law enforcement (weigh victim safety and consent)."
    )


def _plan_md(session: Session, case: RemediationCase) -> str:
    draft = current_plan(session, case.id, PlanStatus.DRAFT)
    if draft is None:
        return "No draft plan."
    rows = session.exec(
        select(PlanAction, Stakeholder.key)
        .join(Stakeholder, col(Stakeholder.id) == col(PlanAction.owner_id), isouter=True)
        .where(PlanAction.plan_id == draft.id)
        .order_by(col(PlanAction.due_on), col(PlanAction.key))
    ).all()
    lines = [
        f"Draft plan, version {draft.version}:",
        "",
        "| key | action | owner | due | verified by |",
        "|---|---|---|---|---|",
    ]
    for action, owner in rows:
        lines.append(
            f"| {action.key} | {action.title} | {owner or '-'} | {action.due_on} "
            f"| {action.verification_method} |"
        )
    return "\n".join(lines)


def _describe_agreement(session: Session, case: RemediationCase, _r: DecisionRequest) -> str:
    return (
        "Does the plan reflect the affected persons' own priorities? Record their informed "
        "consent (in their language, with the method used). You may remove actions they do not "
        "want (agree with changes), or refuse and say what must change.\n\n"
        + _plan_md(session, case)
    )


def _describe_budget(session: Session, case: RemediationCase, _r: DecisionRequest) -> str:
    return (
        "Approve the funding of this plan. Who pays follows the company's involvement: "
        f"**{case.involvement.value if case.involvement else '?'}**.\n\n" + _plan_md(session, case)
    )


def _describe_closure(session: Session, case: RemediationCase, _r: DecisionRequest) -> str:
    s = milestone_summary(session, case.id)
    return (
        "Propose the closure. Resolved closures need every milestone verified (or waived with a "
        "reason) and the victims' view recorded; an unresolved closure needs management's "
        "authorisation. A second, different approver confirms.\n\n"
        f"- Milestones: {s.total} in all, {s.verified} verified, {s.waived_with_reason} waived, "
        f"{s.open} open\n"
        f"- Closure type so far: {case.closure_type.value if case.closure_type else 'not set'}"
    )


def _describe_confirmation(session: Session, case: RemediationCase, _r: DecisionRequest) -> str:
    proposal = closure_proposal(session, case)
    if proposal is None:
        return "No closure proposal."
    who = session.get(Stakeholder, proposal.approver_id)
    p = proposal.payload
    return (
        f"{who.key if who else '?'} proposes to close the case as **{p.get('closure_type')}**.\n\n"
        f"- Victims' view recorded: {'yes' if p.get('victim_view_recorded') else 'no'}\n"
        f"- Unresolved closure authorised: {'yes' if p.get('unresolved_authorised') else 'no'}\n"
        f"- Follow-up in {p.get('follow_up_days', 0)} days\n\n"
        "Confirm it, or reject it with a reason (the proposal is then made again)."
    )


def _describe_lessons(session: Session, case: RemediationCase, _r: DecisionRequest) -> str:
    closure = session.exec(select(ClosureRecord).where(ClosureRecord.case_id == case.id)).first()
    closed = f"{case.closed_at:%Y-%m-%d}" if case.closed_at else "not yet"
    return (
        "What made this harm possible, and what must change so it does not happen again? "
        "Include the company's own purchasing practices and management-system failures.\n\n"
        f"- Closed as: {closure.closure_type.value if closure else '?'}\n"
        f"- Opened {case.opened_at:%Y-%m-%d}, closed {closed}"
    )


def _initial_verification(session: Session, case: RemediationCase) -> dict[str, Any]:
    persons = _persons(session, case)
    return {"minors_involved": any(p.is_minor or p.age_uncertain for p in persons)}


def _initial_impact(session: Session, case: RemediationCase) -> dict[str, Any]:
    finding = _latest_finding(session, case)
    return {
        "persons_affected": max(_allegation(session, case).persons_reported, 1),
        "minors_involved": bool(finding and finding.minors_involved),
    }


def _initial_closure(session: Session, case: RemediationCase) -> dict[str, Any]:
    return {"closure_type": (case.closure_type or ClosureType.RESOLVED_ACCEPTED).value}


REGISTRY: dict[DecisionKind, tuple[Callable[[HandlerContext], Verdict], Any]] = {
    DecisionKind.SCREENING: (handle_screening, _describe_screening),
    DecisionKind.SAFETY: (handle_safety, _describe_safety),
    DecisionKind.VERIFICATION: (handle_verification, _describe_verification),
    DecisionKind.IMPACT_ASSESSMENT: (handle_impact_assessment, _describe_impact),
    DecisionKind.RESPONSE: (handle_response, _describe_response),
    DecisionKind.PLAN_AGREEMENT: (handle_plan_agreement, _describe_agreement),
    DecisionKind.PLAN_BUDGET: (handle_plan_budget, _describe_budget),
    DecisionKind.CLOSURE: (handle_closure, _describe_closure),
    DecisionKind.CLOSURE_CONFIRMATION: (handle_closure_confirmation, _describe_confirmation),
    DecisionKind.LESSONS: (handle_lessons, _describe_lessons),
}
for _kind, (_handler, _describer) in REGISTRY.items():
    HANDLERS[_kind] = _handler
    DESCRIBERS[_kind] = _describer
INITIAL_DATA.update(
    {
        DecisionKind.VERIFICATION: _initial_verification,
        DecisionKind.IMPACT_ASSESSMENT: _initial_impact,
        DecisionKind.CLOSURE: _initial_closure,
    }
)


# --- milestone due-date extensions ---------------------------------------------------------------


def _open_milestone(session: Session, case: RemediationCase, key: str) -> PlanAction:
    plan = current_plan(session, case.id, PlanStatus.APPROVED)
    action = None
    if plan is not None:
        action = session.exec(
            select(PlanAction).where(PlanAction.plan_id == plan.id, PlanAction.key == key)
        ).first()
    if action is None:
        raise MilestoneUpdateError(f"{case.reference} has no milestone {key} in its approved plan")
    if action.status in CLOSED_MILESTONES:
        raise MilestoneUpdateError(f"milestone {key} is {action.status.value} already")
    return action


def request_extension(
    case_ref: str, key: str, *, to: date, reason: str, by: str, now: datetime
) -> None:
    """Ask for a later due date (the milestone's owner, with a reason); the case lead decides."""
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        action = _open_milestone(session, case, key)
        person = session.exec(select(Stakeholder).where(Stakeholder.key == by)).first()
        if person is None or person.id != action.owner_id:
            raise MilestoneUpdateError("only the milestone's owner asks for an extension")
        if to <= action.due_on:
            raise MilestoneUpdateError(f"the new date must be after {action.due_on}")
        if not reason.strip():
            raise MilestoneUpdateError("an extension needs a reason (--reason)")
        action.extension_due_on, action.extension_reason = to, reason.strip()[:2000]
        action.extension_requested_by_id = person.id
        session.add(action)
        append_audit(
            session,
            chain=case.reference,
            actor=f"stakeholder:{by}",
            action="milestone.extension_requested",
            at=now,
            subject_type="plan_action",
            subject_id=str(action.id),
            details={"milestone": key, "from": str(action.due_on), "to": str(to)},
        )


def decide_extension(
    case_ref: str, key: str, *, approve: bool, by: str, now: datetime, reason: str = ""
) -> date:
    """The case lead approves (the due date moves; reminders follow it) or refuses; audited."""
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        action = _open_milestone(session, case, key)
        leads = {p.key for p in members_of(session, case.id, Role.CASE_LEAD)}
        if by not in leads:
            raise MilestoneUpdateError("only the case lead approves or refuses an extension")
        if action.extension_due_on is None:
            raise MilestoneUpdateError(f"nobody asked to extend milestone {key}")
        if not approve and not reason.strip():
            raise MilestoneUpdateError("refusing an extension needs a reason (--reason)")
        before, asked = action.due_on, action.extension_due_on
        if approve:
            action.due_on = asked
        action.extension_due_on = action.extension_reason = None
        action.extension_requested_by_id = None
        session.add(action)
        append_audit(
            session,
            chain=case.reference,
            actor=f"stakeholder:{by}",
            action="milestone.extended" if approve else "milestone.extension_refused",
            at=now,
            subject_type="plan_action",
            subject_id=str(action.id),
            details={"milestone": key, "from": str(before), "to": str(asked)},
        )
        return action.due_on
