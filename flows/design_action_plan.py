"""design-action-plan (IOM step 3): a draft from templates, the victims' agreement, the budget."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.asking import ask
from models.enums import DecisionKind, Step
from tasks.orchestration.step_tasks import (
    deliver_case_task,
    draft_plan_task,
    hand_over_task,
    open_step_task,
    publish_case_view_task,
)


@flow(name="design-action-plan", flow_run_name="plan-{case_ref}", retries=0)
def design_action_plan(case_ref: str) -> str:
    """Draft the plan, then wait for the victims' agreement and the budget owner's approval."""
    ctx = open_step_task(case_ref, Step.PLAN)
    if ctx.active:
        draft_plan_task(case_ref)
        publish_case_view_task(case_ref)
        ask(ctx, DecisionKind.PLAN_AGREEMENT)  # a refusal is recorded and asked again
        ask(ctx, DecisionKind.PLAN_BUDGET)
    else:
        get_run_logger().info("%s: %s", case_ref, ctx.note)
    publish_case_view_task(case_ref)
    deliver_case_task(case_ref)
    return hand_over_task(case_ref) or "nothing to start"
