"""IOM step 3, design the action plan, on real stores: agreeing with changes."""

from __future__ import annotations

from typing import Any

from markdown_it import MarkdownIt

from models.enums import DecisionKind, PlanStatus, Step
from models.tables import ActionPlan, ConsentRecord, Decision, PlanAction
from tasks.steps.implement import activate_plan
from tasks.steps.plan import draft_plan
from tasks.store.db import unit_of_work
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


def table_rows(markdown: str) -> list[list[str]]:
    """The body rows of the Markdown tables in a text, as the page renders them (cell texts)."""
    tokens = MarkdownIt("commonmark", {"html": False}).enable("table").parse(markdown)
    rows_: list[list[str]] = []
    for i, token in enumerate(tokens):
        if token.type == "tr_open" and tokens[i + 1].type == "td_open":
            rows_.append([])
        elif token.type == "td_open":
            inline = tokens[i + 1]
            assert {c.type for c in inline.children or []} <= {"text"}, inline.content
            rows_[-1].append("".join(c.content for c in inline.children or []))
    return rows_


def test_a_milestone_s_edited_text_stays_in_its_cell_as_text(store: Store) -> None:
    case = start_sample_case(Clock())
    verify(case)
    respond(case)
    case.enter(Step.PLAN)
    draft_plan(case.ref, now=case.clock.tick())
    action = plan_keys(case, 1)["document-return"]
    title = "Return documents | then [sign in](https://evil.example/login) *now*"
    method = "<https://evil.example/proof> or ![x](https://evil.example/p.png)"
    with unit_of_work() as session:  # the plan templates are the operator's text: data
        row = session.get(PlanAction, action.id)
        assert row is not None
        row.title, row.verification_method = title, method
        session.add(row)

    for kind in (DecisionKind.PLAN_AGREEMENT, DecisionKind.PLAN_BUDGET):
        described = case.prepare(kind).description
        [edited] = [r for r in table_rows(described) if r[0] == "document-return"]
        assert edited == ["document-return", title, "kivu.contact", str(action.due_on), method]
        case.decide(kind)
