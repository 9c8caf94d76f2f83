"""Where the case store and Prefect disagree: waiting decisions without a live suspended run,
steps whose run was lost, steps that were never started: the reconciler's input
(docs/architecture.md, Crash recovery).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from prefect.client.schemas.objects import FlowRun, StateType
from pydantic import BaseModel
from sqlmodel import col, select

from models.enums import DecisionRequestStatus, Step, StepRunStatus
from models.lifecycle import WORK_STATES
from models.tables import DecisionRequest, RemediationCase, StepRun
from tasks.store.db import read_only

# A run that is starting, running or waiting can still do its job.
ALIVE = {StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED}
GRACE = timedelta(minutes=2)  # a handover or a suspend in progress is not a problem yet


class Finding(BaseModel):
    """One disagreement between the store and Prefect, and what would repair it."""

    case_ref: str
    step: int
    kind: str  # decision-without-run | step-run-lost | step-not-started | step-run-ended
    flow_run_id: uuid.UUID | None
    run_state: str | None
    detail: str
    repair: str


RunReader = Callable[[list[uuid.UUID]], dict[uuid.UUID, FlowRun]]


def read_runs(ids: list[uuid.UUID]) -> dict[uuid.UUID, FlowRun]:
    """Read many flow runs in one call; missing ones are simply absent."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    found: dict[uuid.UUID, FlowRun] = {}
    with get_client(sync_client=True) as client:
        for start in range(0, len(ids), 200):
            chunk = ids[start : start + 200]
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)), limit=len(chunk)
            )
            found.update({r.id: r for r in runs})
    return found


def _state(run: FlowRun | None) -> str | None:
    return run.state.name if run is not None and run.state is not None else None


def diagnose(*, now: datetime, runs: RunReader = read_runs) -> list[Finding]:
    """Compare every open case's waiting decisions and step runs with Prefect's runs."""
    with read_only() as session:
        waiting = session.exec(
            select(DecisionRequest, RemediationCase.reference)
            .join(RemediationCase, col(RemediationCase.id) == col(DecisionRequest.case_id))
            .where(DecisionRequest.status == DecisionRequestStatus.WAITING)
        ).all()
        latest = session.exec(
            select(StepRun, RemediationCase)
            .join(RemediationCase, col(RemediationCase.id) == col(StepRun.case_id))
            .where(col(StepRun.status) != StepRunStatus.FINISHED)
        ).all()
    ids: set[uuid.UUID] = {r.flow_run_id for r, _ in waiting if r.flow_run_id}
    ids |= {s.flow_run_id for s, _ in latest if s.flow_run_id}
    known = runs(sorted(ids, key=str)) if ids else {}
    findings = list(_waiting_findings(waiting, known, now))
    findings += _step_findings(latest, known, now)
    return sorted(findings, key=lambda f: (f.case_ref, f.step, f.kind))


def _waiting_findings(
    waiting: Iterable[tuple[DecisionRequest, str]], known: dict[uuid.UUID, FlowRun], now: datetime
) -> Iterable[Finding]:
    for request, ref in waiting:
        run = known.get(request.flow_run_id) if request.flow_run_id else None
        state = run.state if run else None
        if state is not None and state.type == StateType.PAUSED:
            if state.state_details.pause_key == request.suspend_key:
                continue
        elif state is not None and state.type in ALIVE and now - request.requested_at < GRACE:
            continue  # about to suspend
        elif state is not None and state.type in (StateType.RUNNING, StateType.PENDING):
            continue  # the run is working on it (e.g. checking a submission)
        yield Finding(
            case_ref=ref,
            step=request.step,
            kind="decision-without-run",
            flow_run_id=request.flow_run_id,
            run_state=_state(run),
            detail=f"the {request.kind.value} decision waits, but its run "
            + ("is gone" if run is None else f"is {_state(run)} on another key"),
            repair=f"restart step {request.step}",
        )


def _step_findings(
    rows: Iterable[tuple[StepRun, RemediationCase]], known: dict[uuid.UUID, FlowRun], now: datetime
) -> list[Finding]:
    newest: dict[tuple[uuid.UUID, int], tuple[StepRun, RemediationCase]] = {}
    for run, case in rows:
        key = (case.id, run.step)
        if key not in newest or newest[key][0].entry < run.entry:
            newest[key] = (run, case)
    findings = []
    for step_run, case in newest.values():
        step = Step(step_run.step)
        if case.state not in WORK_STATES[step]:
            continue  # the case moved on; the entry is history
        flow_run = known.get(step_run.flow_run_id) if step_run.flow_run_id else None
        base = {"case_ref": case.reference, "step": int(step), "flow_run_id": step_run.flow_run_id}
        if step_run.status == StepRunStatus.PENDING:
            if now - step_run.created_at > GRACE:
                findings.append(
                    Finding(
                        **base,
                        kind="step-not-started",
                        run_state=None,
                        detail=f"step {int(step)} was entered but its run was never started",
                        repair=f"start step {int(step)}",
                    )
                )
            continue
        if step_run.flow_run_id is None:
            if step == Step.LESSONS and now - (step_run.started_at or step_run.created_at) > GRACE:
                findings.append(
                    Finding(
                        **base,
                        kind="step-not-started",
                        run_state=None,
                        detail="the closure event was emitted but no capture-lessons run opened",
                        repair="start step 6",
                    )
                )
            continue
        state = flow_run.state if flow_run else None
        if state is not None and state.type in ALIVE:
            continue
        if state is not None and state.type == StateType.COMPLETED and step == Step.IMPLEMENT:
            continue  # step 4's run only activates the plan; monitoring carries it on
        findings.append(
            Finding(
                **base,
                kind="step-run-lost"
                if state is None or not state.is_completed()
                else "step-run-ended",
                run_state=_state(flow_run),
                detail=f"the case is in step {int(step)} but its run "
                + ("is gone" if flow_run is None else f"ended {_state(flow_run)}"),
                repair=f"restart step {int(step)}",
            )
        )
    return findings
