"""Case controls on real stores: hold and resume, early closure, plan revision, reopening.

Each control is one transition with its audit events; the step it leaves gets its waiting
decisions cancelled (and names the runs that waited on them), and the step it enters starts a new
entry, whose decisions are asked afresh.
"""

from __future__ import annotations

import pytest

from models.enums import (
    CaseState,
    CaseStatus,
    ClosureType,
    ConsentMethod,
    ConsentPurpose,
    DecisionKind,
    DecisionRequestStatus,
    MilestoneStatus,
    PlanStatus,
    Role,
    Step,
    StepRunStatus,
)
from models.tables import ActionPlan, ClosureRecord, ConsentRecord, DecisionRequest, StepRun
from tasks.case_state import facts_for, pending_handover
from tasks.controls import (
    ControlError,
    close_early,
    renew_consent,
    reopen_case,
    revise_plan,
    withdraw_consent,
)
from tasks.decisions.requests import StepLeftError, prepare_decision
from tasks.steps.implement import activate_plan, update_milestone
from tasks.steps.plan import draft_plan
from tasks.store.consent import withdrawn_people
from tasks.store.db import read_only
from tasks.store.directory import add_member
from tests.conftest import Store
from tests.integration.factories import (
    ADVOCATE,
    BUDGET,
    LEAD,
    OBSERVER,
    SENIOR,
    Clock,
    SampleCase,
    milestones,
    rows,
    start_sample_case,
    to_closing,
    to_implementing,
)

PENDING, STARTED, FINISHED = StepRunStatus.PENDING, StepRunStatus.STARTED, StepRunStatus.FINISHED


def step_runs(case: SampleCase) -> list[tuple[int, int, StepRunStatus]]:
    return sorted(
        (r.step, r.entry, r.status) for r in rows(StepRun, StepRun.case_id == case.case().id)
    )


def requests(case: SampleCase, kind: DecisionKind) -> list[tuple[str, DecisionRequestStatus]]:
    found = rows(
        DecisionRequest, DecisionRequest.case_id == case.case().id, DecisionRequest.kind == kind
    )
    return sorted((r.scope, r.status) for r in found)


def consent_active(case: SampleCase) -> bool:
    with read_only() as session:
        stored = case.case()
        return facts_for(session, stored, now=case.clock.now).consent_active


def withdraw(case: SampleCase, pseudonym: str, by: str = LEAD) -> None:
    withdraw_consent(
        case.ref, pseudonym, purpose=ConsentPurpose.CASE_HANDLING, by=by, now=case.clock.tick()
    )


def renew(case: SampleCase, pseudonym: str, by: str = ADVOCATE) -> CaseState:
    result = renew_consent(
        case.ref,
        pseudonym,
        purpose=ConsentPurpose.CASE_HANDLING,
        by=by,
        method=ConsentMethod.WRITTEN,
        now=case.clock.tick(),
    )
    return result.state


def close_unresolved(case: SampleCase, closure_type: ClosureType) -> None:
    """Step 5 for an early closure: a proposal and a second approver's confirmation."""
    case.enter(Step.CLOSE)
    proposal = case.decide(
        DecisionKind.CLOSURE,
        closure_type=closure_type.value,
        victim_view_recorded=False,
        unresolved_authorised=closure_type == ClosureType.UNRESOLVED_AUTHORISED,
    )
    case.decide(
        DecisionKind.CLOSURE_CONFIRMATION,
        scope=case.confirmation_scope(proposal),
        exclude=[proposal.approver_id],
    )


def test_a_withdrawal_holds_the_case_and_renewal_resumes_its_step_afresh(store: Store) -> None:
    case = start_sample_case(Clock())
    case.decide(DecisionKind.SCREENING)
    case.prepare(DecisionKind.SAFETY)  # waits in entry 1 when the withdrawal comes

    with pytest.raises(ControlError, match="no active stakeholder"):
        withdraw(case, "P-02", by="nobody.known")  # anyone in the directory, but someone
    # consent is each person's own: the case goes on while someone's consent stands
    for first in ("P-01", "P-03"):
        early = withdraw_consent(
            case.ref, first, purpose=ConsentPurpose.CASE_HANDLING, by=LEAD, now=case.clock.tick()
        )
        assert (early.state, early.moved, early.stale_runs) == (CaseState.VERIFYING, False, [])
    assert requests(case, DecisionKind.SAFETY) == [("entry-1", DecisionRequestStatus.WAITING)]
    assert consent_active(case)
    # the last one holds the whole case
    result = withdraw_consent(
        case.ref, "P-02", purpose=ConsentPurpose.CASE_HANDLING, by=LEAD, now=case.clock.tick()
    )
    assert (result.state, result.moved, result.stale_runs) == (
        CaseState.ON_HOLD,
        True,
        [case.run_id],
    )
    assert case.case().status == CaseStatus.ON_HOLD and not consent_active(case)
    assert requests(case, DecisionKind.SAFETY) == [("entry-1", DecisionRequestStatus.CANCELLED)]
    assert "decision.cancelled" in case.actions()
    # a run caught between two decisions asks for nothing while the case holds
    with pytest.raises(StepLeftError, match="on_hold"):
        prepare_decision(
            case.ref,
            DecisionKind.SAFETY,
            scope="entry-1",
            flow_run_id=case.run_id,
            now=case.clock.tick(),
            step=1,
        )
    assert requests(case, DecisionKind.SAFETY) == [("entry-1", DecisionRequestStatus.CANCELLED)]

    # only the case lead or the victim representative records a renewal, and only of a withdrawal
    for who in (OBSERVER, "nobody.known"):
        with pytest.raises(ControlError):
            renew(case, "P-02", by=who)
    with pytest.raises(ControlError, match="not withdrawn"):
        renew_consent(
            case.ref,
            "P-01",
            purpose=ConsentPurpose.CONTACT,
            by=ADVOCATE,
            method=ConsentMethod.WRITTEN,
            now=case.clock.tick(),
        )
    assert case.case().state == CaseState.ON_HOLD

    # someone's consent stands again: the case resumes; the others' renewals are recorded
    assert renew(case, "P-02") == CaseState.VERIFYING
    assert case.case().status == CaseStatus.ACTIVE and consent_active(case)
    assert renew(case, "P-01") == CaseState.VERIFYING
    assert renew(case, "P-03", by=LEAD) == CaseState.VERIFYING
    with read_only() as session:
        assert withdrawn_people(session, case.case().id, list(ConsentPurpose)) == set()
    renewed = [
        r
        for r in rows(ConsentRecord)
        if r.withdrawn_at is None and r.method == ConsentMethod.WRITTEN
    ]
    assert len(renewed) == 3

    # the held step starts again as a new entry, and asks its decisions afresh
    assert step_runs(case) == [(1, 1, FINISHED), (1, 2, PENDING)]
    handover = pending_handover(case.ref)
    assert handover is not None and handover.idempotency_key == f"{case.ref.lower()}-step-1-entry-2"
    assert case.enter(Step.VERIFY).scope == "entry-2"
    case.decide(DecisionKind.SCREENING)
    case.decide(DecisionKind.SAFETY)
    case.decide(DecisionKind.VERIFICATION)
    assert case.case().state == CaseState.DETERMINING_RESPONSE
    assert requests(case, DecisionKind.SAFETY) == [
        ("entry-1", DecisionRequestStatus.CANCELLED),
        ("entry-2", DecisionRequestStatus.DECIDED),
    ]
    events = [e.details["event"] for e in case.audit() if e.action == "case.transition"]
    assert events[1:3] == ["consent_withdrawn", "consent_renewed"]
    assert case.chain().ok


def test_a_held_case_can_be_sent_to_closure_by_its_case_lead(store: Store) -> None:
    case = start_sample_case(Clock())
    for pseudonym in ("P-01", "P-02", "P-03"):  # nobody's consent stands: the case holds
        withdraw(case, pseudonym)
    assert case.case().state == CaseState.ON_HOLD
    with pytest.raises(ControlError, match="reason"):
        close_early(case.ref, by=LEAD, reason="  ", now=case.clock.tick())
    with pytest.raises(ControlError, match="case lead or senior approver"):
        close_early(case.ref, by=ADVOCATE, reason="No contact since.", now=case.clock.tick())
    close_early(case.ref, by=LEAD, reason="No contact since the withdrawal.", now=case.clock.tick())
    assert case.case().state == CaseState.CLOSING
    close_unresolved(case, ClosureType.CONSENT_WITHDRAWN)
    assert (case.case().state, case.case().status) == (CaseState.CLOSED, CaseStatus.CLOSED)
    [record] = rows(ClosureRecord, ClosureRecord.case_id == case.case().id)
    assert record.closure_type == ClosureType.CONSENT_WITHDRAWN
    assert "case.closure_requested" in case.actions() and case.chain().ok


def test_closing_a_working_case_unresolved_is_managements_call(store: Store) -> None:
    case = to_implementing(Clock())
    assert case.case().state == CaseState.IMPLEMENTING
    with pytest.raises(ControlError, match="senior approver"):
        close_early(
            case.ref, by=LEAD, reason="The supplier left the region.", now=case.clock.tick()
        )
    assert case.case().state == CaseState.IMPLEMENTING
    close_early(case.ref, by=SENIOR, reason="The supplier left the region.", now=case.clock.tick())
    assert case.case().state == CaseState.CLOSING
    assert step_runs(case)[-1] == (5, 1, PENDING)

    # closing "resolved" still needs every milestone done: the early road is the unresolved one
    case.enter(Step.CLOSE)
    pending = case.prepare(DecisionKind.CLOSURE)
    refused = case.submit(
        pending.request_id,
        LEAD,
        {
            "closure_type": "resolved_accepted",
            "victim_view_recorded": True,
            "victim_view": "",
            "unmet_needs": "",
            "follow_up_days": 0,
        },
    )
    assert not refused.accepted and "milestone(s) still open" in (refused.reason or "")
    close_unresolved(case, ClosureType.UNRESOLVED_AUTHORISED)
    assert case.case().state == CaseState.CLOSED
    with pytest.raises(ControlError, match="cannot be closed early now"):
        close_early(case.ref, by=SENIOR, reason="Again.", now=case.clock.tick())


def test_a_plan_under_way_is_revised_into_a_new_version(store: Store) -> None:
    case = to_implementing(Clock())
    activate_plan(case.ref, now=case.clock.tick())
    [(first, owner), *_] = milestones(case.ref)
    for status, by in ((MilestoneStatus.DONE, owner or LEAD), (MilestoneStatus.VERIFIED, LEAD)):
        update_milestone(
            case.ref, first, status=status, by=by, evidence=["doc:x"], now=case.clock.tick()
        )

    with pytest.raises(ControlError, match="victim representative"):
        revise_plan(
            case.ref, by=LEAD, agreed_by=BUDGET, reason="Needs change.", now=case.clock.tick()
        )
    with pytest.raises(ControlError, match="case lead"):
        revise_plan(
            case.ref, by=ADVOCATE, agreed_by=ADVOCATE, reason="Needs change.", now=case.clock.tick()
        )
    # one person holding both roles still cannot agree with themselves for the victims
    add_member(case.ref, LEAD, Role.VICTIM_REPRESENTATIVE, actor="test", now=case.clock.tick())
    with pytest.raises(ControlError, match="their own revision"):
        revise_plan(case.ref, by=LEAD, agreed_by=LEAD, reason="Mine.", now=case.clock.tick())
    result = revise_plan(
        case.ref,
        by=LEAD,
        agreed_by=ADVOCATE,
        reason="The family moved; medical care elsewhere.",
        now=case.clock.tick(),
    )
    assert result.state == CaseState.DESIGNING_PLAN and result.moved
    assert (3, 2, PENDING) in step_runs(case)
    with pytest.raises(ControlError, match="cannot be revised now"):
        revise_plan(case.ref, by=LEAD, agreed_by=ADVOCATE, reason="Again.", now=case.clock.tick())

    ctx = case.enter(Step.PLAN)
    assert ctx.scope == "entry-2"
    assert draft_plan(case.ref, now=case.clock.tick()) == 2
    v1, v2 = sorted(rows(ActionPlan, ActionPlan.case_id == case.case().id), key=lambda p: p.version)
    assert (v1.status, v2.status) == (
        PlanStatus.APPROVED,
        PlanStatus.DRAFT,
    )  # v1 in force meanwhile
    case.decide(DecisionKind.PLAN_AGREEMENT)
    case.decide(DecisionKind.PLAN_BUDGET)
    v1, v2 = sorted(rows(ActionPlan, ActionPlan.case_id == case.case().id), key=lambda p: p.version)
    assert (v1.status, v2.status) == (PlanStatus.SUPERSEDED, PlanStatus.APPROVED)
    assert case.case().state == CaseState.IMPLEMENTING
    assert first not in {
        k for k, _ in milestones(case.ref)
    }  # what was verified stays verified in v1
    assert "plan.revision_requested" in case.actions() and case.chain().ok


def test_a_closed_case_is_reopened_with_a_reason(store: Store) -> None:
    case = to_closing(Clock())  # screened out: no plan ever
    proposal = case.decide(DecisionKind.CLOSURE, closure_type="no_basis")
    case.decide(
        DecisionKind.CLOSURE_CONFIRMATION,
        scope=case.confirmation_scope(proposal),
        exclude=[proposal.approver_id],
    )
    assert case.case().state == CaseState.CLOSED
    with pytest.raises(ControlError, match="never had an approved plan"):
        reopen_case(case.ref, to="remedy", by=SENIOR, reason="New facts.", now=case.clock.tick())
    with pytest.raises(ControlError, match="case lead or senior approver"):
        reopen_case(
            case.ref, to="verification", by=OBSERVER, reason="New facts.", now=case.clock.tick()
        )
    result = reopen_case(
        case.ref,
        to="verification",
        by=SENIOR,
        reason="A second worker came forward.",
        now=case.clock.tick(),
    )
    assert result.state == CaseState.VERIFYING
    stored = case.case()
    assert (stored.status, stored.closed_at, stored.closure_type) == (CaseStatus.ACTIVE, None, None)
    assert (1, 2, PENDING) in step_runs(case)
    assert case.enter(Step.VERIFY).scope == "entry-2"
    case.decide(DecisionKind.SCREENING)  # asked afresh: the old "rejected" does not count
    assert case.case().state == CaseState.VERIFYING
    assert "case.reopened" in case.actions() and case.chain().ok
