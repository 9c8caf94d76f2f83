"""IOM step 2, determine the response, on real stores: overriding the derived level."""

from __future__ import annotations

from models.enums import CaseState, CaseStatus, DecisionKind, ResponseLevel, Step
from models.tables import Decision
from tests.conftest import Store
from tests.integration.factories import Clock, rows, script, start_sample_case, verify
from tests.integration.steps_helpers import assert_state
from tests.integration.test_free_text_sealed import in_clear


def test_overriding_the_response_level_needs_a_level_and_a_reason(store: Store) -> None:
    case = start_sample_case(Clock())
    verify(case)
    case.enter(Step.RESPOND)
    case.decide(DecisionKind.IMPACT_ASSESSMENT)
    derived = case.case().response_level
    assert derived == ResponseLevel.LEVEL_1
    who, values = script(DecisionKind.RESPONSE, accept_response_level=False)
    for changes in ({}, {"override_level": "level_2"}, {"override_reason": "Budget cycle."}):
        pending = case.prepare(DecisionKind.RESPONSE)
        result = case.submit(pending.request_id, who, {**values, **changes})
        assert not result.accepted
        assert result.reason == "to override the derived level, choose a level and give a reason"
    assert case.case().response_level == derived
    assert_state(case, CaseState.DETERMINING_RESPONSE, Step.RESPOND, CaseStatus.ACTIVE)

    reason = "The smelter has already suspended the site; level 2 fits the remaining risk."
    decision = case.decide(
        DecisionKind.RESPONSE,
        accept_response_level=False,
        override_level="level_2",
        override_reason=reason,
    )
    assert decision.outcome == "level_2"
    assert case.case().response_level == ResponseLevel.LEVEL_2
    [row] = rows(Decision, Decision.id == decision.id)
    assert row.payload["derived_response_level"] == "level_1"
    assert row.payload["response_level"] == "level_2"
    assert in_clear(row.case_id, row.payload["override_reason"]) == reason
    assert in_clear(row.case_id, row.reason) == reason
    assert_state(case, CaseState.DESIGNING_PLAN, Step.PLAN, CaseStatus.ACTIVE)
    assert case.chain().ok
