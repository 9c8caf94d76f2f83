"""Where the case store and Prefect disagree: the reconciler's input (docs/architecture.md,
Crash recovery).

Every way a step can die shows up here: its run ended (crashed, failed, cancelled, or completed
with the case still in the step), is gone, never started, or is Running with its process gone
(no heartbeat for longer than `silence`: a runner killed with its children reports nothing); a
decision waits on a run that no longer waits for it, or that was killed while suspending (Prefect
sets Suspended and then saves the run's form: a run killed between the two can never be resumed);
and a case stored at intake whose entry run
never started (Prefect was down when the report was filed) or ended without starting step 1.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from prefect.client.schemas.objects import FlowRun, StateType
from prefect.settings import get_current_settings
from pydantic import BaseModel
from sqlmodel import Session, col, select

from models.enums import CaseState, DecisionRequestStatus, Step, StepRunStatus
from models.lifecycle import WORK_STATES
from models.tables import AuditEvent, DecisionRequest, RemediationCase, StepRun
from tasks.context import utcnow
from tasks.store.db import read_only

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

CASE_STARTED = "reconcile.case_started"  # the audit of a case's entry run started by a repair
GRACE = timedelta(minutes=2)  # a handover or a suspend in progress is not a problem yet
HEARTBEAT = "prefect.flow-run.heartbeat"
MISSED_HEARTBEATS = 3  # as Prefect's own zombie-run automation counts (docs/architecture.md)
NO_HEARTBEAT_SILENCE = timedelta(minutes=30)  # heartbeats turned off: only the state's age tells


class RunSeen(BaseModel):
    """What the doctor knows of a flow run: its state, and whether its process still shows life."""

    state_type: StateType
    state_name: str
    pause_key: str | None = None
    silent_since: datetime | None = None  # Running or Pending, and nothing heard since then
    form_lost: bool = False  # Suspended for longer than the grace with no form saved

    @property
    def silent(self) -> bool:
        return self.silent_since is not None

    @property
    def working(self) -> bool:
        """Scheduled (a runner will take it), or running or starting with its process alive."""
        if self.state_type == StateType.SCHEDULED:
            return True
        return self.state_type in (StateType.PENDING, StateType.RUNNING) and not self.silent

    def waits_on(self, suspend_key: str) -> bool:
        """Suspended on this key, with the form a submission is checked against."""
        return (
            self.state_type == StateType.PAUSED
            and self.pause_key == suspend_key
            and not self.form_lost
        )


class Finding(BaseModel):
    """One disagreement between the store and Prefect, and what would repair it."""

    case_ref: str
    step: int
    # decision-without-run | step-run-lost | step-run-silent | step-not-started | step-run-ended
    # | case-not-started
    kind: str
    flow_run_id: uuid.UUID | None
    run_state: str | None
    detail: str
    repair: str
    # the run says it lives (Running, or Suspended without its form) but its process is gone
    # and nothing will ever move it on: mark it Crashed before the step is restarted
    run_dead: bool = False


RunReader = Callable[[list[uuid.UUID]], dict[uuid.UUID, RunSeen]]


def default_silence() -> timedelta:
    """How long a Running run may stay unheard before its process counts as gone.

    Three missed heartbeats at the configured `PREFECT_FLOWS_HEARTBEAT_FREQUENCY` (180 s by
    default, so nine minutes); the runners and the sweep should share that setting.
    """
    every = get_current_settings().flows.heartbeat_frequency
    return NO_HEARTBEAT_SILENCE if every is None else MISSED_HEARTBEATS * timedelta(seconds=every)


def read_runs(
    ids: list[uuid.UUID],
    *,
    silence: timedelta | None = None,
    wall: datetime | None = None,
    form_grace: timedelta = GRACE,
) -> dict[uuid.UUID, RunSeen]:
    """Read many flow runs in batches, which running ones have gone silent, and which suspended
    ones lost their form (suspended for longer than `form_grace` with none saved); missing runs
    are simply absent.

    Silence and the grace are measured on the wall clock whatever moment a simulated sweep is
    for: heartbeats and state times are real time.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    silence = default_silence() if silence is None else silence
    cutoff = (wall or utcnow()) - silence
    runs: dict[uuid.UUID, FlowRun] = {}
    with get_client(sync_client=True) as client:
        for start in range(0, len(ids), 200):
            chunk = ids[start : start + 200]
            found = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)), limit=len(chunk)
            )
            runs.update({r.id: r for r in found})
        # only runs in their state since before the cutoff can be silent: ask for their news
        quiet = {i: t for i, r in runs.items() if (t := _quiet_since(r, cutoff)) is not None}
        heard = _last_heard(client, quiet) if quiet else {}
        settled = (wall or utcnow()) - form_grace
        formless = {i for i, r in runs.items() if _suspended_since(r, settled)}
        formless = {i for i in sorted(formless, key=str) if not form_saved(client, runs[i])}
    return {
        i: _seen(r, unheard_since(quiet.get(i), heard.get(i), cutoff), form_lost=i in formless)
        for i, r in runs.items()
    }


def _suspended_since(run: FlowRun, settled: datetime) -> bool:
    """Tell whether a run waits for input and has done so since before `settled`."""
    state = run.state
    return bool(
        state is not None
        and state.type == StateType.PAUSED
        and state.state_details.run_input_keyset
        and state.timestamp < settled
    )


def form_saved(client: SyncPrefectClient, run: FlowRun) -> bool:
    """Tell whether a run waiting for input has its form (the run input schema) saved."""
    import httpx

    state = run.state
    keyset = state.state_details.run_input_keyset if state is not None else None
    if not keyset:
        return False
    try:
        client.read_flow_run_input(run.id, keyset["schema"])
    except httpx.HTTPStatusError as exc:  # PrefectHTTPStatusError: 404 when never saved
        if exc.response.status_code == 404:
            return False
        raise
    return True


def unheard_since(
    state_since: datetime | None, last_heartbeat: datetime | None, cutoff: datetime
) -> datetime | None:
    """Since when a running run has given no sign of life, if that began before the cutoff.

    Its last sign is its latest heartbeat, or the moment it entered its state if it sent none.
    """
    if state_since is None:
        return None
    last = max(state_since, last_heartbeat) if last_heartbeat is not None else state_since
    return last if last < cutoff else None


def _quiet_since(run: FlowRun, cutoff: datetime) -> datetime | None:
    """When a running or starting run's state began, if that was before the cutoff."""
    state = run.state
    if state is None or state.type not in (StateType.PENDING, StateType.RUNNING):
        return None
    return state.timestamp if state.timestamp < cutoff else None


def _last_heard(
    client: SyncPrefectClient, since: dict[uuid.UUID, datetime]
) -> dict[uuid.UUID, datetime]:
    """Return each run's latest heartbeat after the moment given for it (one event per run)."""
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventOccurredFilter,
        EventResourceFilter,
    )

    ids = sorted(since, key=str)
    heard: dict[uuid.UUID, datetime] = {}
    for start in range(0, len(ids), 100):
        chunk = ids[start : start + 100]
        page = client.read_events(
            EventFilter(
                occurred=EventOccurredFilter(
                    since=min(since[i] for i in chunk), until=utcnow() + timedelta(minutes=5)
                ),
                event=EventNameFilter(name=[HEARTBEAT]),
                # distinct: the newest event of each run only
                resource=EventResourceFilter(
                    id=[f"prefect.flow-run.{i}" for i in chunk], distinct=True
                ),
            ),
            limit=len(chunk),
        )
        for event in page.events:
            heard[uuid.UUID(event.resource.id.removeprefix("prefect.flow-run."))] = event.occurred
    return heard


def _seen(run: FlowRun, silent_since: datetime | None, *, form_lost: bool = False) -> RunSeen:
    state = run.state
    if state is None:  # only a run being created has no state yet
        return RunSeen(state_type=StateType.SCHEDULED, state_name="Scheduled")
    return RunSeen(
        state_type=state.type,
        state_name=state.name or state.type.value,
        pause_key=state.state_details.pause_key,
        silent_since=silent_since,
        form_lost=form_lost,
    )


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
        at_intake = _at_intake(session, now)
    ids: set[uuid.UUID] = {r.flow_run_id for r, _ in waiting if r.flow_run_id}
    ids |= {s.flow_run_id for s, _ in latest if s.flow_run_id}
    ids |= {r for r in at_intake.values() if r is not None}
    known = runs(sorted(ids, key=str)) if ids else {}
    carriers = _newest_entries(latest)
    findings = list(_waiting_findings(waiting, carriers, known, now))
    findings += _step_findings(carriers.values(), known, now)
    findings += _intake_findings(at_intake, known)
    return sorted(findings, key=lambda f: (f.case_ref, f.step, f.kind))


def _at_intake(session: Session, now: datetime) -> dict[str, uuid.UUID | None]:
    """Cases stored at intake for longer than the grace period, with the entry run the
    reconciler last started for each (None: it never started one)."""
    refs = session.exec(
        select(RemediationCase.reference).where(
            RemediationCase.state == CaseState.INTAKE,
            col(RemediationCase.state_changed_at) < now - GRACE,
        )
    ).all()
    if not refs:
        return {}
    started = session.exec(
        select(AuditEvent)
        .where(col(AuditEvent.chain).in_(refs), AuditEvent.action == CASE_STARTED)
        .order_by(col(AuditEvent.at), col(AuditEvent.id))
    ).all()
    last: dict[str, uuid.UUID | None] = dict.fromkeys(refs)
    for event in started:
        last[event.chain] = uuid.UUID(str(event.details["flow_run_id"]))
    return last


def _intake_findings(
    at_intake: dict[str, uuid.UUID | None], known: dict[uuid.UUID, RunSeen]
) -> list[Finding]:
    """A case left at intake: its entry run never started, or the repair's run ended early."""
    findings = []
    for ref, run_id in sorted(at_intake.items()):
        run = known.get(run_id) if run_id is not None else None
        if run is not None and run.working:
            continue  # the repair's run is on its way: it moves the case to step 1
        what = "no run was started" if run_id is None else f"its entry run {_how(run)}"
        findings.append(
            Finding(
                case_ref=ref,
                step=int(Step.VERIFY),
                kind="case-not-started",
                flow_run_id=run_id,
                run_state=_state(run),
                detail=f"the case is stored at intake but {what}",
                repair="start the case's run",
                run_dead=_dead(run),
            )
        )
    return findings


def _newest_entries(
    rows: Iterable[tuple[StepRun, RemediationCase]],
) -> dict[tuple[uuid.UUID, int], tuple[StepRun, RemediationCase]]:
    """The latest unfinished entry of each case into each step."""
    newest: dict[tuple[uuid.UUID, int], tuple[StepRun, RemediationCase]] = {}
    for run, case in rows:
        key = (case.id, run.step)
        if key not in newest or newest[key][0].entry < run.entry:
            newest[key] = (run, case)
    return newest


def _dead(run: RunSeen | None) -> bool:
    """Tell whether a run claims life that its process cannot give (see Finding.run_dead)."""
    return run is not None and (run.silent or run.form_lost)


def _state(run: RunSeen | None) -> str | None:
    return run.state_name if run is not None else None


def _how(run: RunSeen | None) -> str:
    """Say in a few words what became of a run (for the doctor's table)."""
    if run is None:
        return "is gone"
    if run.silent_since is not None:
        return (
            f"is {run.state_name} but unheard since {run.silent_since:%Y-%m-%d %H:%M} UTC "
            "(its process is gone)"
        )
    if run.form_lost:
        return (
            f"is {run.state_name} but its form was never saved (its process died while suspending)"
        )
    return (
        f"is {run.state_name}" if run.state_type == StateType.PAUSED else f"ended {run.state_name}"
    )


def _waiting_findings(
    waiting: Iterable[tuple[DecisionRequest, str]],
    carriers: dict[tuple[uuid.UUID, int], tuple[StepRun, RemediationCase]],
    known: dict[uuid.UUID, RunSeen],
    now: datetime,
) -> Iterable[Finding]:
    for request, ref in waiting:
        run = known.get(request.flow_run_id) if request.flow_run_id else None
        if run is not None and (run.waits_on(request.suspend_key) or run.working):
            continue  # suspended on it, or about to suspend on it or to check a submission
        paused = run is not None and run.state_type == StateType.PAUSED and not run.form_lost
        if paused and now - request.requested_at < GRACE:
            continue  # suspended on the previous key a moment ago; about to move on
        if _taken_over(request, carriers, known):
            continue  # the step's current run (a repair) will ask for it and take it over
        yield Finding(
            case_ref=ref,
            step=request.step,
            kind="decision-without-run",
            flow_run_id=request.flow_run_id,
            run_state=_state(run),
            detail=f"the {request.kind.value} decision waits, but its run {_how(run)}"
            + (" on another key" if paused else ""),
            repair=f"restart step {request.step}",
            run_dead=_dead(run),
        )


def _taken_over(
    request: DecisionRequest,
    carriers: dict[tuple[uuid.UUID, int], tuple[StepRun, RemediationCase]],
    known: dict[uuid.UUID, RunSeen],
) -> bool:
    """Tell whether another, live run carries the request's step: it will rebind the request."""
    carrier = carriers.get((request.case_id, request.step))
    other = carrier[0].flow_run_id if carrier else None
    if other is None or other == request.flow_run_id:
        return False
    run = known.get(other)
    return run is not None and (run.working or run.waits_on(request.suspend_key))


def _step_findings(
    newest: Iterable[tuple[StepRun, RemediationCase]],
    known: dict[uuid.UUID, RunSeen],
    now: datetime,
) -> list[Finding]:
    findings = []
    for step_run, case in newest:
        step = Step(step_run.step)
        if case.state not in WORK_STATES[step]:
            continue  # the case moved on; the entry is history
        finding = _step_finding(step_run, step, known, now)
        if finding is not None:
            findings.append(finding.model_copy(update={"case_ref": case.reference}))
    return findings


def _step_finding(
    step_run: StepRun, step: Step, known: dict[uuid.UUID, RunSeen], now: datetime
) -> Finding | None:
    """What, if anything, is wrong with the run carrying one entry into a step."""
    base = {"case_ref": "", "step": int(step), "flow_run_id": step_run.flow_run_id}
    if step_run.status == StepRunStatus.PENDING or step_run.flow_run_id is None:
        if step_run.status == StepRunStatus.PENDING:
            late, what = now - step_run.created_at > GRACE, "its run was never started"
        else:  # only step 6 is started by an event: a run of its own may never have opened
            late = (
                step == Step.LESSONS and now - (step_run.started_at or step_run.created_at) > GRACE
            )
            what = "the closure event opened no capture-lessons run"
        if not late:
            return None
        return Finding(
            **base,
            kind="step-not-started",
            run_state=None,
            detail=f"step {int(step)} was entered but {what}",
            repair=f"start step {int(step)}",
        )
    run = known.get(step_run.flow_run_id)
    if run is not None and (run.working or run.state_type == StateType.PAUSED):
        return None  # a run that lost its form is the waiting decision's finding
    if run is not None and run.state_type == StateType.COMPLETED and step == Step.IMPLEMENT:
        return None  # step 4's run only activates the plan; monitoring carries it on
    if run is not None and run.silent:
        kind = "step-run-silent"
    elif run is not None and run.state_type == StateType.COMPLETED:
        kind = "step-run-ended"
    else:
        kind = "step-run-lost"
    return Finding(
        **base,
        kind=kind,
        run_state=_state(run),
        detail=f"the case is in step {int(step)} but its run {_how(run)}",
        repair=f"restart step {int(step)}",
        run_dead=_dead(run),
    )
