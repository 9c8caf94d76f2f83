"""monitor-milestones: the scheduled sweep over every open case (hourly by default).

Finds with set-based queries what is due soon, due today, overdue or waiting too long; runs a
monitor-case sub-flow for each affected case (reminders, escalations, once per threshold); moves
completed plans to closure; repairs what the doctor finds; refreshes the portfolio artifact.

The deployment sweeps as of the wall clock and takes no parameter: a moment of an API client's
choosing would date audit events in it and use up the reminders of real cases. An operator tries
a later moment with `simulated-sweep` (`remedy monitor --now`), which is not deployed and refuses
to run unless the case store says it is a simulation.
"""

from __future__ import annotations

from datetime import datetime

from prefect import flow, get_run_logger

from tasks.monitoring.sweep import CaseCheck, DueItem
from tasks.orchestration.retrying import remedy_task
from tasks.orchestration.step_tasks import deliver_all_task, deliver_case_task
from tasks.orchestration.sweep_tasks import (
    apply_retention_task,
    check_case_task,
    close_completed_task,
    find_due_task,
    publish_plan_progress_task,
    publish_portfolio_task,
    reconcile_task,
    simulated_time_task,
    sweep_time_task,
)
from tasks.store.checkpoints import checkpoint_if_due

# every REMEDY_AUDIT_CHECKPOINT_HOURS (daily): the audit's heads, signed outside the store
checkpoint_audit_task = remedy_task(checkpoint_if_due, name="checkpoint-audit", retries=0)


@flow(name="monitor-case", flow_run_name="monitor-{case_ref}", retries=0)
def monitor_case(case_ref: str, items: list[DueItem], now: datetime) -> CaseCheck:
    """Act on one case's new thresholds, send the messages, refresh its plan's progress."""
    check = check_case_task(case_ref, items, now)
    deliver_case_task(case_ref)  # on the wall clock, whatever moment the sweep is for
    publish_plan_progress_task(case_ref)
    return check


@flow(name="monitor-milestones", retries=0)
def monitor_milestones() -> dict[str, int]:
    """Sweep every open case once, as of now: reminders, escalations, closures, repairs."""
    return _sweep(sweep_time_task())


@flow(name="simulated-sweep", retries=0)
def simulated_sweep(now: datetime) -> dict[str, int]:
    """Sweep a simulation store as of a chosen moment (refused on a store of real cases)."""
    return _sweep(simulated_time_task(now))


def _sweep(at: datetime) -> dict[str, int]:
    plan = find_due_task(at)
    checks = [monitor_case(ref, items, at) for ref, items in sorted(plan.by_case.items())]
    closing = close_completed_task(at)
    repairs = reconcile_task(at)
    # what a dead process left leased in the outbox goes out now its lease has run out
    leftover = deliver_all_task()
    publish_portfolio_task(at)
    checkpointed = checkpoint_audit_task(at)
    summary = {
        "candidates": plan.candidates,
        "cases_checked": len(checks),
        "reminders_sent": sum(len(c.sent) for c in checks),
        "moved_to_closure": len(closing),
        "repairs": len(repairs),
        "leftover_delivered": leftover.delivered,
        "audit_checkpoints": int(checkpointed),
        **apply_retention_task(at),
    }
    get_run_logger().info("sweep at %s: %s", at.isoformat(), summary)
    return summary
