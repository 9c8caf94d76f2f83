"""Lifecycle unit tests: the whole table, each guard, history, four-eyes, random walks."""

from __future__ import annotations

import itertools
import pickle
from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from models.enums import CaseEvent, CaseState, CaseStatus, Step
from models.lifecycle import (
    EVENT_NAMES,
    FINAL_STATES,
    INITIAL_STATE,
    STATE_NAMES,
    TRANSITIONS,
    CaseFacts,
    TransitionNotAllowed,
    allowed_events,
    apply,
    possible_events,
    reachable_states,
    status_of,
    step_of,
)

# The expected table, written out from the specification rather than derived from TRANSITIONS.
HISTORY = "<held_from>"
DECIDING = "determining_response"
WORKING = ("verifying", DECIDING, "designing_plan", "implementing")
EXPECTED: dict[tuple[str, str], str] = {
    ("intake", "start_verification"): "verifying",
    ("intake", "screened_out"): "closing",
    ("verifying", "screened_out"): "closing",
    ("verifying", "substantiated"): "determining_response",
    ("verifying", "unsubstantiated"): "closing",
    ("verifying", "inconclusive"): "verifying",
    ("determining_response", "response_approved"): "designing_plan",
    ("designing_plan", "plan_approved"): "implementing",
    ("implementing", "plan_revision_requested"): "designing_plan",
    ("implementing", "plan_completed"): "closing",
    **{(s, "close_unresolved"): "closing" for s in WORKING},
    **{(s, "consent_withdrawn"): "on_hold" for s in WORKING},
    ("on_hold", "consent_renewed"): HISTORY,
    ("on_hold", "close_on_withdrawal"): "closing",
    ("closing", "case_closed"): "closed",
    ("closed", "lessons_recorded"): "lessons_captured",
    ("closed", "reopen_for_verification"): "verifying",
    ("lessons_captured", "reopen_for_verification"): "verifying",
    ("closed", "reopen_for_remedy"): "designing_plan",
    ("lessons_captured", "reopen_for_remedy"): "designing_plan",
}
UNGUARDED = {"start_verification", "consent_withdrawn", "close_on_withdrawal", "lessons_recorded"}

EXPECTED_STEP = {
    "intake": Step.VERIFY,
    "verifying": Step.VERIFY,
    "determining_response": Step.RESPOND,
    "designing_plan": Step.PLAN,
    "implementing": Step.IMPLEMENT,
    "closing": Step.CLOSE,
    "closed": Step.LESSONS,
    "lessons_captured": Step.LESSONS,
}
EXPECTED_STATUS = {s: "active" for s in EXPECTED_STEP} | {
    "on_hold": "on_hold",
    "closed": "closed",
    "lessons_captured": "closed",
}

PERMISSIVE = CaseFacts(
    safety_assessed=True,
    findings_recorded=True,
    decision_reason="reason",
    screening_reason="reason",
    involvement_assessed=True,
    severity_assessed=True,
    has_plan_actions=True,
    victim_agreement_recorded=True,
    budget_approved=True,
    consent_active=True,
    revision_agreed=True,
    milestones_total=3,
    milestones_open=0,
    unresolved_authorised=True,
    closure_approvers=("lead-1", "approver-2"),
    closure_criteria_met=True,
    held_from=CaseState.DESIGNING_PLAN,
    has_approved_plan=True,
    reopen_reason="reason",
)

CANARY = "Amina-Canary-7f3e"  # stands for personal data typed into a free-text field


def expected_step(state: str, held_from: str | None) -> Step:
    if state == "on_hold":
        return EXPECTED_STEP.get(held_from or "", Step.VERIFY)
    return EXPECTED_STEP[state]


def expected_reachable(start: str) -> set[str]:
    """Breadth-first search over EXPECTED; a history target may resume any working state."""
    seen, queue = {start}, deque([start])
    while queue:
        state = queue.popleft()
        for (source, _), target in EXPECTED.items():
            if source != state:
                continue
            for nxt in WORKING if target == HISTORY else (target,):
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append(nxt)
    return seen


ALL_PAIRS = list(itertools.product(CaseState, CaseEvent))


@pytest.mark.parametrize(("state", "event"), ALL_PAIRS, ids=[f"{s}-{e}" for s, e in ALL_PAIRS])
def test_every_state_event_pair(state: CaseState, event: CaseEvent) -> None:
    expected = EXPECTED.get((state.value, event.value))
    if expected is None:
        with pytest.raises(TransitionNotAllowed) as info:
            apply(state, event, PERMISSIVE)
        exc = info.value
        assert (exc.state, exc.event) == (state, event)
        assert str(exc) == exc.reason
        assert f"'{event.value}'" in exc.reason
        assert STATE_NAMES[state] in exc.reason
        possible = [e for (s, e) in EXPECTED if s == state.value]
        assert possible, "every state has a way out"
        for name in possible:
            assert name in exc.reason.split("possible now:")[1]
        return
    transition = apply(state, event, PERMISSIVE)
    target = PERMISSIVE.held_from if expected == HISTORY else CaseState(expected)
    assert transition.source == state
    assert transition.event == event
    assert transition.target == target
    assert transition.status == EXPECTED_STATUS[target.value]
    held_from = state.value if target is CaseState.ON_HOLD else None
    assert transition.step == expected_step(target.value, held_from)


def test_table_has_exactly_the_expected_pairs() -> None:
    assert {(s.value, e.value) for s, e in TRANSITIONS} == set(EXPECTED)
    for state in CaseState:
        assert {e.value for e in possible_events(state)} == {
            e for (s, e) in EXPECTED if s == state.value
        }


def test_safe_default_facts_allow_only_the_unguarded_events() -> None:
    for state in CaseState:
        expected = {e for (s, e) in EXPECTED if s == state.value and e in UNGUARDED}
        assert {e.value for e in allowed_events(state, CaseFacts())} == expected


def test_permissive_facts_allow_every_possible_event() -> None:
    for state in CaseState:
        assert allowed_events(state, PERMISSIVE) == possible_events(state)


@pytest.mark.parametrize(
    ("state", "event", "changes", "expected"),
    [
        ("intake", "screened_out", {"screening_reason": ""}, "no screening reason"),
        ("verifying", "screened_out", {"screening_reason": "   "}, "no screening reason"),
        ("verifying", "substantiated", {"safety_assessed": False}, "no safety assessment"),
        ("verifying", "substantiated", {"findings_recorded": False}, "findings are not recorded"),
        ("verifying", "unsubstantiated", {"decision_reason": ""}, "no reason for the decision"),
        ("verifying", "inconclusive", {"decision_reason": "\t"}, "no reason for the decision"),
        (DECIDING, "response_approved", {"involvement_assessed": False}, "involvement is not"),
        (DECIDING, "response_approved", {"severity_assessed": False}, "severity is not"),
        ("designing_plan", "plan_approved", {"has_plan_actions": False}, "no actions"),
        ("designing_plan", "plan_approved", {"consent_active": False}, "consent"),
        ("designing_plan", "plan_approved", {"budget_approved": False}, "budget is not approved"),
        ("implementing", "plan_revision_requested", {"revision_agreed": False}, "not agreed"),
        ("implementing", "plan_completed", {"milestones_total": 0}, "no milestones"),
        ("implementing", "plan_completed", {"milestones_open": 2}, "2 milestone(s) are still open"),
        *[
            (s, "close_unresolved", {"unresolved_authorised": False}, "not authorised")
            for s in WORKING
        ],
        ("on_hold", "consent_renewed", {"consent_active": False}, "consent is not active"),
        ("on_hold", "consent_renewed", {"held_from": None}, "not recorded"),
        ("on_hold", "consent_renewed", {"held_from": CaseState.CLOSED}, "cannot be resumed"),
        ("on_hold", "consent_renewed", {"held_from": CaseState.ON_HOLD}, "cannot be resumed"),
        ("on_hold", "consent_renewed", {"held_from": CaseState.INTAKE}, "cannot be resumed"),
        ("closing", "case_closed", {"closure_criteria_met": False}, "criteria are not met"),
        ("closing", "case_closed", {"closure_approvers": ("lead-1",)}, "1 of the 2 distinct"),
        ("closing", "case_closed", {"closure_approvers": ()}, "0 of the 2 distinct"),
        ("closing", "case_closed", {"closure_approvers": ("lead-1", "  ")}, "1 of the 2"),
        ("closing", "case_closed", {"required_closure_approvers": 3}, "2 of the 3 distinct"),
        ("closed", "reopen_for_verification", {"reopen_reason": ""}, "no reason for reopening"),
        ("lessons_captured", "reopen_for_verification", {"reopen_reason": " "}, "no reason"),
        ("closed", "reopen_for_remedy", {"has_approved_plan": False}, "never had an approved"),
        ("lessons_captured", "reopen_for_remedy", {"reopen_reason": ""}, "no reason"),
    ],
)
def test_each_guard_refuses_with_a_reason(
    state: str, event: str, changes: dict[str, object], expected: str
) -> None:
    facts = PERMISSIVE.model_copy(update=changes)
    with pytest.raises(TransitionNotAllowed) as info:
        apply(CaseState(state), CaseEvent(event), facts)
    assert info.value.state == state
    assert info.value.event == event
    assert expected in info.value.reason
    assert info.value.reason.endswith(".")
    assert event not in allowed_events(CaseState(state), facts)


def test_refusal_reads_as_a_sentence_and_lists_everything_missing() -> None:
    facts = PERMISSIVE.model_copy(update={"victim_agreement_recorded": False})
    with pytest.raises(TransitionNotAllowed) as info:
        apply(CaseState.DESIGNING_PLAN, CaseEvent.PLAN_APPROVED, facts)
    assert str(info.value) == (
        "The plan cannot be approved yet: the victim representative's agreement is not recorded."
    )
    with pytest.raises(TransitionNotAllowed) as info:
        apply(CaseState.DESIGNING_PLAN, CaseEvent.PLAN_APPROVED, CaseFacts())
    assert str(info.value).count(";") == 2  # actions, agreement, budget (consent defaults active)


def test_not_in_table_message_names_what_is_possible() -> None:
    with pytest.raises(TransitionNotAllowed) as info:
        apply(CaseState.VERIFYING, CaseEvent.PLAN_APPROVED, PERMISSIVE)
    assert str(info.value) == (
        "Approving the plan ('plan_approved') is not possible while the case is being verified; "
        "possible now: screened_out, substantiated, unsubstantiated, inconclusive, "
        "close_unresolved, consent_withdrawn."
    )


@pytest.mark.parametrize("held_from", [CaseState(s) for s in WORKING])
def test_on_hold_returns_to_the_state_it_was_held_from(held_from: CaseState) -> None:
    hold = apply(held_from, CaseEvent.CONSENT_WITHDRAWN, CaseFacts())
    assert hold.target is CaseState.ON_HOLD
    assert hold.status is CaseStatus.ON_HOLD
    assert hold.step == EXPECTED_STEP[held_from.value]  # a held case keeps its step
    facts = PERMISSIVE.model_copy(update={"held_from": hold.source})
    resumed = apply(CaseState.ON_HOLD, CaseEvent.CONSENT_RENEWED, facts)
    assert resumed.target is held_from
    assert resumed.step == EXPECTED_STEP[held_from.value]
    assert resumed.status is CaseStatus.ACTIVE


def test_four_eyes_needs_two_distinct_people() -> None:
    same_twice = PERMISSIVE.model_copy(update={"closure_approvers": ("lead-1", "lead-1")})
    with pytest.raises(TransitionNotAllowed, match="1 of the 2 distinct approvers"):
        apply(CaseState.CLOSING, CaseEvent.CASE_CLOSED, same_twice)
    padded = PERMISSIVE.model_copy(update={"closure_approvers": ("lead-1", " lead-1 ")})
    with pytest.raises(TransitionNotAllowed):
        apply(CaseState.CLOSING, CaseEvent.CASE_CLOSED, padded)
    two = PERMISSIVE.model_copy(update={"closure_approvers": ("lead-1", "lead-1", "approver-2")})
    assert apply(CaseState.CLOSING, CaseEvent.CASE_CLOSED, two).target is CaseState.CLOSED


def test_fewer_than_two_closure_approvers_cannot_be_asked_for() -> None:
    with pytest.raises(ValidationError):
        CaseFacts(required_closure_approvers=1)


def test_step_and_status_of_every_state() -> None:
    for state in CaseState:
        assert status_of(state) == EXPECTED_STATUS[state.value]
        if state is not CaseState.ON_HOLD:
            assert step_of(state) == EXPECTED_STEP[state.value]
    assert step_of(CaseState.ON_HOLD) is Step.VERIFY
    assert step_of(CaseState.ON_HOLD, CaseState.IMPLEMENTING) is Step.IMPLEMENT
    assert step_of(CaseState.ON_HOLD, CaseState.ON_HOLD) is Step.VERIFY


def test_constants() -> None:
    assert INITIAL_STATE is CaseState.INTAKE
    assert {s.value for s in FINAL_STATES} == {"closed", "lessons_captured"}
    assert set(STATE_NAMES) == set(CaseState)
    assert set(EVENT_NAMES) == set(CaseEvent)


def test_reachable_states_match_an_independent_search() -> None:
    assert {s.value for s in reachable_states()} == expected_reachable("intake")
    assert reachable_states() == frozenset(CaseState)  # no dead state in the table
    for start in CaseState:
        assert {s.value for s in reachable_states(start)} == expected_reachable(start.value)
    assert CaseState.INTAKE not in reachable_states(CaseState.CLOSED)


def _facts(text: st.SearchStrategy[str]) -> st.SearchStrategy[CaseFacts]:
    return st.builds(
        CaseFacts,
        safety_assessed=st.booleans(),
        findings_recorded=st.booleans(),
        decision_reason=text,
        screening_reason=text,
        involvement_assessed=st.booleans(),
        severity_assessed=st.booleans(),
        has_plan_actions=st.booleans(),
        victim_agreement_recorded=st.booleans(),
        budget_approved=st.booleans(),
        consent_active=st.booleans(),
        revision_agreed=st.booleans(),
        milestones_total=st.integers(0, 4),
        milestones_open=st.integers(0, 4),
        unresolved_authorised=st.booleans(),
        closure_approvers=st.lists(st.sampled_from(["a", "b", " ", CANARY]), max_size=3).map(tuple),
        required_closure_approvers=st.integers(2, 3),
        closure_criteria_met=st.booleans(),
        held_from=st.none() | st.sampled_from(CaseState),
        has_approved_plan=st.booleans(),
        reopen_reason=text,
    )


REASONS = st.sampled_from(["", "  ", CANARY, f"{CANARY} was threatened"])


@given(st.lists(st.tuples(st.sampled_from(CaseEvent), _facts(REASONS)), max_size=60))
def test_random_walks_stay_inside_the_table(steps: list[tuple[CaseEvent, CaseFacts]]) -> None:
    reachable = expected_reachable("intake")
    state = INITIAL_STATE
    for event, facts in steps:
        allowed = allowed_events(state, facts)
        try:
            transition = apply(state, event, facts)
        except TransitionNotAllowed as exc:
            # A refusal changes nothing and gives away nothing.
            assert (exc.state, exc.event) == (state, event)
            assert event not in allowed
            assert CANARY not in str(exc) and CANARY not in repr(exc.args)
            continue
        assert event in allowed
        assert transition.source == state
        target = transition.target.value
        expected = EXPECTED[state.value, event.value]
        assert target == (facts.held_from.value if expected == HISTORY else expected)
        assert target in reachable
        assert transition.status == EXPECTED_STATUS[target]
        held_from = state.value if target == "on_hold" else None
        assert transition.step == expected_step(target, held_from)
        state = transition.target


@pytest.mark.parametrize(("state", "event"), ALL_PAIRS, ids=[f"{s}-{e}" for s, e in ALL_PAIRS])
def test_messages_never_contain_free_text(state: CaseState, event: CaseEvent) -> None:
    leaky = CaseFacts(
        decision_reason=CANARY,
        screening_reason=CANARY,
        reopen_reason=CANARY,
        closure_approvers=(CANARY,),
    )
    try:
        apply(state, event, leaky)
    except TransitionNotAllowed as exc:
        assert CANARY not in str(exc)
        assert CANARY not in exc.reason


def test_refusal_survives_pickling() -> None:
    # Prefect pickles the exception a task raises.
    with pytest.raises(TransitionNotAllowed) as info:
        apply(CaseState.CLOSING, CaseEvent.CASE_CLOSED, CaseFacts())
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.state, copy.event, copy.reason) == (info.value.state, info.value.event, str(copy))
