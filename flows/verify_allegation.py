"""verify-allegation (IOM step 1): screening, safety before contact, findings and the decision."""

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


@flow(name="verify-allegation", flow_run_name="verify-{case_ref}", retries=0)
def verify_allegation(case_ref: str) -> str:
    """Verify an allegation: screen it, assess safety, record findings, decide substantiation."""
    ctx = open_step_task(case_ref, Step.VERIFY)
    if ctx.active:
        screening = ask(ctx, DecisionKind.SCREENING)
        if screening.outcome == "accepted":
            ask(ctx, DecisionKind.SAFETY)
            ask(ctx, DecisionKind.VERIFICATION)  # inconclusive: asked again until decided
    else:
        get_run_logger().info("%s: %s", case_ref, ctx.note)
    publish_case_view_task(case_ref)
    deliver_case_task(case_ref)
    return hand_over_task(case_ref) or "nothing to start"
