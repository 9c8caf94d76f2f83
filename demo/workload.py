"""Many cases at once: open them, start them, drive them, and find what was done twice.

For the multi-host test (tests/e2e/test_workers.py) and the workers benchmark
(bench/bench_workers.py). The people are demo/scripted.py's stakeholders, one set per case, each
in a thread of its own; they keep trying where a crash made their submission go nowhere, as a
person would open the link again.
"""

from __future__ import annotations

import contextvars
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from models.enums import CaseState, DecisionKind

T = TypeVar("T")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# actions that may name the same subject more than once without anything being done twice
REPEATABLE = ("case.transition", "reconcile.")
SLICE = 60.0  # how long a person waits in one go before looking whether to stop


def sample_reports(n: int, label: str) -> Iterable[Any]:
    """Yield n distinct variants of the sample report (a duplicate would join an earlier case)."""
    import yaml

    from models.intake import ReportIn
    from tasks.context import utcnow
    from tasks.inputs import validate

    base = yaml.safe_load((EXAMPLES / "reports" / "tin-kivu.yaml").read_text())
    run = uuid.uuid4().hex[:6]
    for i in range(n):
        data = dict(base)
        data["description"] = f"{base['description']} [{label} {run} case {i}]"
        yield validate(ReportIn, data, source=f"{label}-{i}", now=utcnow())


def load_directory() -> None:
    """Load examples/stakeholders.yaml into the configured case store."""
    from models.intake import DirectoryIn
    from tasks.context import utcnow
    from tasks.inputs import read_document, validate
    from tasks.store.directory import load_directory as load

    path = EXAMPLES / "stakeholders.yaml"
    load(validate(DirectoryIn, read_document(path), source=str(path)), now=utcnow(), actor="load")


def open_cases(n: int, label: str) -> list[str]:
    """Take in n reports as `remedy intake --no-start` does; return the case references."""
    from tasks.context import utcnow
    from tasks.intake import open_case

    refs = []
    for report in sample_reports(n, label):
        result = open_case(report, now=utcnow(), actor=label)
        if result.duplicate:
            raise RuntimeError(f"a report was taken for a duplicate of {result.reference}")
        refs.append(result.reference)
    return refs


def start_cases(refs: list[str]) -> None:
    """Start each case's entry run, exactly as `remedy start` does."""
    from tasks.orchestration.runs import ENTRY_FLOW, start_flow

    for ref in refs:
        start_flow(ENTRY_FLOW, ref, idempotency_key=f"{ref.lower()}-{ENTRY_FLOW}", step=None)


def in_context(fn: Callable[[str], T]) -> Callable[[str], T]:
    """Run fn in a copy of this context: threads do not inherit the Prefect settings context."""
    ctx = contextvars.copy_context()
    return lambda arg: ctx.copy().run(fn, arg)


def waiting_first(ref: str) -> bool:
    """Tell whether a case waits at its first decision (screening), its run suspended for it."""
    from tasks.decisions.requests import waiting_requests
    from tasks.decisions.resume import waiting_run_ready

    waiting = waiting_requests(ref)
    return bool(
        waiting and waiting[0].kind == DecisionKind.SCREENING and waiting_run_ready(waiting[0])
    )


def case_states(refs: list[str]) -> dict[str, CaseState]:
    """Return each case's stored state."""
    from tasks.store.cases import case_summary

    return {ref: case_summary(ref).state for ref in refs}


@dataclass
class Driving:
    """Cases driven at once by their scripted people until each reaches `until`."""

    refs: list[str]
    until: CaseState
    timeout: float
    retries: Counter[str] = field(default_factory=Counter)  # what made people try again
    finished: dict[str, float] = field(default_factory=dict)  # seconds from the start
    _futures: list[Future[None]] = field(default_factory=list)
    _pool: ThreadPoolExecutor | None = None
    _t0: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Driving:
        """Start one thread per case."""
        self._t0 = time.monotonic()
        self._pool = ThreadPoolExecutor(len(self.refs), thread_name_prefix="people")
        self._futures = [self._pool.submit(in_context(self._drive), r) for r in self.refs]
        return self

    def _drive(self, ref: str) -> None:
        from demo.scripted import ScriptedStakeholders

        people = ScriptedStakeholders()
        deadline = self._t0 + self.timeout
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            try:
                people.drive(ref, until=self.until, timeout=max(1.0, min(SLICE, left)))
                self.finished[ref] = time.monotonic() - self._t0
                return
            except Exception as exc:  # a crash sent the submission nowhere: try again
                if time.monotonic() >= deadline:
                    raise
                if not (isinstance(exc, TimeoutError) and "did not reach" in str(exc)):
                    self.retries[type(exc).__name__] += 1
                    time.sleep(2.0)
        raise RuntimeError(f"{ref}: driving stopped")

    def stop(self) -> None:
        """Make every thread give up at its next chance (a failed test must not wait for them)."""
        self._stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def done(self) -> bool:
        """Tell whether every case has finished (or failed)."""
        return all(f.done() for f in self._futures)

    def wait(self) -> None:
        """Wait for every case; raise the first failure."""
        try:
            for future in self._futures:
                future.result()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)


def decisions_taken(refs: list[str]) -> int:
    """Count the decisions recorded for the cases."""
    from sqlmodel import col, func, select

    from models.tables import Decision, RemediationCase
    from tasks.store.db import read_only

    with read_only() as session:
        query = (
            select(func.count())
            .select_from(Decision)
            .join(RemediationCase, col(RemediationCase.id) == col(Decision.case_id))
            .where(col(RemediationCase.reference).in_(refs))
        )
        return int(session.exec(query).one())


def doubles(refs: list[str]) -> list[str]:
    """Name everything recorded twice for the cases: decisions, audit events, messages, steps."""
    from sqlmodel import select

    from models.tables import AuditEvent, Decision, Notification, PlanAction, RemediationCase
    from tasks.store.db import read_only

    found: list[str] = []
    with read_only() as s:
        for ref in refs:
            case = s.exec(select(RemediationCase).where(RemediationCase.reference == ref)).one()
            kinds = Counter(
                d.kind.value for d in s.exec(select(Decision).where(Decision.case_id == case.id))
            )
            found += [f"{ref}: {n} {k} decisions" for k, n in kinds.items() if n > 1]
            events = Counter(
                (e.action, e.subject_id)
                for e in s.exec(select(AuditEvent).where(AuditEvent.chain == ref))
                if not e.action.startswith(REPEATABLE)
            )
            found += [f"{ref}: audit {a} x{n}" for (a, _), n in events.items() if n > 1]
            keys = Counter(
                n.idempotency_key
                for n in s.exec(select(Notification).where(Notification.case_id == case.id))
            )
            found += [f"{ref}: message {k} x{n}" for k, n in keys.items() if n > 1]
            actions = Counter(
                a.key for a in s.exec(select(PlanAction).where(PlanAction.case_id == case.id))
            )
            found += [f"{ref}: milestone {k} x{n}" for k, n in actions.items() if n > 1]
    return found


def emails_sent(refs: list[str]) -> int:
    """Count the e-mails the outbox records as delivered for the cases."""
    from sqlmodel import col, func, select

    from models.enums import NotificationChannel, NotificationStatus
    from models.tables import Notification, RemediationCase
    from tasks.store.db import read_only

    with read_only() as session:
        query = (
            select(func.count())
            .select_from(Notification)
            .join(RemediationCase, col(RemediationCase.id) == col(Notification.case_id))
            .where(
                col(RemediationCase.reference).in_(refs),
                Notification.channel == NotificationChannel.EMAIL,
                Notification.status == NotificationStatus.DELIVERED,
            )
        )
        return int(session.exec(query).one())


def active_step_runs(refs: list[str]) -> list[str]:
    """Name the cases' flow runs that are still starting or running (not final, not waiting)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    busy = FlowRunFilterStateType(
        any_=[StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]
    )
    names = []
    with get_client(sync_client=True) as client:
        for ref in refs:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    tags=FlowRunFilterTags(all_=[f"case:{ref}"]),
                    state=FlowRunFilterState(type=busy),
                )
            )
            names += [f"{r.name} {r.state.name if r.state else '?'}" for r in runs]
    return names


def needs_repair() -> int:
    """Count what `remedy doctor` lists now: what the next sweep would repair."""
    from tasks.context import utcnow
    from tasks.monitoring.doctor import diagnose

    return len(diagnose(now=utcnow()))


def sweep_while(busy: Callable[[], bool], *, every: float = 10.0) -> list[str]:
    """While `busy()`, look every so often whether anything needs repair and run a sweep if so.

    The schedule sweeps hourly; an operator who sees `remedy doctor` list something runs one at
    once. Returns the final state of each sweep run.
    """
    sweeps = []
    while busy():
        time.sleep(every)
        if busy() and needs_repair():
            sweeps.append(run_sweep())
    return sweeps


def run_sweep(timeout: float = 300.0) -> str:
    """Run the monitoring sweep now on whichever worker takes it; return its final state."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    from tasks.orchestration.deployments import deployment_name

    run: FlowRun = run_deployment(  # type: ignore[assignment,call-arg]
        deployment_name("monitor-milestones"),
        timeout=timeout,
        as_subflow=False,
        idempotency_key=f"sweep-{uuid.uuid4().hex}",
        _sync=True,
    )
    state = run.state
    return state.name if state is not None and state.name else "unknown"
