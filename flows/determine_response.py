"""determine-response (IOM step 2): involvement, severity, response level, relationship."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.asking import ask
from models.enums import DecisionKind, Step
from tasks.orchestration.step_tasks import (
    deliver_case_task,
    hand_over_task,
    open_step_task,
    publish_case_view_task,
)


@flow(name="determine-response", flow_run_name="respond-{case_ref}", retries=0)
def determine_response(case_ref: str) -> str:
    """Assess involvement and severity, then take the senior approver's response decision."""
    ctx = open_step_task(case_ref, Step.RESPOND)
    if ctx.active:
        ask(ctx, DecisionKind.IMPACT_ASSESSMENT)
        ask(ctx, DecisionKind.RESPONSE)
    else:
        get_run_logger().info("%s: %s", case_ref, ctx.note)
    publish_case_view_task(case_ref)
    deliver_case_task(case_ref)
    return hand_over_task(case_ref) or "nothing to start"
