"""capture-lessons (IOM step 6): started by the remedy.case.closed event; records the lessons."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.asking import ask
from models.enums import DecisionKind, Step
from tasks.orchestration.step_tasks import deliver_case_task, open_step_task, publish_case_view_task


@flow(name="capture-lessons", flow_run_name="lessons-{case_ref}", retries=0)
def capture_lessons(case_ref: str) -> str:
    """Record the closed case's root causes and the changes they call for."""
    ctx = open_step_task(case_ref, Step.LESSONS)
    if ctx.active:
        ask(ctx, DecisionKind.LESSONS)
    else:
        get_run_logger().info("%s: %s", case_ref, ctx.note)
    publish_case_view_task(case_ref)
    deliver_case_task(case_ref)
    return "lessons recorded" if ctx.active else ctx.note
