"""close-incident (IOM step 5): closure criteria and four eyes, then the closure event."""

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


@flow(name="close-incident", flow_run_name="close-{case_ref}", retries=0)
def close_incident(case_ref: str) -> str:
    """Take a closure proposal and its confirmation by a second, different approver."""
    ctx = open_step_task(case_ref, Step.CLOSE)
    if ctx.active:
        while True:
            proposal = ask(ctx, DecisionKind.CLOSURE)
            confirmation = ask(
                ctx,
                DecisionKind.CLOSURE_CONFIRMATION,
                scope=f"{ctx.scope}-proposal-{proposal.id.hex[:12]}",
                exclude=[proposal.approver_id],
            )
            if confirmation.outcome == "confirmed":
                break
    else:
        get_run_logger().info("%s: %s", case_ref, ctx.note)
    publish_case_view_task(case_ref)
    deliver_case_task(case_ref)
    return hand_over_task(case_ref) or "nothing to start"  # closed: emits remedy.case.closed
