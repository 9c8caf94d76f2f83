"""The monitoring sweep against the session's real server: repairs, and a scheduled run."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.client.schemas.schedules import IntervalSchedule

from demo.scripted import ScriptedStakeholders
from models.enums import CaseState
from tests.e2e.conftest import E2E
from tests.e2e.helpers import open_case, wait_for
from tests.e2e.test_robustness import _waiting, waiting_kind

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


def test_the_sweep_restarts_a_step_whose_suspended_run_was_deleted(
    live: E2E, examples: Path, tmp_path: Path
) -> None:
    from flows.monitor_milestones import monitor_milestones
    from models.tables import AuditEvent
    from tests.integration.factories import rows

    ref = open_case(examples, tmp_path)
    wait_for(lambda: waiting_kind(ref) == "screening", what="screening to wait")
    lost = _waiting(ref).flow_run_id
    assert lost is not None
    with get_client(sync_client=True) as client:
        client.delete_flow_run(lost)
    summary = monitor_milestones()
    assert summary["repairs"] >= 1
    [repair] = [
        e for e in rows(AuditEvent, AuditEvent.chain == ref) if e.action == "reconcile.restarted"
    ]
    assert repair.details["step"] == 1 and repair.details["reason"] == "decision-without-run"
    wait_for(lambda: waiting_kind(ref) == "screening", timeout=120, what="screening again")
    assert _waiting(ref).flow_run_id not in (None, lost)
    # a second sweep finds nothing to repair for this case
    monitor_milestones()
    assert (
        len(
            [
                e
                for e in rows(AuditEvent, AuditEvent.chain == ref)
                if e.action == "reconcile.restarted"
            ]
        )
        == 1
    )
    # and the case can still be decided
    ScriptedStakeholders().drive(ref, until=CaseState.DETERMINING_RESPONSE, timeout=180)


def test_a_scheduled_sweep_runs_on_the_real_server(live: E2E) -> None:
    """The served monitor-milestones deployment, on a short schedule, runs by itself."""
    with get_client(sync_client=True) as client:
        [deployment] = client.read_deployments(
            deployment_filter=DeploymentFilter(
                name=DeploymentFilterName(any_=["monitor-milestones"])
            )
        )
        [configured] = deployment.schedules
        # the session sets a yearly sweep so that none fires in the middle of other tests
        assert configured.schedule.cron == live.env["REMEDY_MONITOR_CRON"]  # type: ignore[union-attr]
        [fast] = client.create_deployment_schedules(
            deployment.id, [(IntervalSchedule(interval=timedelta(seconds=5)), True)]
        )
        started = time.time()
        try:

            def completed_scheduled_run() -> bool:
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id={"any_": [deployment.id]}),  # type: ignore[arg-type]
                )
                return any(
                    r.state is not None
                    and r.state.is_completed()
                    and r.auto_scheduled
                    and r.expected_start_time is not None
                    and r.expected_start_time.timestamp() >= started - 5
                    for r in runs
                )

            wait_for(completed_scheduled_run, timeout=240, what="a scheduled sweep to complete")
        finally:
            client.delete_deployment_schedule(deployment.id, fast.id)


def test_a_sweep_for_a_later_moment_sends_its_reminders_to_the_mail_server(
    live: E2E, examples: Path, tmp_path: Path
) -> None:
    """The flow as scheduled, with `now` a few days on: overdue and escalation e-mails arrive."""
    from sqlmodel import col, select

    from flows.monitor_milestones import monitor_milestones
    from models.tables import PlanAction, RemediationCase
    from tasks.store.db import read_only

    ref = open_case(examples, tmp_path)
    ScriptedStakeholders().drive(ref, until=CaseState.IMPLEMENTING, timeout=300)
    with read_only() as session:
        case = session.exec(select(RemediationCase).where(RemediationCase.reference == ref)).one()
        first_due = session.exec(
            select(col(PlanAction.due_on))
            .where(PlanAction.case_id == case.id)
            .order_by(col(PlanAction.due_on))
        ).first()
    assert first_due is not None
    from datetime import UTC, datetime

    later = datetime(first_due.year, first_due.month, first_due.day, 9, tzinfo=UTC)
    seen = len(live.mail.messages)
    summary = monitor_milestones(now=later + timedelta(days=4))
    assert summary["reminders_sent"] > 0

    def reminders() -> list[str]:
        keys = [
            str(m["X-Remedy-Key"]) for m in live.mail.messages[seen:] if ref in str(m["Subject"])
        ]
        return [k for k in keys if k.startswith(("overdue:", "escalated:"))]

    found = wait_for(reminders, timeout=60, what="the sweep's e-mails")
    assert any(k.startswith("escalated:") for k in found)
    # the same moment again: nothing new
    assert monitor_milestones(now=later + timedelta(days=4))["reminders_sent"] == 0
