"""The monitoring sweep against the session's real server: repairs, a scheduled run, the clock.

A sweep runs on the wall clock: an API client cannot make the deployment sweep for a moment of its
choosing; an operator can, from the command line, against a store marked as a simulation.
"""

from __future__ import annotations

import time
import uuid
from datetime import date, timedelta
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    FlowRunFilter,
    FlowRunFilterState,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.schedules import IntervalSchedule
from prefect.exceptions import PrefectHTTPStatusError

from demo.scripted import ScriptedStakeholders
from models.enums import CaseState
from tests.e2e.conftest import E2E
from tests.e2e.helpers import case_runs, open_case, wait_for
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
            # the server scheduled up to 100 sweeps ahead on that schedule, which removing it
            # leaves in place: every 5 s, they would sweep in the middle of the next tests
            scheduled = FlowRunFilterState(type={"any_": [StateType.SCHEDULED]})  # type: ignore[arg-type]
            ahead = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id={"any_": [deployment.id]}),  # type: ignore[arg-type]
                flow_run_filter=FlowRunFilter(state=scheduled),
            )
            for run in ahead:
                client.delete_flow_run(run.id)


def test_an_operators_simulation_sweeps_a_simulation_store_for_a_later_moment(
    live: E2E, examples: Path, tmp_path: Path
) -> None:
    """`remedy monitor --now` a few days on: refused on a store of real cases; on a store marked
    as a simulation, the overdue and escalation e-mails arrive."""
    import io
    from contextlib import redirect_stdout
    from datetime import UTC, datetime

    from sqlmodel import col, select

    from models.tables import PlanAction, RemediationCase
    from tasks.store.db import read_only
    from tests.integration.test_intake import run_cli

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
    later = datetime(first_due.year, first_due.month, first_due.day, 9, tzinfo=UTC)
    moment = (later + timedelta(days=4)).isoformat()
    before = _written(ref)
    assert run_cli("monitor", "--now", moment) == 1  # the session's store holds real cases
    assert _written(ref) == before

    def monitor(*argv: str) -> str:
        buf = io.StringIO()
        with redirect_stdout(buf):
            assert run_cli(*argv) == 0
        return buf.getvalue()

    monitor("db", "simulation", "on", "--force")  # it holds cases: only on purpose
    try:
        seen = len(live.mail.messages)
        assert "reminders sent: 0" not in monitor("monitor", "--now", moment)

        def reminders() -> list[str]:
            keys = [
                str(m["X-Remedy-Key"])
                for m in live.mail.messages[seen:]
                if ref in str(m["Subject"])
            ]
            return [k for k in keys if k.startswith(("overdue:", "escalated:"))]

        found = wait_for(reminders, timeout=60, what="the sweep's e-mails")
        assert any(k.startswith("escalated:") for k in found)
        # the same moment again: nothing new
        assert "reminders sent: 0" in monitor("monitor", "--now", moment)
    finally:
        monitor("db", "simulation", "off")


FORGED = "2031-06-01T00:00:00Z"


def _monitor_deployment_id() -> uuid.UUID:
    with get_client(sync_client=True) as client:
        [deployment] = client.read_deployments(
            deployment_filter=DeploymentFilter(
                name=DeploymentFilterName(any_=["monitor-milestones"])
            )
        )
    return deployment.id


def _run_to_the_end(run_id: uuid.UUID) -> StateType:
    def final() -> StateType | None:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run_id).state
        return state.type if state is not None and state.is_final() else None

    found: StateType = wait_for(final, timeout=180, what="the sweep run to end")
    return found


def _overdue_since_yesterday(ref: str) -> tuple[uuid.UUID, date]:
    """Keep one milestone in play, due yesterday by the wall clock; the others a year away."""
    from sqlmodel import select

    from models.tables import PlanAction, RemediationCase
    from tasks.context import utcnow
    from tasks.store.db import unit_of_work

    yesterday = utcnow().date() - timedelta(days=1)
    with unit_of_work() as session:
        case = session.exec(select(RemediationCase).where(RemediationCase.reference == ref)).one()
        actions = session.exec(select(PlanAction).where(PlanAction.case_id == case.id)).all()
        chosen = sorted(actions, key=lambda a: a.key)[0]
        for action in actions:
            action.due_on = yesterday if action is chosen else yesterday + timedelta(days=400)
            session.add(action)
        return chosen.id, yesterday


def _settled(ref: str) -> bool:
    runs = case_runs(ref)
    return bool(runs) and all(r.state is not None and r.state.is_final() for r in runs)


def _written(ref: str) -> tuple[int, int, int]:
    """What a sweep writes for a case: audit events, reminder keys, messages."""
    from models.tables import AuditEvent, Notification, RemediationCase, ReminderSent
    from tests.integration.factories import count, rows

    [case] = rows(RemediationCase, RemediationCase.reference == ref)
    return (
        count(AuditEvent, AuditEvent.chain == ref),
        count(ReminderSent, ReminderSent.case_id == case.id),
        count(Notification, Notification.case_id == case.id),
    )


def test_a_sweep_for_a_forged_moment_through_the_api_is_refused_and_writes_nothing(
    live: E2E, examples: Path, tmp_path: Path
) -> None:
    """An API client asks monitor-milestones to sweep as of 2031: refused; the real reminder
    still goes out once, when its time comes."""
    from models.tables import AuditEvent, ReminderSent
    from tasks.context import utcnow
    from tests.integration.factories import count, rows

    ref = open_case(examples, tmp_path)
    ScriptedStakeholders().drive(ref, until=CaseState.IMPLEMENTING, timeout=300)
    wait_for(lambda: _settled(ref), timeout=120, what="step 4 to activate the milestones")
    action_id, due = _overdue_since_yesterday(ref)
    before = _written(ref)
    tomorrow = utcnow() + timedelta(days=1)
    # (a simulation elsewhere in the session's store may have dated events ahead: none of them new)
    dated_ahead = count(AuditEvent, AuditEvent.at > tomorrow)
    deployment_id = _monitor_deployment_id()
    with get_client(sync_client=True) as client:
        try:
            forged = client.create_flow_run_from_deployment(
                deployment_id, parameters={"now": FORGED}
            )
        except PrefectHTTPStatusError:
            pass  # the API refuses the parameter: as good as a failed run
        else:
            assert _run_to_the_end(forged.id) != StateType.COMPLETED
    assert count(AuditEvent, AuditEvent.at > tomorrow) == dated_ahead  # none dated 2031
    assert _written(ref) == before  # no audit event, reminder key or message for the case

    # the real sweep, as its schedule starts it: the overdue reminder goes out, once
    seen = len(live.mail.messages)
    key = f"overdue:{action_id}:{due.isoformat()}"
    with get_client(sync_client=True) as client:
        for _ in range(2):
            real = client.create_flow_run_from_deployment(deployment_id)
            assert _run_to_the_end(real.id) == StateType.COMPLETED
    assert [r.key for r in rows(ReminderSent, ReminderSent.key == key)] == [key]

    def overdue_mails() -> list[str]:
        return [
            str(m["X-Remedy-Key"])
            for m in live.mail.messages[seen:]
            if str(m["X-Remedy-Key"]).startswith(key)
        ]

    sent = wait_for(overdue_mails, timeout=60, what="the overdue reminders")
    time.sleep(2)  # a late duplicate would arrive by now
    assert len(overdue_mails()) == len(set(sent)) == 2  # the owner and the case lead, once each
