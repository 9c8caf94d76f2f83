"""The sample case through all six steps against a real Prefect server and runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import col, select

from demo.scripted import ScriptedStakeholders
from models.enums import (
    CaseState,
    DecisionKind,
    DecisionRequestStatus,
    MilestoneStatus,
    PlanStatus,
)
from tests.e2e.conftest import E2E
from tests.e2e.helpers import case_runs, flow_name, latest_artifact, open_case, wait_for

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


def _rows(model, **where):  # type: ignore[no-untyped-def]
    from tasks.store.db import read_only

    with read_only() as session:
        query = select(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return list(session.exec(query).all())


def _case(reference: str):  # type: ignore[no-untyped-def]
    from models.tables import RemediationCase

    return _rows(RemediationCase, reference=reference)[0]


def test_sample_case_through_all_six_steps(live: E2E, examples: Path, tmp_path: Path) -> None:
    from models.tables import (
        ActionPlan,
        AuditEvent,
        ClosureRecord,
        ConsentRecord,
        Decision,
        DecisionRequest,
        Lesson,
        PlanAction,
        SafetyAssessment,
        VerificationFinding,
    )
    from tasks.reports.case_view import case_artifact_key
    from tasks.store.audit import verify_chain
    from tasks.store.db import read_only

    ref = open_case(examples, tmp_path)
    case_id = _case(ref).id
    people = ScriptedStakeholders()
    # one refused submission: the case lead's first try carries a wrong code
    people.override_once[DecisionKind.SCREENING] = {"approval_code": "WRONG234"}

    # step 1 -------------------------------------------------------------------------------
    people.drive(ref, until=CaseState.DETERMINING_RESPONSE, timeout=180)
    outcomes = [(s.what, s.who) for s in people.log]
    assert outcomes[:2] == [
        ("screening (refused)", "lena.lead"),
        ("screening (accepted)", "lena.lead"),
    ]
    screening = sorted(
        _rows(DecisionRequest, case_id=case_id, kind=DecisionKind.SCREENING), key=lambda r: r.round
    )
    assert [r.status for r in screening] == [
        DecisionRequestStatus.SUPERSEDED,
        DecisionRequestStatus.DECIDED,
    ]
    assert screening[0].flow_run_id == screening[1].flow_run_id  # the same run asked again
    refused = _rows(AuditEvent, chain=ref, action="decision.refused")
    assert len(refused) == 1 and refused[0].details["reason"] == "the approval code is wrong"
    assert len(_rows(SafetyAssessment, case_id=case_id)) == 1
    [finding] = _rows(VerificationFinding, case_id=case_id)
    assert finding.trafficking_indicated and finding.forced_labour_indicated

    # step 2 -------------------------------------------------------------------------------
    people.drive(ref, until=CaseState.DESIGNING_PLAN, timeout=180)
    case = _case(ref)
    assert case.involvement == "directly_linked" and case.severity_is_final
    assert case.response_level is not None and case.step == 3

    # step 3 -------------------------------------------------------------------------------
    people.drive(ref, until=CaseState.IMPLEMENTING, timeout=180)
    [plan] = _rows(ActionPlan, case_id=case_id)
    assert plan.status == PlanStatus.APPROVED and plan.version == 1
    assert len(_rows(ConsentRecord, case_id=case_id)) == 3 * 2  # 3 persons x 2 purposes
    actions = _rows(PlanAction, plan_id=plan.id)
    keys = {a.key for a in actions}
    assert {"document-return", "fee-reimbursement", "child-removal-p-01"} <= keys

    # step 4: the implement flow activates every milestone
    wait_for(
        lambda: all(a.status == MilestoneStatus.ACTIVE for a in _rows(PlanAction, plan_id=plan.id)),
        what="milestones activated",
    )

    # steps 4-6 ----------------------------------------------------------------------------
    people.drive(ref, until=CaseState.LESSONS_CAPTURED, timeout=300)
    case = _case(ref)
    assert case.closed_at is not None and case.closure_type == "resolved_accepted"
    [closure] = _rows(ClosureRecord, case_id=case_id)
    assert len(set(closure.approver_ids)) == 2  # four eyes
    [lesson] = _rows(Lesson, case_id=case_id)
    assert "recruitment_fees" in lesson.root_causes
    assert all(a.status == MilestoneStatus.VERIFIED for a in _rows(PlanAction, plan_id=plan.id))

    # exactly one decision per request, and the chain holds
    decisions = _rows(Decision, case_id=case_id)
    assert len({d.request_id for d in decisions}) == len(decisions)
    kinds = sorted(d.kind.value for d in decisions)
    assert kinds == sorted(k.value for k in people.script)
    with read_only() as session:
        report = verify_chain(session, ref)
    assert report.ok, report.problem

    # Prefect: every run of the case ended well; lessons were started by the closure event
    runs = wait_for(
        lambda: (
            [r for r in case_runs(ref) if r.state and r.state.is_final()]
            if all(r.state and r.state.is_final() for r in case_runs(ref))
            else None
        ),
        what="all runs final",
    )
    names = {flow_name(r): r for r in runs}
    assert set(names) == {
        "remediation-case",
        "verify-allegation",
        "determine-response",
        "design-action-plan",
        "implement-and-monitor",
        "close-incident",
        "capture-lessons",
    }
    assert all(r.state.is_completed() for r in runs), [(flow_name(r), r.state.name) for r in runs]
    lessons_run = names["capture-lessons"]
    assert lessons_run.created_by is not None and lessons_run.created_by.type == "AUTOMATION"
    assert lessons_run.parameters == {"case_ref": ref}

    # the case view in the UI
    view = latest_artifact(case_artifact_key(ref))
    assert view is not None and "lessons_captured" in view and "Milestones" in view
    transitions = [
        e.details["to"]
        for e in sorted(_rows(AuditEvent, chain=ref), key=lambda e: e.seq)
        if e.action == "case.transition"
    ]
    assert transitions == [
        "verifying",
        "determining_response",
        "designing_plan",
        "implementing",
        "closing",
        "closed",
        "lessons_captured",
    ]
    with read_only() as session:
        waiting = session.exec(
            select(DecisionRequest).where(
                DecisionRequest.case_id == case_id,
                col(DecisionRequest.status) == DecisionRequestStatus.WAITING,
            )
        ).all()
    assert waiting == []
