"""Junk on the approval page: how fast it answers, and what it costs a concurrent store command.

Starts the approval page (`python -m flows.web.app`) on a migrated SQLite case store holding one
sample case, then sends junk tokens (`GET /a/<random>.<random>`, tokens we never issued) from a
separate process with several threads for a while, in two shapes:

- **one address**: what one machine can do; the rate limit answers 429 once its budget is spent;
- **many addresses**: every request names another client through `X-Forwarded-For`, which the page
  believes from 127.0.0.1 (`REMEDY_APPROVAL_TRUSTED_PROXIES`), so each address stays under the
  limit: the worst case for the audit of junk.

Meanwhile it times a store command that takes the case store's write lock (the audited reveal of
`remedy show --reveal`, in process), and compares it with the same command without junk. Prints
requests per second and their statuses, the audit events the junk left (counted after the page
stopped, so its last aggregated events are in), and the command's median and worst latency.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing import get_context
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

from bench.common import EXAMPLES, say, wait_until, workspace

JUNK_SHAPES = ("one address", "many addresses")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each junk run lasts")
    parser.add_argument("--threads", type=int, default=8, help="junk senders at once")
    parser.add_argument(
        "--every", type=float, default=0.25, help="pause between two timed store commands (s)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the workspace (logs, store)")


@dataclass
class Shape:
    """What one junk run measured."""

    name: str
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    command_s: list[float] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + self.errors


def run(args: argparse.Namespace) -> int:
    """Start the page, time the command without and with junk, print the figures."""
    with workspace("junk", keep=args.keep) as ws:
        ref = _open_case()
        before = _audit_counts()
        page, base = _start_page(ws.root, ws.env)
        try:
            say(f"no junk: the store command alone for {args.seconds:.0f} s")
            quiet = Shape("no junk")
            quiet.command_s = _time_command(ref, seconds=args.seconds, every=args.every)
            shapes = [quiet]
            for name in JUNK_SHAPES:
                say(f"junk from {name}: {args.threads} threads for {args.seconds:.0f} s")
                shapes.append(_junk_run(name, base, ref, args))
        finally:
            _stop_page(page)
        after = _audit_counts()
    _print(shapes, before, after, args)
    return 0


# --- the case store ------------------------------------------------------------------------------


def _open_case() -> str:
    import yaml

    from models.intake import ReportIn
    from tasks.context import utcnow
    from tasks.inputs import validate
    from tasks.intake import open_case

    data = yaml.safe_load((EXAMPLES / "reports" / "tin-kivu.yaml").read_text())
    report = validate(ReportIn, data, source="bench-junk", now=utcnow())
    return open_case(report, now=utcnow(), actor="bench").reference


def _command(ref: str) -> float:
    """Run the audited reveal once (write lock on the case and its chain); return its seconds."""
    from tasks.context import utcnow
    from tasks.store.cases import reveal_identifying_data

    t0 = time.perf_counter()
    reveal_identifying_data(ref, actor="bench", reason="bench", now=utcnow())
    return time.perf_counter() - t0


def _time_command(ref: str, *, seconds: float, every: float) -> list[float]:
    timings = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        timings.append(_command(ref))
        time.sleep(every)
    return timings


def _audit_counts() -> dict[tuple[str, str], int]:
    """Audit events by (chain, action), outside case chains."""
    import sqlalchemy as sa

    from models.tables import AuditEvent
    from tasks.store.db import read_only

    with read_only() as session:
        rows = session.exec(
            sa.select(AuditEvent.chain, AuditEvent.action, sa.func.count()).group_by(  # type: ignore[call-overload]
                AuditEvent.chain, AuditEvent.action
            )
        ).all()
    return {(chain, action): n for chain, action, n in rows if not chain.startswith("RC-")}


# --- the page ------------------------------------------------------------------------------------


def _start_page(root: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    from flows.local.stack import free_port

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    page_env = {
        **os.environ,
        **env,
        "REMEDY_APPROVAL_PORT": str(port),
        "REMEDY_APPROVAL_BASE_URL": base,
        "REMEDY_APPROVAL_TRUSTED_PROXIES": "127.0.0.1",
    }
    log = (root / "approval-page.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.web.app"], env=page_env, stdout=log, stderr=log
    )

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the approval page exited; see {root / 'approval-page.log'}")
        try:
            return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, timeout=60, what="the approval page")
    return proc, base


def _stop_page(proc: subprocess.Popen[bytes]) -> None:
    """Stop the page as its service manager would (SIGTERM: it flushes what it counted)."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- junk ----------------------------------------------------------------------------------------


def _junk_run(name: str, base: str, ref: str, args: argparse.Namespace) -> Shape:
    shape = Shape(name)
    results: Queue[tuple[dict[int, int], int, float]] = get_context("spawn").Queue()
    sender = get_context("spawn").Process(
        target=send_junk,
        args=(base, args.seconds, args.threads, name == "many addresses", results),
    )
    sender.start()
    time.sleep(1.0)  # let the senders start before timing
    shape.command_s = _time_command(ref, seconds=args.seconds - 2.0, every=args.every)
    statuses, errors, elapsed = results.get(timeout=args.seconds + 120)
    sender.join(timeout=30)
    shape.statuses.update(statuses)
    shape.errors, shape.seconds = errors, elapsed
    return shape


def send_junk(
    base: str,
    seconds: float,
    threads: int,
    spread: bool,
    results: Queue[tuple[dict[int, int], int, float]],
) -> None:
    """Send junk tokens from `threads` threads for `seconds`; put (statuses, errors, elapsed)."""
    import httpx

    statuses: Counter[int] = Counter()
    errors = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    sequence = iter(range(10**9))

    def sender() -> None:
        mine: Counter[int] = Counter()
        failed = 0
        with httpx.Client(timeout=30) as client:
            while time.monotonic() < deadline:
                headers = {}
                if spread:
                    with lock:
                        n = next(sequence)
                    # 198.18.0.0/15 is set aside for benchmarks (RFC 2544)
                    headers["X-Forwarded-For"] = (
                        f"198.{18 + (n >> 16) % 2}.{(n >> 8) % 256}.{n % 256}"
                    )
                token = f"{secrets.token_urlsafe(24)}.{secrets.token_urlsafe(32)}"
                try:
                    mine[client.get(f"{base}/a/{token}", headers=headers).status_code] += 1
                except httpx.HTTPError:
                    failed += 1
        with lock:
            statuses.update(mine)
            errors[0] += failed

    t0 = time.monotonic()
    workers = [threading.Thread(target=sender) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put((dict(statuses), errors[0], time.monotonic() - t0))


# --- output --------------------------------------------------------------------------------------


def _ms(values: list[float], pick: Any) -> str:
    return f"{pick(values) * 1000:.1f} ms" if values else "-"


def _print(
    shapes: list[Shape],
    before: dict[tuple[str, str], int],
    after: dict[tuple[str, str], int],
    args: argparse.Namespace,
) -> None:
    print()
    print(
        f"Junk on the approval page: {args.threads} threads, {args.seconds:.0f} s per shape; the "
        "store command is the audited reveal (write lock), timed every "
        f"{args.every:.2f} s meanwhile"
    )
    print()
    print(
        "| junk | requests | requests/s | 400 | 429 | other | command runs | command median | "
        "command worst |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in shapes:
        rate = f"{s.requests / s.seconds:.0f}" if s.seconds else "-"
        other = s.requests - s.statuses[400] - s.statuses[429]
        print(
            f"| {s.name} | {s.requests} | {rate} | {s.statuses[400]} | {s.statuses[429]} | "
            f"{other} | {len(s.command_s)} | {_ms(s.command_s, statistics.median)} | "
            f"{_ms(s.command_s, max)} |"
        )
    print()
    junk_requests = sum(s.requests for s in shapes)
    written = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    events = ", ".join(f"{c}/{a}: {n}" for (c, a), n in sorted(written.items()) if n) or "none"
    print(f"Audit events the junk left ({junk_requests} junk requests): {events}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
