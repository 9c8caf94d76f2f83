"""The Prefect tasks of the monitoring sweep (each wraps a plain unit of work).

A sweep's moment is the wall clock; a chosen moment is taken only on a store that says it is a
simulation (tasks/store/settings.py), so no caller can date a real case's audit or use up its
reminders ahead of time.
"""

from __future__ import annotations

from datetime import datetime

from tasks.context import utcnow
from tasks.monitoring.reconcile import Repair, reconcile
from tasks.monitoring.sweep import (
    SWEEP,
    CaseCheck,
    DueItem,
    SweepPlan,
    check_case,
    completed_plans,
    find_due,
)
from tasks.orchestration.retrying import remedy_task
from tasks.orchestration.runs import close_completed_plan
from tasks.reports.portfolio import publish_plan_progress, publish_portfolio
from tasks.store.settings import require_simulation


def _sweep_time() -> datetime:
    return utcnow()


def _simulated_time(now: datetime) -> datetime:
    """Return the chosen moment, or refuse it (SimulationNotAllowed) on a store of real cases."""
    require_simulation()
    return now


def _find_due(now: datetime) -> SweepPlan:
    return find_due(now=now)


def _check_case(case_ref: str, items: list[DueItem], now: datetime) -> CaseCheck:
    return check_case(case_ref, items, now=now)


def _close_completed(now: datetime) -> list[str]:
    return [
        ref for ref in completed_plans() if close_completed_plan(ref, now=now, actor=SWEEP).moved
    ]


def _reconcile(now: datetime) -> list[Repair]:
    return reconcile(now=now)


def _publish_portfolio(now: datetime) -> None:
    publish_portfolio(now=now)


sweep_time_task = remedy_task(_sweep_time, name="sweep-time", retries=0)
simulated_time_task = remedy_task(_simulated_time, name="simulated-sweep-time", retries=0)
find_due_task = remedy_task(_find_due, name="find-due")
check_case_task = remedy_task(_check_case, name="check-case")
close_completed_task = remedy_task(_close_completed, name="start-closures")
reconcile_task = remedy_task(_reconcile, name="reconcile")
publish_portfolio_task = remedy_task(_publish_portfolio, name="publish-portfolio")
publish_plan_progress_task = remedy_task(publish_plan_progress, name="publish-plan-progress")


def _apply_retention(now: datetime) -> dict[str, int]:
    """Erase what closed cases kept past their retention periods; name the held cases (a legal
    hold stops it) in the run's log: references only (docs/security.md, Retention and erasure)."""
    from prefect import get_run_logger

    from tasks.store.retention import apply_retention

    done = apply_retention(now=now)
    if done.held:
        get_run_logger().info("retention waits on a legal hold: %s", ", ".join(done.held))
    return {
        "retention_erased": sum(len(c) for c in done.erased.values()),
        "retention_shredded": len(done.shredded),
        "retention_held": len(done.held),
    }


apply_retention_task = remedy_task(_apply_retention, name="apply-retention")
