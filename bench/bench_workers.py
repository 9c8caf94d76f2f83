"""Many workers, many hosts: cases per minute with one worker and with two, and a host lost.

The scaled installation of demo/scaled.py: the Prefect server and the case store on PostgreSQL,
prefect.yaml's deployments on the process work pool, and two hosts (network namespaces, each
reaching the server and PostgreSQL by its link's address). Each host stands for a machine of its
own with half a core: its worker and the flow processes it starts run in a CPU control group
capped at `--host-cores` (demo/cpushare.py; `--pin` pins each host to one CPU instead or as well).
The Prefect server, PostgreSQL and this process have the rest of the machine, as they would have
their own. Without the cap, on a 2-core machine, the second host takes its CPU from the server,
and the ratio shows the machine, not the workers.

1. **one worker** (host 0): N new cases are started as `remedy start` does; the clock runs until
   every one waits at its first decision (screening requested, its run suspended on it).
2. **two workers** (host 1's worker joins): N more cases, the same clock.
3. **a host lost** (`--crash-cases`, default 30): that many cases driven through steps 1 to 3 by
   the scripted people on both hosts; host 0 is SIGKILLed while it executes step runs; the sweep
   runs on host 1 whenever `remedy doctor` lists something; every case must reach plan
   implementation with nothing done twice.
   The multi-host test (tests/e2e/test_workers.py) is the same with fewer cases.

Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOSTS = 2


@dataclass
class Phase:
    """One measurement of cases reaching their first decision."""

    workers: int
    cases: int
    seconds: float = 0.0
    first_decision_s: list[float] = field(default_factory=list)
    worker_cpu_s: float = 0.0
    server_cpu_s: float = 0.0  # the Prefect server's processes
    machine_cpu_s: float = 0.0  # everything: workers, server, PostgreSQL, this process

    @property
    def per_minute(self) -> float:
        return 60.0 * self.cases / self.seconds if self.seconds else 0.0


@dataclass
class Crash:
    """The run with a host killed in the middle."""

    cases: int
    killed_after_s: float = 0.0
    in_flight: int = 0
    driven_s: float = 0.0
    settled_s: float = 0.0
    sweeps: list[str] = field(default_factory=list)
    retries: dict[str, int] = field(default_factory=dict)
    states: dict[str, int] = field(default_factory=dict)
    doubles: list[str] = field(default_factory=list)
    emails_sent: int = 0
    emails_received: int = 0
    emails_repeated: int = 0  # the same message (X-Remedy-Key) received again
    error: str | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the workers bench's options."""
    parser.add_argument("--cases", type=int, default=20, help="cases per phase (default 20)")
    parser.add_argument("--limit", type=int, default=4, help="flow runs per worker (default 4)")
    parser.add_argument(
        "--crash-cases", type=int, default=30, help="cases in the host-lost run (0: skip it)"
    )
    parser.add_argument(
        "--pin", action=argparse.BooleanOptionalAction, default=False, help="one CPU per host"
    )
    parser.add_argument(
        "--host-cores",
        type=float,
        default=0.5,
        help="cap each host at this many cores (a CPU control group: demo/cpushare.py; "
        "default 0.5; 0: not capped)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs) afterwards")


def _worker_cpu(scaled: Any) -> float:
    """CPU seconds used by the running workers and the flow processes they waited for."""
    from bench.common import cpu_seconds

    return sum(cpu_seconds(p.pid) for p in scaled.workers.values())


def first_decisions(scaled: Any, workers: int, n: int) -> Phase:
    """Start n new cases; time until every one waits at its first decision."""
    from bench.common import cpu_seconds, machine_cpu_seconds, say
    from demo.workload import open_cases, start_cases, waiting_first

    phase = Phase(workers, n)
    refs = open_cases(n, f"bench-w{workers}")
    server = scaled.stack.processes["prefect-server"].pid
    server0, machine0 = cpu_seconds(server), machine_cpu_seconds()
    cpu0, t0 = _worker_cpu(scaled), time.monotonic()
    start_cases(refs)
    left = set(refs)
    while left:
        time.sleep(2.0)
        for ref in sorted(left):
            if waiting_first(ref):
                left.discard(ref)
                phase.first_decision_s.append(time.monotonic() - t0)
        if time.monotonic() - t0 > 60 * n:
            raise TimeoutError(f"{len(left)} of {n} cases never reached their first decision")
    phase.seconds = time.monotonic() - t0
    phase.worker_cpu_s = _worker_cpu(scaled) - cpu0
    phase.server_cpu_s = cpu_seconds(server) - server0
    phase.machine_cpu_s = machine_cpu_seconds() - machine0
    say(f"  {workers} worker(s): {n} cases waiting after {phase.seconds:.1f} s")
    return phase


def lose_a_host(scaled: Any, n: int) -> Crash:
    """Drive n cases through steps 1-3 on both hosts, kill host 0 mid-run, let sweeps repair."""
    from bench.common import say, wait_until
    from demo.workload import (
        Driving,
        active_step_runs,
        case_states,
        decisions_taken,
        doubles,
        emails_sent,
        open_cases,
        start_cases,
        sweep_while,
    )
    from models.enums import CaseState

    crash = Crash(n)
    mail_before = len(scaled.mail.messages)
    refs = open_cases(n, "bench-crash")
    t0 = time.monotonic()
    start_cases(refs)
    driving = Driving(refs, until=CaseState.IMPLEMENTING, timeout=120.0 * n).start()
    try:
        wait_until(lambda: decisions_taken(refs) >= n, timeout=60.0 * n, what="first decisions")
        host = scaled.hosts[0]
        wait_until(lambda: bool(host.flow_processes()), timeout=300, what="host 0 to run a flow")
        crash.in_flight = len(host.flow_processes())
        crash.killed_after_s = time.monotonic() - t0
        scaled.kill_host(host)
        say(f"  host 0 killed after {crash.killed_after_s:.0f} s ({crash.in_flight} flow runs)")
        crash.sweeps = sweep_while(lambda: not driving.done())
        driving.wait()
        crash.driven_s = time.monotonic() - t0
        wait_until(lambda: not active_step_runs(refs), timeout=600, what="step 4's runs")
        crash.settled_s = time.monotonic() - t0
    except (TimeoutError, RuntimeError) as exc:
        crash.error = f"{type(exc).__name__}: {exc}"
    finally:
        driving.stop()
    crash.retries = dict(driving.retries)
    states = case_states(refs)
    crash.states = {s.value: list(states.values()).count(s) for s in set(states.values())}
    crash.doubles = doubles(refs)
    crash.emails_sent = emails_sent(refs)
    received = Counter(str(m["X-Remedy-Key"]) for m in scaled.mail.messages[mail_before:])
    crash.emails_received = sum(received.values())
    crash.emails_repeated = sum(n - 1 for n in received.values())
    return crash


def measure(args: argparse.Namespace, root: Path) -> tuple[list[Phase], Crash | None]:
    """Set up the installation, run the phases, take it down."""
    from cryptography.fernet import Fernet
    from prefect.settings import temporary_settings

    from bench.common import DEFAULT_ADMIN_URL, say
    from demo.scaled import scaled_installation
    from demo.workload import load_directory
    from flows.local.credential import CLIENT_VARIABLE

    admin = os.environ.get("REMEDY_BENCH_POSTGRES_URL", DEFAULT_ADMIN_URL)
    key = Fernet.generate_key().decode()
    say("setting up: server and case store on PostgreSQL, pool, prefect deploy --all, 2 hosts")
    with scaled_installation(root, hosts=HOSTS, key=key, admin_url=admin) as scaled:
        saved = dict(os.environ)
        os.environ.update(scaled.env)
        os.environ[CLIENT_VARIABLE] = scaled.stack.auth_string or ""
        os.environ["PREFECT_API_URL"] = scaled.stack.api_url
        _clear()
        try:
            with temporary_settings(scaled.operator_settings()):
                load_directory()
                phases = []
                for n, host in enumerate(scaled.hosts, start=1):
                    cpu, cores = _cpu(args, host.number), args.host_cores or None
                    scaled.start_worker(host, limit=args.limit, cpu=cpu, cores=cores)
                    phases.append(first_decisions(scaled, n, args.cases))
                crash = lose_a_host(scaled, args.crash_cases) if args.crash_cases else None
        finally:
            os.environ.clear()
            os.environ.update(saved)
            _clear()
    return phases, crash


def _cpu(args: argparse.Namespace, number: int) -> int | None:
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[number % len(cpus)] if args.pin else None


def _clear() -> None:
    from bench.common import clear_remedy_caches
    from tasks.context import _routing_at

    clear_remedy_caches()
    _routing_at.cache_clear()


def summarise(args: argparse.Namespace, phases: list[Phase], crash: Crash | None) -> str:
    """Return the printed report."""
    from bench.common import grid, table

    rows = []
    for p in phases:
        times = sorted(p.first_decision_s)
        rows.append(
            [
                p.workers,
                p.cases,
                f"{p.seconds:.1f}",
                f"{p.per_minute:.1f}",
                f"{statistics.median(times):.1f}" if times else "-",
                f"{p.worker_cpu_s / (2 * p.cases):.2f}",
                f"{p.server_cpu_s / (2 * p.cases):.2f}",
                f"{(p.machine_cpu_s - p.worker_cpu_s - p.server_cpu_s) / (2 * p.cases):.2f}",
                f"{p.machine_cpu_s / p.seconds:.2f}" if p.seconds else "-",
            ]
        )
    header = ["workers", "cases", "all waiting s", "cases/min", "median s"]
    per_pickup = ["workers", "server", "the rest"]  # CPU s per pickup
    out = [
        grid(
            "first decision (CPU s per pickup; cores busy: the machine's CPU s per second)",
            [*header, *per_pickup, "cores busy"],
            rows,
        )
    ]
    if len(phases) == 2 and phases[0].per_minute:
        ratio = phases[1].per_minute / phases[0].per_minute
        out.append(
            f"two workers / one: {ratio:.2f}x (target >= 1.7x); pinned: {args.pin}; "
            f"cores per host: {args.host_cores or 'not capped'}; cores here: {os.cpu_count()}"
        )
    if crash is not None:
        out.append(
            table(
                f"a host lost: {crash.cases} cases through steps 1-3",
                [
                    ("host 0 killed after", f"{crash.killed_after_s:.0f} s"),
                    ("flow processes killed with it", crash.in_flight),
                    ("all cases driven after", f"{crash.driven_s:.0f} s"),
                    ("all step runs settled after", f"{crash.settled_s:.0f} s"),
                    ("sweeps run (the doctor listed something)", ", ".join(crash.sweeps) or "-"),
                    ("people tried again after", crash.retries or "-"),
                    ("case states", crash.states),
                    ("recorded twice", crash.doubles or "nothing"),
                    ("e-mails delivered", crash.emails_sent),
                    ("e-mails received", crash.emails_received),
                    ("e-mails received twice", crash.emails_repeated),
                    ("error", crash.error or "-"),
                ],
            )
        )
    return "\n\n".join(out)


def run(args: argparse.Namespace) -> int:
    """Measure and print."""
    import shutil
    import tempfile

    from bench.common import say
    from demo.hosts import unavailable

    reason = unavailable()
    if reason is None and args.host_cores:
        from demo.cpushare import unavailable as no_shares

        reason = no_shares()
        reason = reason and f"{reason} (--host-cores 0 runs without them)"
    if reason:
        say(f"workers bench skipped: {reason}")
        return 0
    root = Path(tempfile.mkdtemp(prefix="remedy-bench-workers-"))
    try:
        phases, crash = measure(args, root)
    finally:
        if args.keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print()
    print(summarise(args, phases, crash))
    return 1 if crash is not None and (crash.error or crash.doubles) else 0
