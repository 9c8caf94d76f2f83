"""Many cases waiting for a decision at once (Prefect server on PostgreSQL).

Opens N cases by intake (the plain function, a varied report each), starts their remediation-case
runs, and waits until every case waits at its first decision: its screening request is waiting and
its verify-allegation run is Paused (suspended) on that request with its form saved. Reports the
processes and resident memory Remedy holds meanwhile (read from /proc), and the Paused runs the API
counts. Then resumes R of them with screening decisions (tasks.decisions.resume.submit_with_code,
with the code tasks.decisions.resume.issued_code finds, as a person reads it in their message) and
measures how long the runner takes to pick them all up and bring each to its next decision (safety).
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

SCREENER = "lena.lead"


@dataclass
class Sample:
    """The resources held at one moment."""

    label: str
    at_s: float
    waiting: int
    runner_children: int
    runner_rss_mb: float
    runner_tree_rss_mb: float
    server_rss_mb: float
    server_processes: int


@dataclass
class Result:
    """Everything the bench measured."""

    cases: int
    limit: int
    poll: int
    intake_s: float = 0.0
    start_s: float = 0.0
    ramp_s: float = 0.0
    all_waiting: int = 0
    paused_runs: int = 0
    samples: list[Sample] = field(default_factory=list)
    failed_runs: int = 0
    failed_runs_end: int = 0
    peak_children: int = 0
    peak_runner_rss_mb: float = 0.0
    resumed: int = 0
    submit_s: float = 0.0
    resume_s: float = 0.0
    resume_reached: int = 0
    server_db_mb: float | None = None
    pg_connections: int | None = None
    problems: int = 0
    notes: list[str] = field(default_factory=list)


# --- cases ---------------------------------------------------------------------------------------


def varied_reports(n: int) -> Iterable[Any]:
    """Yield n distinct, valid variants of the sample report."""
    import yaml

    from bench.common import EXAMPLES
    from models.intake import ReportIn
    from tasks.context import utcnow
    from tasks.inputs import validate

    base = yaml.safe_load((EXAMPLES / "reports" / "tin-kivu.yaml").read_text())
    run = uuid.uuid4().hex[:6]
    for i in range(n):
        data = dict(base)
        data["description"] = f"{base['description']} [bench {run} case {i}]"
        data["location"] = {**base["location"], "site": f"{base['location']['site']} #{i % 37}"}
        data["affected_persons"] = base["affected_persons"][: 1 + i % len(base["affected_persons"])]
        yield validate(ReportIn, data, source=f"bench-{i}", now=utcnow())


def open_cases(n: int) -> list[str]:
    """Take in n reports through tasks.intake.open_case; return their references."""
    from bench.common import say
    from tasks.context import utcnow
    from tasks.intake import open_case

    refs = []
    for i, report in enumerate(varied_reports(n), start=1):
        result = open_case(report, now=utcnow(), actor="bench")
        if result.duplicate:
            raise RuntimeError(f"report {i} was taken for a duplicate of {result.reference}")
        refs.append(result.reference)
        if i % 250 == 0:
            say(f"  {i} cases taken in")
    return refs


def start_cases(refs: list[str]) -> None:
    """Start each case's remediation-case run, exactly as `remedy start` does."""
    from bench.common import say
    from tasks.orchestration.runs import ENTRY_FLOW, start_flow

    for i, ref in enumerate(refs, start=1):
        start_flow(ENTRY_FLOW, ref, idempotency_key=f"{ref.lower()}-{ENTRY_FLOW}", step=None)
        if i % 250 == 0:
            say(f"  {i} runs started")


# --- what waits ----------------------------------------------------------------------------------


def waiting_requests_of(kind: Any, case_refs: list[str] | None = None) -> list[Any]:
    """Return the waiting decision requests of a kind (optionally for some cases only)."""
    from sqlmodel import col, select

    from models.enums import DecisionRequestStatus
    from models.tables import DecisionRequest, RemediationCase
    from tasks.store.db import read_only

    with read_only() as session:
        query = select(DecisionRequest).where(
            DecisionRequest.kind == kind, DecisionRequest.status == DecisionRequestStatus.WAITING
        )
        if case_refs is not None:
            query = query.join(
                RemediationCase, col(RemediationCase.id) == col(DecisionRequest.case_id)
            ).where(col(RemediationCase.reference).in_(case_refs))
        return list(session.exec(query).all())


def count_waiting(kind: Any) -> int:
    """Count the waiting decision requests of a kind."""
    from sqlmodel import func, select

    from models.enums import DecisionRequestStatus
    from models.tables import DecisionRequest
    from tasks.store.db import read_only

    with read_only() as session:
        query = select(func.count()).where(
            DecisionRequest.kind == kind, DecisionRequest.status == DecisionRequestStatus.WAITING
        )
        return int(session.exec(query).one())


def _paused_filter() -> Any:
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    paused = FlowRunFilterStateType(any_=[StateType.PAUSED])
    return FlowRunFilter(state=FlowRunFilterState(type=paused))


SETTLED = ("COMPLETED", "PAUSED", "FAILED", "CRASHED", "CANCELLED")
ACTIVE = ("SCHEDULED", "PENDING", "RUNNING", "CANCELLING")


def run_counts() -> dict[str, int]:
    """Count the server's flow runs by state type."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    counts = {}
    with get_client(sync_client=True) as client:
        for name in (*SETTLED, *ACTIVE):
            kind = FlowRunFilterStateType(any_=[StateType[name]])
            flt = FlowRunFilter(state=FlowRunFilterState(type=kind))
            counts[name] = client.count_flow_runs(flow_run_filter=flt)
    return counts


def count_paused() -> int:
    """Count the flow runs the server holds in a Paused state (Suspended included)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.count_flow_runs(flow_run_filter=_paused_filter())


def ready_keys(run_ids: list[uuid.UUID] | None = None) -> dict[uuid.UUID, str]:
    """Map each Paused run with its form saved to its pause key (all, or the runs named)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilterId

    flt = _paused_filter()
    found: dict[uuid.UUID, str] = {}
    with get_client(sync_client=True) as client:
        if run_ids is not None:
            flt.id = FlowRunFilterId(any_=run_ids)
        offset = 0
        while True:
            page = client.read_flow_runs(flow_run_filter=flt, limit=200, offset=offset)
            for run in page:
                details = run.state.state_details if run.state else None
                if details and details.pause_key and details.run_input_keyset:
                    found[run.id] = details.pause_key
            if len(page) < 200:
                return found
            offset += 200


def count_ready(requests: list[Any], ready: dict[uuid.UUID, str]) -> int:
    """Count the requests whose run is suspended on the request's own key."""
    return sum(1 for r in requests if r.flow_run_id and ready.get(r.flow_run_id) == r.suspend_key)


# --- resources -----------------------------------------------------------------------------------


def sample(label: str, t0: float, waiting: int, runner: int, server: int) -> Sample:
    """Read processes and memory of the runner and the server from /proc."""
    from bench.common import descendants, rss_mb, tree_rss_mb

    server_tree = [server, *descendants(server)]
    return Sample(
        label,
        time.monotonic() - t0,
        waiting,
        len(descendants(runner)),
        rss_mb(runner),
        tree_rss_mb(runner),
        sum(rss_mb(p) for p in server_tree),
        len(server_tree),
    )


def pg_connections(server_db: str | None) -> int | None:
    """Count the connections the Prefect server holds to its PostgreSQL database."""
    if not server_db:
        return None
    import sqlalchemy as sa

    url = sa.engine.make_url(server_db)
    engine = sa.create_engine(url.set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            n = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                "pg_backend_pid()",
                (url.database,),
            ).scalar()
    finally:
        engine.dispose()
    return int(n or 0)


# --- the bench -----------------------------------------------------------------------------------


def wait_all_screening(
    refs: list[str], res: Result, t0: float, runner: int, server: int, stall_s: float
) -> None:
    """Wait until every case waits at screening; sample resources at half and at all.

    Gives up when no run changes state for stall_s, or when nothing is left to run.
    """
    from bench.common import say
    from models.enums import DecisionKind

    n = len(refs)
    half_done = False
    last_progress, last_seen, last_print, idle_checks = time.monotonic(), None, 0.0, 0
    while True:
        counts = run_counts()
        paused = counts["PAUSED"]
        requests = count_waiting(DecisionKind.SCREENING)
        waiting = min(paused, requests)
        now = time.monotonic()
        seen = (waiting, *(counts[t] for t in SETTLED))
        if seen != last_seen:
            last_progress, last_seen = now, seen
        if not half_done and waiting >= n // 2:
            res.samples.append(sample(f"{waiting} waiting (N/2)", t0, waiting, runner, server))
            half_done = True
        s = sample("progress", t0, waiting, runner, server)
        res.peak_children = max(res.peak_children, s.runner_children)
        res.peak_runner_rss_mb = max(res.peak_runner_rss_mb, s.runner_rss_mb)
        if now - last_print >= 30:
            say(
                f"  {waiting}/{n} waiting; runs: {counts['COMPLETED']} completed, "
                f"{counts['SCHEDULED'] + counts['PENDING'] + counts['RUNNING']} to run, "
                f"{counts['FAILED'] + counts['CRASHED']} failed; runner: "
                f"{s.runner_children} children, {s.runner_rss_mb:.0f} MB"
            )
            last_print = now
        idle_checks = idle_checks + 1 if not any(counts[t] for t in ACTIVE) else 0
        done = paused >= n and requests >= n
        stalled = now - last_progress > stall_s
        if done or stalled or idle_checks >= 5:
            ready = ready_keys()
            res.all_waiting = count_ready(waiting_requests_of(DecisionKind.SCREENING), ready)
            if res.all_waiting >= n or not done:
                res.ramp_s = time.monotonic() - t0
                res.failed_runs = counts["FAILED"] + counts["CRASHED"]
                if res.all_waiting < n:
                    why = (
                        "nothing left to run"
                        if idle_checks >= 5
                        else f"no change in {stall_s:.0f} s"
                    )
                    res.notes.append(f"only {res.all_waiting}/{n} reached screening ({why})")
                    say(res.notes[-1])
                return
        time.sleep(2.0)


def resume_some(
    refs: list[str],
    count: int,
    res: Result,
    clock: tuple[float, int, int],
    stall_s: float,
) -> None:
    """Submit screening decisions for `count` waiting cases; time until each waits for safety.

    clock: the bench's start time, the runner's pid and the server's pid (for the samples).
    """
    bench_t0, runner, server = clock
    from bench.common import say
    from demo.scripted import SAMPLE_SCRIPT
    from models.enums import DecisionKind
    from tasks.decisions.resume import issued_code, submit_with_code

    screening = waiting_requests_of(DecisionKind.SCREENING, refs)
    ready = ready_keys([r.flow_run_id for r in screening if r.flow_run_id])
    screening = [r for r in screening if ready.get(r.flow_run_id) == r.suspend_key][:count]
    values = SAMPLE_SCRIPT[DecisionKind.SCREENING][1]
    forms = []
    for request in screening:
        code = issued_code(request.id, SCREENER)
        if code is None:
            raise RuntimeError(f"{SCREENER} received no code for request {request.id}")
        forms.append((request.id, {**values, "approver": SCREENER, "approval_code": code}))
    res.resumed = len(forms)
    say(f"resuming {len(forms)} runs with screening decisions")
    t0 = time.monotonic()
    for request_id, form in forms:
        submit_with_code(request_id, form, channel="script")
    res.submit_s = time.monotonic() - t0
    wanted = {r.case_id for r in screening}
    last_progress, last_count, last_print = time.monotonic(), -1, time.monotonic()
    while True:
        safety = [r for r in waiting_requests_of(DecisionKind.SAFETY, refs) if r.case_id in wanted]
        ready = ready_keys([r.flow_run_id for r in safety if r.flow_run_id]) if safety else {}
        reached = count_ready(safety, ready)
        now = time.monotonic()
        if reached != last_count:
            last_progress, last_count = now, reached
        if now - last_print >= 30:
            say(f"  {reached}/{len(forms)} resumed runs wait for safety")
            last_print = now
        if reached >= len(forms):
            break
        if now - last_progress > stall_s:
            res.notes.append(f"resume stalled at {reached}/{len(forms)} for {stall_s:.0f} s")
            say(res.notes[-1])
            break
        time.sleep(0.5)
    res.resume_s = time.monotonic() - t0
    res.resume_reached = reached
    res.samples.append(sample("after resume, at safety", bench_t0, reached, runner, server))


def measure(args: argparse.Namespace) -> Result:
    """Run the whole bench on a fresh stack; return what it measured."""
    from bench.common import (
        database_size_mb,
        local_stack,
        report_log_problems,
        say,
        server_database,
        settle_runner,
        talking_to,
        workspace,
    )

    limit = args.limit or int(os.environ.get("REMEDY_RUNNER_LIMIT", "8"))
    res = Result(cases=args.cases, limit=limit, poll=args.poll)
    extra = {"REMEDY_RUNNER_LIMIT": str(limit)}
    with (
        workspace("waiting", keep=args.keep) as ws,
        server_database(args.server, "waiting") as server_db,
        local_stack(ws, server_db=server_db, poll_seconds=args.poll, extra_env=extra) as stack,
    ):
        say(f"server up at {stack.api_url} ({args.server}); starting the runner (limit {limit})")
        stack.start_runner()
        runner, server = stack.processes["runner"].pid, stack.processes["prefect-server"].pid
        try:
            with talking_to(stack):
                t = time.monotonic()
                refs = open_cases(args.cases)
                res.intake_s = time.monotonic() - t
                say(f"{len(refs)} cases taken in ({res.intake_s:.1f} s); starting their runs")
                t0 = time.monotonic()
                res.samples.append(sample("0 waiting", t0, 0, runner, server))
                start_cases(refs)
                res.start_s = time.monotonic() - t0
                say(f"{len(refs)} runs started ({res.start_s:.1f} s); waiting for screening")
                wait_all_screening(refs, res, t0, runner, server, args.stall)
                say(f"{res.all_waiting}/{len(refs)} wait at screening after {res.ramp_s:.0f} s")
                settle_runner(stack, 120)
                res.paused_runs = count_paused()
                res.samples.append(
                    sample(f"{res.all_waiting} waiting (N)", t0, res.all_waiting, runner, server)
                )
                res.pg_connections = pg_connections(server_db)
                res.server_db_mb = database_size_mb(server_db)
                resume_some(refs, args.resume, res, (t0, runner, server), args.stall)
                settle_runner(stack, 120)
                res.samples.append(sample("settled", t0, res.resume_reached, runner, server))
                counts = run_counts()
                res.failed_runs_end = counts["FAILED"] + counts["CRASHED"]
        finally:
            res.problems = sum(p.count for p in report_log_problems(stack, ["runner"]))
    return res


def summarise(res: Result) -> str:
    """Return the bench's tables."""
    from bench.common import grid, table

    per_min = res.resume_reached / (res.resume_s / 60) if res.resume_s else 0.0
    rows: list[tuple[str, Any]] = [
        ("cases opened (N)", res.cases),
        ("runner limit (REMEDY_RUNNER_LIMIT)", res.limit),
        ("runner poll seconds", res.poll),
        ("intake of N cases", f"{res.intake_s:.1f} s"),
        ("starting N runs", f"{res.start_s:.1f} s"),
        ("start -> all waiting at screening", f"{res.ramp_s:.0f} s ({res.ramp_s / 60:.1f} min)"),
        ("ramp per case (N pickups x 2)", f"{res.ramp_s / max(res.cases, 1):.2f} s"),
        ("cases waiting (request + run suspended)", res.all_waiting),
        ("most runner children seen while starting", res.peak_children),
        ("largest runner RSS seen while starting", f"{res.peak_runner_rss_mb:.0f} MB"),
        ("flow runs Paused (API)", res.paused_runs),
        ("flow runs Failed/Crashed (API): ramp, end", f"{res.failed_runs}, {res.failed_runs_end}"),
        ("Prefect PostgreSQL connections", res.pg_connections),
        ("Prefect database size", f"{res.server_db_mb:.0f} MB" if res.server_db_mb else "-"),
        ("resumed (screening decisions)", res.resumed),
        ("time to submit them", f"{res.submit_s:.1f} s"),
        ("resumed -> all waiting for safety", f"{res.resume_s:.1f} s ({res.resume_reached} runs)"),
        ("pickup rate", f"{per_min:.1f} runs/min"),
        ("runner log lines naming errors", res.problems),
    ]
    out = [table("cases waiting for a decision", rows), ""]
    header = ["moment", "t s", "waiting", "runner procs", "runner MB", "runner+kids MB"]
    header.append("server MB")
    out.append(
        grid(
            "processes and resident memory (from /proc)",
            header,
            [
                [
                    s.label,
                    f"{s.at_s:.0f}",
                    s.waiting,
                    s.runner_children,
                    f"{s.runner_rss_mb:.0f}",
                    f"{s.runner_tree_rss_mb:.0f}",
                    f"{s.server_rss_mb:.0f} ({s.server_processes} proc)",
                ]
                for s in res.samples
            ],
        )
    )
    flat = [s.runner_rss_mb for s in res.samples if "waiting" in s.label]
    if len(flat) >= 2:
        out.append(
            f"runner RSS from 0 to N waiting: {flat[0]:.0f} -> {flat[-1]:.0f} MB "
            f"({flat[-1] - flat[0]:+.0f} MB for {res.all_waiting} waiting)"
        )
    out += res.notes
    return "\n".join(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the waiting bench's options."""
    parser.add_argument("--cases", type=int, default=1000, help="cases to open (default 1000)")
    parser.add_argument("--resume", type=int, default=100, help="runs to resume (default 100)")
    parser.add_argument("--limit", type=int, default=0, help="runner limit (default: env or 8)")
    parser.add_argument("--poll", type=int, default=2, help="runner poll seconds (default 2)")
    parser.add_argument("--server", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument(
        "--stall", type=float, default=600, help="give up after this long without progress (s)"
    )
    parser.add_argument("--keep", action="store_true", help="keep temp dirs (logs) afterwards")


def run(args: argparse.Namespace) -> int:
    """Measure and print."""
    res = measure(args)
    print()
    print(summarise(res))
    return 0
