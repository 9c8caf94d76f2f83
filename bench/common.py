"""What every benchmark shares: a throw-away workspace, a Prefect server database, /proc readings.

A workspace is a temp directory holding a migrated SQLite case store, its own Fernet key and the
local stack's home (logs). The Prefect server keeps its data in a fresh PostgreSQL database
(dropped at the end) or, if asked, in SQLite under the workspace. Nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flows.local.stack import LocalStack

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def say(message: str) -> None:
    """Print a progress line with the time of day (benchmarks run for minutes)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- signals -----------------------------------------------------------------------------------


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """Treat SIGTERM like Ctrl-C, so `finally` blocks stop the stack and drop the database."""
    signal.signal(signal.SIGTERM, _interrupt)


# --- workspace ---------------------------------------------------------------------------------


@dataclass
class Workspace:
    """A temp directory with its own case store and key; `env` is what Remedy's processes need."""

    root: Path
    store_url: str
    key: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def stack_home(self) -> Path:
        return self.root / "stack"


def clear_remedy_caches() -> None:
    """Forget settings, policy, templates and vault read from an earlier environment."""
    from models.settings import get_settings
    from tasks.context import _policy_at, _templates_at
    from tasks.store.vault import _vault_for

    get_settings.cache_clear()
    _policy_at.cache_clear()
    _templates_at.cache_clear()
    _vault_for.cache_clear()


@contextmanager
def workspace(label: str, *, keep: bool = False) -> Iterator[Workspace]:
    """Create a workspace, point this process at it, and remove it afterwards (unless keep)."""
    from alembic import command
    from cryptography.fernet import Fernet

    from migrations import alembic_config

    root = Path(tempfile.mkdtemp(prefix=f"remedy-bench-{label}-"))
    store_url = f"sqlite:///{root / 'remedy.db'}"
    key = Fernet.generate_key().decode()
    env = {
        "REMEDY_HOME": str(root / "var"),
        "REMEDY_DATABASE_URL": store_url,
        "REMEDY_ENCRYPTION_KEY": key,
        "PYTHONPATH": str(ROOT),
    }
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    clear_remedy_caches()
    try:
        command.upgrade(alembic_config(store_url), "head")
        load_sample_directory()
        yield Workspace(root, store_url, key, env)
    finally:
        from tasks.store.db import engine_for

        engine_for(store_url).dispose()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        clear_remedy_caches()
        if keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def load_sample_directory() -> None:
    """Load examples/stakeholders.yaml into the current case store."""
    from models.intake import DirectoryIn
    from tasks.context import utcnow
    from tasks.inputs import read_document, validate
    from tasks.store.directory import load_directory

    path = EXAMPLES / "stakeholders.yaml"
    directory = validate(DirectoryIn, read_document(path), source=str(path))
    load_directory(directory, now=utcnow(), actor="bench")


# --- the Prefect server's database -------------------------------------------------------------


@contextmanager
def server_database(backend: str, label: str) -> Iterator[str | None]:
    """Yield a fresh PostgreSQL database URL (asyncpg, with pg_trgm) and drop it at the end.

    backend "sqlite" yields None: the stack then keeps the server's data in SQLite in its home.
    """
    if backend == "sqlite":
        yield None
        return
    from demo.scaled import pg_database

    admin_url = os.environ.get("REMEDY_BENCH_POSTGRES_URL", DEFAULT_ADMIN_URL)
    with pg_database(admin_url, f"prefect_bench_{label}", trgm=True) as url:
        yield url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def database_size_mb(database_url: str | None) -> float | None:
    """Return a PostgreSQL database's size in MB (None for SQLite)."""
    if not database_url:
        return None
    import sqlalchemy as sa

    url = sa.engine.make_url(database_url).set(drivername="postgresql+psycopg")
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            size = conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar()
    finally:
        engine.dispose()
    return float(size or 0) / 1e6


# --- the local stack ---------------------------------------------------------------------------


@contextmanager
def local_stack(
    ws: Workspace,
    *,
    server_db: str | None,
    poll_seconds: int,
    extra_env: dict[str, str] | None = None,
) -> Iterator[LocalStack]:
    """Start a Prefect server on 127.0.0.1 (no runner yet); stop everything started, always."""
    from flows.local.stack import LocalStack, free_port

    stack = LocalStack(
        home=ws.stack_home,
        port=free_port(),
        server_database_url=server_db,
        poll_seconds=poll_seconds,
        extra_env={**ws.env, **(extra_env or {})},
    )
    try:
        stack.start_server()
        yield stack
    finally:
        stack.stop()


def start_process(
    stack: LocalStack, name: str, argv: list[str], ready: Callable[[], bool], timeout: float = 120
) -> None:
    """Start one more child of the stack (logged under its home) and wait until it is ready."""
    # LocalStack has no public hook for a runner other than flows.serve; see the bench report.
    stack._spawn(name, argv, stack.client_env())
    stack._wait(name, ready, timeout)


def deployments_registered(stack: LocalStack, count: int) -> Callable[[], bool]:
    """Return a check that the server holds at least `count` deployments."""
    import httpx

    def check() -> bool:
        try:
            with stack.http(timeout=2) as api:  # the server is locked: credential and CSRF
                resp = api.post("/deployments/count", json={})
            return resp.status_code == 200 and int(resp.json()) >= count
        except (httpx.HTTPError, ValueError):
            return False

    return check


@contextmanager
def talking_to(stack: LocalStack) -> Iterator[None]:
    """Point this process's Prefect client at the stack's server."""
    from prefect.settings import temporary_settings

    with temporary_settings(stack.prefect_settings()):
        yield


def settle_runner(stack: LocalStack, timeout: float = 60) -> bool:
    """Wait until the runner has no flow process left; tell whether it got there.

    A flow process spends ~1 s exiting after its run is final or suspended; stopping the runner
    then makes it cancel that run, which would leave noise in the logs.
    """
    proc = stack.processes.get("runner")
    if proc is None:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not descendants(proc.pid):
            return True
        time.sleep(0.5)
    return False


# --- processes and memory, read from /proc ----------------------------------------------------


def _parent_map() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # the command name is in parentheses and may hold spaces: split after the last ")"
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
    return parents


def descendants(pid: int) -> list[int]:
    """Return the ids of every process below pid (children, grandchildren, ...)."""
    parents = _parent_map()
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == current]
        found.extend(kids)
        frontier.extend(kids)
    return found


def rss_mb(pid: int) -> float:
    """Return a process's resident memory (VmRSS) in MB, 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tree_rss_mb(pid: int) -> float:
    """Return the resident memory of a process and all its descendants, in MB."""
    return rss_mb(pid) + sum(rss_mb(p) for p in descendants(pid))


def _own_cpu_ticks(pid: int) -> int:
    """Return a process's CPU ticks with its waited-for children's (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2 :].split()
    return sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime


def cpu_seconds(pid: int) -> float:
    """Return the user+system CPU time a process and its descendants used: the waited-for ones
    (cutime, cstime) and those still alive, such as a fork server and the flow runs it forked
    (flows/prefork.py), whose parent is not the process measured."""
    ticks = sum(_own_cpu_ticks(p) for p in [pid, *descendants(pid)])
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """Return the CPU time the whole machine has been busy (every process, every core), from
    /proc/stat: user, nice, system, irq, softirq and steal."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    busy = [int(fields[i]) for i in (0, 1, 2, 5, 6, 7) if i < len(fields)]
    return sum(busy) / os.sysconf("SC_CLK_TCK")


# --- logs --------------------------------------------------------------------------------------

PROBLEM = re.compile(
    r"Traceback|\bERROR\b|\bCRITICAL\b|Crashed|crashed|Failed\(|database is locked"
)


@dataclass
class LogProblems:
    """Lines in a log that look like trouble, with a few examples."""

    log: Path
    count: int
    examples: list[str]


def scan_log(path: Path, *, keep: int = 5) -> LogProblems:
    """Count lines of a log that name an error, a crash or a traceback."""
    count, examples = 0, list[str]()
    if path.exists():
        with path.open(errors="replace") as fh:
            for line in fh:
                if PROBLEM.search(line):
                    count += 1
                    if len(examples) < keep:
                        examples.append(line.rstrip()[:240])
    return LogProblems(path, count, examples)


def report_log_problems(stack: LocalStack, names: list[str]) -> list[LogProblems]:
    """Print what looks like trouble in the named logs of a stack; return it."""
    found = []
    for name in names:
        problems = scan_log(stack.log(name))
        found.append(problems)
        if problems.count:
            say(f"{name} log: {problems.count} line(s) naming errors, e.g.:")
            for line in problems.examples:
                print(f"    {line}")
    return found


# --- output ------------------------------------------------------------------------------------


def table(title: str, rows: list[tuple[str, Any]]) -> str:
    """Return a compact two-column table."""
    width = max(len(name) for name, _ in rows)
    lines = [title, "-" * max(len(title), width + 20)]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)


def grid(title: str, header: list[str], rows: list[list[Any]]) -> str:
    """Return a compact table with a header row."""
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [title, "-" * max(len(title), sum(widths) + 2 * (len(widths) - 1))]
    out.append(fmt.format(*cells[0]))
    out += [fmt.format(*r) for r in cells[1:]]
    return "\n".join(out)


def wait_until(
    check: Callable[[], Any], *, timeout: float, every: float = 0.5, what: str = "condition"
) -> Any:
    """Poll check() until it returns something truthy; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
