"""Cases moving at once through step 1, on a Prefect server on SQLite and on PostgreSQL.

For each backend a fresh stack (server + runner), then for each load level N: N cases are taken
in, and N threads each start one case's run and take its three step-1 decisions (screening,
safety, verification) as people do, until the case waits in step 2. Counts what the server
answered with 5xx (it logs every 500 and, with PREFECT_SERVER_LOG_RETRYABLE_ERRORS, every 503),
its "database is locked" lines (requests and the server's own services), runs that failed and
cases that did not get through (Prefect's clients retry a 503 quietly, at debug level).
`--set NAME=VALUE` changes the server's and clients' environment (to try Prefect's settings);
`--prefect-defaults` runs a SQLite server as Prefect does (its transactions DEFERRED),
not as `remedy up` does (flows/local/sqlite_server.py), to compare.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from demo.workload import in_context

SERVER_5XX = re.compile(r"Encountered (retryable )?exception in request")
LOCKED = re.compile(r"database is locked")


@dataclass
class Level:
    """What one load level measured on one backend."""

    backend: str
    cases: int
    wall_s: float = 0.0
    through: int = 0
    server_5xx: int = 0
    server_503: int = 0
    locked: int = 0
    failed_runs: int = 0
    errors: list[str] = field(default_factory=list)


def _count(path: Path, start: int, pattern: re.Pattern[str]) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as fh:
        fh.seek(start)
        text = fh.read().decode(errors="replace")
    return sum(1 for line in text.splitlines() if pattern.search(line))


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def move_through_step_1(ref: str, timeout: float = 1800.0) -> str | None:
    """Start a case and take its step-1 decisions; return None, or the error's type.

    A slow verdict is waited for, not taken again: on a loaded machine a resumed run may wait
    minutes for a free slot in the runner (REMEDY_RUNNER_LIMIT), which is not the server's doing.
    """
    from demo.scripted import ScriptedStakeholders
    from models.enums import CaseState
    from tasks.decisions.requests import waiting_requests
    from tasks.orchestration.runs import ENTRY_FLOW, start_flow
    from tasks.store.cases import case_summary

    people, decided = ScriptedStakeholders(), set[tuple[object, int]]()
    deadline = time.monotonic() + timeout
    try:
        start_flow(ENTRY_FLOW, ref, idempotency_key=f"{ref.lower()}-load", step=None)
        while case_summary(ref).state != CaseState.DETERMINING_RESPONSE:
            if time.monotonic() > deadline:
                return "TimeoutError"
            fresh = [r for r in waiting_requests(ref) if (r.id, r.tries) not in decided]
            if not fresh:
                time.sleep(0.5)
                continue
            decided.add((fresh[0].id, fresh[0].tries))
            with suppress(TimeoutError):  # not checked yet: the request still waits, see above
                people.decide(fresh[0])
    except Exception as exc:  # counted and named by type only: messages may carry case data
        return type(exc).__name__
    return None


def failed_runs() -> int:
    """Count the server's flow runs that ended Failed or Crashed."""
    from bench.bench_waiting import run_counts

    counts = run_counts()
    return counts["FAILED"] + counts["CRASHED"]


def one_level(stack: object, backend: str, n: int) -> Level:
    """Move n cases through step 1 at once on a running stack; count the trouble it caused."""
    from bench.bench_waiting import open_cases
    from bench.common import say
    from flows.local.stack import LocalStack

    assert isinstance(stack, LocalStack)
    level = Level(backend, n)
    server_log = stack.log("prefect-server")
    server_at = _size(server_log)
    failed_before = failed_runs()
    refs = open_cases(n)
    t0 = time.monotonic()
    with ThreadPoolExecutor(n) as pool:
        errors = list(pool.map(in_context(move_through_step_1), refs))
    level.wall_s = time.monotonic() - t0
    level.errors = [e for e in errors if e]
    level.through = n - len(level.errors)
    level.server_5xx = _count(server_log, server_at, SERVER_5XX)
    level.server_503 = _count(server_log, server_at, re.compile("Encountered retryable exception"))
    level.locked = _count(server_log, server_at, LOCKED)
    level.failed_runs = failed_runs() - failed_before
    say(
        f"  {backend}, {n} at once: {level.through}/{n} through step 1 in {level.wall_s:.0f} s; "
        f"server 5xx {level.server_5xx}, locked {level.locked}"
    )
    return level


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    env = {}
    for item in args.set or []:
        name, _, value = item.partition("=")
        env[name] = value
    return env


@contextmanager
def _stack(ws: Any, server_db: str | None, args: argparse.Namespace) -> Iterator[Any]:
    """Start a server (SQLite as `remedy up` runs it, or as Prefect does) and the runner."""
    from flows.local.stack import LocalStack, free_port

    stack = LocalStack(
        home=ws.stack_home,
        port=free_port(),
        server_database_url=server_db,
        poll_seconds=args.poll,
        extra_env={**ws.env, **_overrides(args)},
        sqlite_in_turn=not args.prefect_defaults,
    )
    try:
        stack.start_server()
        stack.start_runner()
        yield stack
    finally:
        stack.stop()


def measure(args: argparse.Namespace) -> list[Level]:
    """Run every level on a fresh stack per backend; return what was measured."""
    from bench.common import (
        report_log_problems,
        say,
        server_database,
        settle_runner,
        talking_to,
        workspace,
    )

    levels = [int(x) for x in args.cases.split(",")]
    if args.set or args.prefect_defaults:
        say(f"changed: {args.set or []}; Prefect's own transactions: {args.prefect_defaults}")
    results = []
    for backend in args.backend.split(","):
        with (
            workspace(f"sqlite-load-{backend}", keep=args.keep) as ws,
            server_database(backend, "load") as server_db,
            _stack(ws, server_db, args) as stack,
        ):
            say(f"server on {backend} at {stack.api_url}, runner started")
            with talking_to(stack):
                for n in levels:
                    results.append(one_level(stack, backend, n))
                    settle_runner(stack, 120)
            report_log_problems(stack, ["prefect-server"])
    return results


def summarise(levels: list[Level]) -> str:
    """Return the bench's table."""
    from bench.common import grid

    header = ["backend", "cases at once", "through", "wall s", "server 5xx (503)", "locked"]
    header += ["runs failed", "errors"]
    rows = [
        [
            lv.backend,
            lv.cases,
            f"{lv.through}/{lv.cases}",
            f"{lv.wall_s:.0f}",
            f"{lv.server_5xx} ({lv.server_503})",
            lv.locked,
            lv.failed_runs,
            ", ".join(sorted(set(lv.errors))) or "-",
        ]
        for lv in levels
    ]
    return grid("cases moving through step 1 at once", header, rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the load bench's options."""
    parser.add_argument("--cases", default="1,5,10", help="load levels, cases at once (1,5,10)")
    parser.add_argument("--backend", default="sqlite,postgresql", help="server databases to try")
    parser.add_argument("--poll", type=int, default=1, help="runner poll seconds (default 1)")
    parser.add_argument(
        "--prefect-defaults",
        action="store_true",
        help="SQLite transactions as Prefect opens them (DEFERRED), not as remedy up does",
    )
    parser.add_argument(
        "--set", action="append", metavar="NAME=VALUE", help="one more environment variable"
    )
    parser.add_argument("--keep", action="store_true", help="keep temp dirs (logs) afterwards")


def run(args: argparse.Namespace) -> int:
    """Measure and print."""
    levels = measure(args)
    print()
    print(summarise(levels))
    return 0
