"""The sample case through all six steps on real stores, through the plain functions the step
flows call, with the scripted stakeholders' answers and each step handed over to the next.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from models.enums import (
    CaseEvent,
    CaseState,
    CaseStatus,
    ClosureType,
    ConsentMethod,
    ConsentPurpose,
    DecisionKind,
    DecisionRequestStatus,
    IndicatorStatus,
    Involvement,
    MilestoneStatus,
    NotificationChannel,
    PlanStatus,
    RemedyRole,
    ResponseLevel,
    ScreeningOutcome,
    Severity,
    Step,
)
from models.policy import remedy_role, response_level
from models.tables import (
    ActionPlan,
    AffectedPerson,
    Allegation,
    ClosureRecord,
    ConsentRecord,
    Decision,
    DecisionRequest,
    Lesson,
    Notification,
    SafetyAssessment,
    StepRun,
    VerificationFinding,
)
from tasks.case_state import begin_case, mark_handed_over, pending_handover
from tasks.context import current_policy
from tasks.intake import open_case, read_report
from tasks.steps.implement import activate_plan
from tasks.steps.plan import draft_plan
from tasks.steps.table import DECISIONS
from tests.conftest import Store
from tests.integration.factories import (
    ADVOCATE,
    LEAD,
    OBSERVER,
    SAMPLE_REPORT,
    SENIOR,
    SUPPLIER,
    Clock,
    SampleCase,
    count,
    implement,
    load_sample_directory,
    rows,
    stakeholder_id,
)
from tests.integration.steps_helpers import (
    FINISHED,
    PENDING,
    STARTED,
    assert_state,
    plan_keys,
    step_runs,
    transitions,
)

CHILD_ACTIONS = {
    f"{key}-{who}"
    for key in ("child-removal", "child-guardian", "child-schooling")
    for who in ("p-01", "p-02")
}


def hand_over(case: SampleCase, step: Step) -> None:
    """Do what the ending step's hand-over does: start the next step's run, then that run opens."""
    pending = pending_handover(case.ref)
    assert pending is not None and pending.step == step and pending.needs_start
    assert pending.idempotency_key == f"{case.ref.lower()}-step-{int(step)}-entry-1"
    run_id = uuid.uuid4()
    mark_handed_over(case.ref, step, pending.entry, run_id, now=case.clock.tick())
    assert pending_handover(case.ref) is None
    [run] = [r for r in rows(StepRun, StepRun.case_id == case.case().id) if r.step == step]
    assert (run.status, run.flow_run_id) == (STARTED, run_id)
    case.enter(step, run_id)


def test_the_sample_case_through_all_six_steps(store: Store) -> None:
    clock = Clock()
    load_sample_directory(clock.now)
    ref = open_case(
        read_report(SAMPLE_REPORT, now=clock.now), now=clock.tick(), actor="test"
    ).reference
    ctx = begin_case(ref, now=clock.tick())
    case = SampleCase(ref=ref, clock=clock, ctx=ctx)

    # intake -> step 1: the entry waits for its run until it is handed over
    assert_state(case, CaseState.VERIFYING, Step.VERIFY, CaseStatus.ACTIVE)
    assert step_runs(case) == [(1, 1, PENDING)]
    hand_over(case, Step.VERIFY)
    assert case.ctx.active and case.ctx.entry == 1 and case.ctx.scope == "entry-1"

    # step 1: screening, safety before contact, findings and the decision
    case.decide(DecisionKind.SCREENING)
    safety = case.decide(DecisionKind.SAFETY)
    assert safety.approver == ADVOCATE and safety.outcome == "high"
    [assessment] = rows(SafetyAssessment, SafetyAssessment.case_id == case.case().id)
    assert assessment.contact_cleared and assessment.risks == ["retaliation", "trafficker_contact"]
    assert assessment.valid_until == assessment.assessed_at + timedelta(days=90)
    pending = case.prepare(DecisionKind.VERIFICATION)
    assert pending.initial == {"minors_involved": True}
    assert "Safety: risk high; contact cleared" in pending.description
    case.decide(DecisionKind.VERIFICATION)
    [finding] = rows(VerificationFinding, VerificationFinding.case_id == case.case().id)
    assert finding.ilo_indicators["retention_of_identity_documents"] == "present"
    assert finding.ilo_indicators["isolation"] == "unknown"
    assert finding.palermo_means == IndicatorStatus.PRESENT
    assert finding.trafficking_indicated and finding.forced_labour_indicated
    assert finding.annex_ii == ["forced_labour", "worst_forms_child_labour"]
    assert finding.assessed_by_id == stakeholder_id("amani.verifier")
    [allegation] = rows(Allegation, Allegation.case_id == case.case().id)
    assert allegation.screening_outcome == ScreeningOutcome.ACCEPTED
    assert_state(case, CaseState.DETERMINING_RESPONSE, Step.RESPOND, CaseStatus.ACTIVE)
    assert step_runs(case) == [(1, 1, FINISHED), (2, 1, PENDING)]

    # step 2: involvement and severity, then the response decision
    hand_over(case, Step.RESPOND)
    pending = case.prepare(DecisionKind.IMPACT_ASSESSMENT)
    assert pending.initial == {"persons_affected": 12, "minors_involved": True}
    impact = case.decide(DecisionKind.IMPACT_ASSESSMENT)
    stored = case.case()
    derived = response_level(Involvement.DIRECTLY_LINKED, Severity.CRITICAL, current_policy())
    # high scale, 12 persons, difficult to reverse: high; a minor raises it to critical
    assert impact.outcome == "critical" and stored.severity == Severity.CRITICAL
    assert stored.severity_is_final and stored.involvement == Involvement.DIRECTLY_LINKED
    assert stored.response_level == derived == ResponseLevel.LEVEL_1
    assert stored.remedy_role == remedy_role(Involvement.DIRECTLY_LINKED) == RemedyRole.USE_LEVERAGE
    [impact_row] = rows(Decision, Decision.id == impact.id)
    assert impact_row.payload["derived_response_level"] == "level_1"
    assert impact_row.payload["severity"] == "critical"
    pending = case.prepare(DecisionKind.RESPONSE)
    assert "Response level derived by policy: **level_1**" in pending.description
    assert "Severity: **critical**" in pending.description
    response = case.decide(DecisionKind.RESPONSE)
    assert response.approver == SENIOR and response.outcome == "level_1"
    assert_state(case, CaseState.DESIGNING_PLAN, Step.PLAN, CaseStatus.ACTIVE)
    assert step_runs(case) == [(1, 1, FINISHED), (2, 1, FINISHED), (3, 1, PENDING)]

    # step 3: a draft from the templates, the victims' agreement, the budget
    hand_over(case, Step.PLAN)
    assert draft_plan(case.ref, now=clock.tick()) == 1
    actions = plan_keys(case, 1)
    assert {"safety-planning", "document-return", "fee-reimbursement", "debt-cancellation"} <= set(
        actions
    )
    assert set(actions) >= CHILD_ACTIONS
    assert not {k for k in actions if k.startswith("child-") and k.endswith("-p-03")}
    persons = {p.pseudonym: p.id for p in rows(AffectedPerson)}
    assert actions["child-removal-p-02"].person_id == persons["P-02"]
    assert actions["document-return"].owner_id == stakeholder_id(SUPPLIER)
    assert actions["child-guardian-p-01"].owner_id == stakeholder_id(ADVOCATE)
    assert actions["recruiter-reported"].owner_id == stakeholder_id(LEAD)
    assert all(a.status == MilestoneStatus.PLANNED for a in actions.values())
    pending = case.prepare(DecisionKind.PLAN_AGREEMENT)
    assert "| document-return |" in pending.description
    case.decide(DecisionKind.PLAN_AGREEMENT)
    consents = rows(ConsentRecord, ConsentRecord.case_id == case.case().id)
    assert sorted((c.person_id, c.purpose) for c in consents) == sorted(
        (pid, purpose)
        for pid in persons.values()
        for purpose in (ConsentPurpose.CASE_HANDLING, ConsentPurpose.SHARE_WITH_SERVICE_PROVIDER)
    )
    assert all(c.method == ConsentMethod.VERBAL and c.interpreter_used for c in consents)
    assert all(c.recorded_by_id == stakeholder_id(ADVOCATE) for c in consents)
    budget = case.decide(DecisionKind.PLAN_BUDGET)
    assert budget.outcome == "approved"
    [approved] = rows(ActionPlan, ActionPlan.case_id == case.case().id)
    assert approved.status == PlanStatus.APPROVED and approved.approved_at is not None
    assert approved.victim_priorities is not None
    assert_state(case, CaseState.IMPLEMENTING, Step.IMPLEMENT, CaseStatus.ACTIVE)
    assert [r[2] for r in step_runs(case)] == [FINISHED, FINISHED, FINISHED, PENDING]

    # step 4: milestones activated and their owners told, once
    hand_over(case, Step.IMPLEMENT)
    assert activate_plan(case.ref, now=clock.tick()) == len(actions)
    active = plan_keys(case, 1)
    assert {a.status for a in active.values()} == {MilestoneStatus.ACTIVE}
    assigned = [
        n
        for n in rows(Notification, Notification.event == "milestone_assigned")
        if n.channel == NotificationChannel.EMAIL
    ]
    assert sorted((n.context["milestone"], n.recipient_id) for n in assigned) == sorted(
        (a.key, a.owner_id) for a in active.values() if a.owner_id is not None
    )
    assert len(assigned) == len(actions)
    before, events = store.row_counts(), len(case.audit())
    assert activate_plan(case.ref, now=clock.tick()) == 0
    assert store.row_counts() == before and len(case.audit()) == events
    implement(case)
    assert_state(case, CaseState.CLOSING, Step.CLOSE, CaseStatus.ACTIVE)
    assert {a.status for a in plan_keys(case, 1).values()} == {MilestoneStatus.VERIFIED}
    assert [r[:2] for r in step_runs(case)][-1] == (5, 1)
    assert step_runs(case)[-2:] == [(4, 1, FINISHED), (5, 1, PENDING)]

    # step 5: the closure, confirmed by a second approver
    hand_over(case, Step.CLOSE)
    assert case.prepare(DecisionKind.CLOSURE).initial == {"closure_type": "resolved_accepted"}
    proposal = case.decide(DecisionKind.CLOSURE)
    assert proposal.outcome == "resolved_accepted"
    assert_state(case, CaseState.CLOSING, Step.CLOSE, CaseStatus.ACTIVE)
    confirmation = case.decide(
        DecisionKind.CLOSURE_CONFIRMATION,
        scope=case.confirmation_scope(proposal),
        exclude=[proposal.approver_id],
    )
    assert confirmation.approver == SENIOR and confirmation.outcome == "confirmed"
    assert_state(case, CaseState.CLOSED, Step.LESSONS, CaseStatus.CLOSED)
    closed = case.case()
    assert closed.closed_at == confirmation.decided_at
    assert closed.closure_type == ClosureType.RESOLVED_ACCEPTED
    [record] = rows(ClosureRecord, ClosureRecord.case_id == closed.id)
    assert record.approver_ids == [str(stakeholder_id(LEAD)), str(stakeholder_id(SENIOR))]
    assert record.closure_type == ClosureType.RESOLVED_ACCEPTED and record.victim_view_recorded
    assert record.follow_up_on == (confirmation.decided_at + timedelta(days=90)).date()
    told = rows(Notification, Notification.event == "case_closed")
    # as notifications/routing.toml says: lead, senior, victim representative, observer by
    # e-mail (the advocate once for both roles), and the lead on chat too
    assert sorted((n.recipient_id, n.channel.value) for n in told) == sorted(
        [
            (stakeholder_id(LEAD), "email"),
            (stakeholder_id(LEAD), "chat"),
            (stakeholder_id(SENIOR), "email"),
            (stakeholder_id(ADVOCATE), "email"),
            (stakeholder_id(OBSERVER), "email"),
        ]
    )
    assert step_runs(case)[-2:] == [(5, 1, FINISHED), (6, 1, PENDING)]

    # step 6: lessons
    hand_over(case, Step.LESSONS)
    case.decide(DecisionKind.LESSONS)
    assert_state(case, CaseState.LESSONS_CAPTURED, Step.LESSONS, CaseStatus.CLOSED)
    [lesson] = rows(Lesson, Lesson.case_id == closed.id)
    assert lesson.root_causes == ["recruitment_fees", "document_retention", "weak_age_verification"]
    assert [c["owner_role"] for c in lesson.changes] == ["case_lead", "case_lead"]
    assert step_runs(case) == [(s, 1, FINISHED) for s in range(1, 7)]
    assert pending_handover(case.ref) is None

    # the audit chain holds, with the lifecycle in order and every decision taken once
    assert case.chain().ok
    assert transitions(case) == [
        (CaseEvent.START_VERIFICATION, "intake", "verifying"),
        (CaseEvent.SUBSTANTIATED, "verifying", "determining_response"),
        (CaseEvent.RESPONSE_APPROVED, "determining_response", "designing_plan"),
        (CaseEvent.PLAN_APPROVED, "designing_plan", "implementing"),
        (CaseEvent.PLAN_COMPLETED, "implementing", "closing"),
        (CaseEvent.CASE_CLOSED, "closing", "closed"),
        (CaseEvent.LESSONS_RECORDED, "closed", "lessons_captured"),
    ]
    taken = [e.details["kind"] for e in case.audit() if e.action == "decision.taken"]
    assert taken == [k.value for k in DECISIONS]  # each kind of form, in the order of the steps
    assert "decision.refused" not in case.actions()
    assert count(DecisionRequest, DecisionRequest.status == DecisionRequestStatus.WAITING) == 0
