"""IOM step 3, design the action plan, on real stores: agreeing with changes."""

from __future__ import annotations

from typing import Any

from models.enums import DecisionKind, PlanStatus, Step
from models.tables import ActionPlan, ConsentRecord, Decision
from tasks.steps.implement import activate_plan
from tasks.steps.plan import draft_plan
from tests.conftest import Store
from tests.integration.factories import (
    Clock,
    count,
    milestones,
    respond,
    rows,
    script,
    start_sample_case,
    verify,
)
from tests.integration.steps_helpers import plan_keys


def test_agreeing_with_changes_revises_the_plan(store: Store) -> None:
    case = start_sample_case(Clock())
    verify(case)
    respond(case)
    case.enter(Step.PLAN)
    assert draft_plan(case.ref, now=case.clock.tick()) == 1
    v1 = plan_keys(case, 1)
    who, values = script(DecisionKind.PLAN_AGREEMENT)

    refusals: list[tuple[dict[str, Any], str]] = [
        (
            {"outcome": "agree_with_changes", "remove_actions": ["no-such-action"]},
            "cannot remove 'no-such-action': no such action",
        ),
        ({"remove_actions": ["document-return"]}, "to remove actions, choose 'agree_with_changes'"),
        (
            {"outcome": "agree_with_changes", "remove_actions": ["document-return"]}
            | {"consent_recorded": False},
            "informed consent to the plan must be recorded",
        ),
    ]
    for changes, reason in refusals:
        pending = case.prepare(DecisionKind.PLAN_AGREEMENT)
        result = case.submit(pending.request_id, who, {**values, **changes})
        assert not result.accepted and result.reason is not None and reason in result.reason
    assert [p.version for p in rows(ActionPlan)] == [1]
    assert count(ConsentRecord) == 0

    agreed = case.decide(
        DecisionKind.PLAN_AGREEMENT,
        outcome="agree_with_changes",
        remove_actions=["document-return"],
    )
    assert agreed.outcome == "agree_with_changes"
    plans = {p.version: p.status for p in rows(ActionPlan, ActionPlan.case_id == case.case().id)}
    assert plans == {1: PlanStatus.SUPERSEDED, 2: PlanStatus.DRAFT}
    v2 = plan_keys(case, 2)
    assert set(v2) == set(v1) - {"document-return"}
    assert all(v2[k].owner_id == v1[k].owner_id for k in v2)
    [row] = rows(Decision, Decision.id == agreed.id)
    assert row.payload["plan_version"] == 2
    # a retried step does not draft again over the revised version
    assert draft_plan(case.ref, now=case.clock.tick()) == 2

    case.decide(DecisionKind.PLAN_BUDGET)
    plans = {p.version: p.status for p in rows(ActionPlan, ActionPlan.case_id == case.case().id)}
    assert plans == {1: PlanStatus.SUPERSEDED, 2: PlanStatus.APPROVED}
    case.enter(Step.IMPLEMENT)
    activate_plan(case.ref, now=case.clock.tick())
    assert "document-return" not in dict(milestones(case.ref))
    assert case.chain().ok
