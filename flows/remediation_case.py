"""remediation-case: the entry deployment. Intake opened the case; this starts step 1."""

from __future__ import annotations

from prefect import flow, get_run_logger

from tasks.orchestration.step_tasks import (
    begin_case_task,
    deliver_case_task,
    hand_over_task,
    publish_case_view_task,
)


@flow(name="remediation-case", flow_run_name="case-{case_ref}", retries=0)
def remediation_case(case_ref: str) -> str:
    """Start a newly opened case on IOM step 1 (verify the allegation)."""
    ctx = begin_case_task(case_ref)
    publish_case_view_task(case_ref)
    started = hand_over_task(case_ref)
    get_run_logger().info("%s: %s; started %s", case_ref, ctx.state.value, started or "nothing")
    deliver_case_task(case_ref)
    return ctx.state.value
