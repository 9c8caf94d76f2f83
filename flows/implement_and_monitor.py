"""implement-and-monitor (IOM step 4): activate the milestones and tell their owners.

The checking is the scheduled monitoring sweep's job; progress comes in through
`remedy milestone update` and the approval page, and the last verified milestone starts closure.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from models.enums import Step
from tasks.orchestration.step_tasks import (
    activate_plan_task,
    deliver_case_task,
    hand_over_task,
    open_step_task,
    publish_case_view_task,
)


@flow(name="implement-and-monitor", flow_run_name="implement-{case_ref}", retries=0)
def implement_and_monitor(case_ref: str) -> str:
    """Activate the approved plan's milestones and notify their owners."""
    ctx = open_step_task(case_ref, Step.IMPLEMENT)
    if ctx.active:
        activated = activate_plan_task(case_ref)
        get_run_logger().info("%s: %d milestone(s) activated", case_ref, activated)
    else:
        get_run_logger().info("%s: %s", case_ref, ctx.note)
    publish_case_view_task(case_ref)
    deliver_case_task(case_ref)
    return hand_over_task(case_ref) or "monitoring"
