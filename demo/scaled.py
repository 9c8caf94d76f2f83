"""A scaled installation on one machine, set up as README.md (Running it, scaled) tells.

The Prefect server on PostgreSQL and locked with a credential; the case store on PostgreSQL; the
deployments of prefect.yaml on the process work pool (`prefect work-pool create`, `prefect deploy
--all`); process workers (`python -m flows.worker`), each on a host of its own (demo/hosts.py),
sending flow-run heartbeats every 30 s (what tells the sweep that a host died), reaching the server,
PostgreSQL and the mail and chat receivers by its link's address, never 127.0.0.1. The workers
run the code of this checkout (their working directory, as prefect.yaml's pull step expects) and
get every setting from their environment.

Used by the multi-host test (tests/e2e/test_workers.py) and the workers benchmark
(bench/bench_workers.py). Everything it makes (databases, namespaces, processes) goes at the end.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

from demo.catchers import ChatReceiver, MailCatcher
from demo.cpushare import CpuShare
from demo.hosts import Forwarder, Host, Hosts
from flows.local.credential import ensure_credential
from flows.local.stack import LocalStack, free_port

ROOT = Path(__file__).resolve().parent.parent
# the sweep (run by a worker, with the same setting) counts a run silent for 3 of them as crashed
HEARTBEAT_SECONDS = 30
SENDER = "remedy@example.org"


class ScaledError(RuntimeError):
    """A part of the scaled installation did not come up."""


@contextlib.contextmanager
def pg_database(admin_url: str, prefix: str, *, trgm: bool = False) -> Iterator[sa.URL]:
    """Create a PostgreSQL database of our own (psycopg URL) and drop it at the end."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(admin_url).set(database=name)
    try:
        if trgm:  # the Prefect server wants it
            own = sa.create_engine(url, isolation_level="AUTOCOMMIT")
            with own.connect() as conn:
                conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            own.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        admin.dispose()


def _render(url: sa.URL) -> str:
    return url.render_as_string(hide_password=False)


def prefect_cli(stack: LocalStack, home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run a `prefect` command in the checkout against the stack's server, as an operator would."""
    env = stack.client_env() | {"PREFECT_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
        check=False,
    )


def register(stack: LocalStack, home: Path) -> None:
    """Create the process work pool and deploy prefect.yaml's deployments on it."""
    for argv in (
        ("work-pool", "create", "remedy-process", "--type", "process"),
        ("deploy", "--all"),
    ):
        done = prefect_cli(stack, home, *argv)
        if done.returncode != 0:
            raise ScaledError(f"prefect {' '.join(argv)}: {done.stdout}{done.stderr}"[-4000:])


@dataclass
class Scaled:
    """The running installation and how each part is reached."""

    root: Path
    stack: LocalStack
    hosts: Hosts
    forwarder: Forwarder
    store: sa.URL  # the case store, as this machine reaches it (127.0.0.1)
    mail: MailCatcher
    chat: ChatReceiver
    env: dict[str, str]  # Remedy's settings for processes on this machine
    poll_seconds: int = 2
    workers: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    shares: dict[int, CpuShare] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)

    def host_env(self, host: Host) -> dict[str, str]:
        """Return a worker's environment on `host`: every address is the link's, none loopback."""
        home = self.root / "hosts" / str(host.number)
        via = host.gateway
        env = self.stack.client_env()  # the credential, CSRF support, quiet telemetry
        env.update(
            {
                "PREFECT_API_URL": f"http://{via}:{self.stack.port}/api",
                "PREFECT_UI_URL": f"http://{via}:{self.stack.port}",
                "PREFECT_HOME": str(home / "prefect"),
                "PREFECT_WORKER_QUERY_SECONDS": str(self.poll_seconds),
                "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),
                "REMEDY_HOME": str(home / "var"),
                "REMEDY_DATABASE_URL": _render(self.store.set(host=via)),
                "REMEDY_SMTP_URL": f"mailto://{via}:{self.mail.port}?from={SENDER}&mode=insecure",
                "REMEDY_CHAT_OPS": f"json://{via}:{self.chat.port}/hooks/ops",
                "PYTHONPATH": str(ROOT),
            }
        )
        for name in [n for n in env if n.startswith("REMEDY_TEST_")]:
            del env[name]  # the test's own settings are no worker's business
        return env

    def start_worker(
        self,
        host: Host,
        *,
        limit: int,
        cpu: int | None = None,
        cores: float | None = None,
        timeout: float = 120.0,
    ) -> None:
        """Start a process worker (`python -m flows.worker`, Prefect's `prefect worker start` with
        its flow runs forked: flows/prefork.py) on a host, pinned to one CPU if asked, capped at
        `cores` CPUs if asked (demo/cpushare.py); wait till it is online."""
        name = f"host-{host.number}"
        env = self.host_env(host)
        Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
        argv = host.argv(sys.executable, "-m", "flows.worker")
        argv += ["--pool", "remedy-process", "--name", name, "--limit", str(limit)]
        log = self.log(name).open("ab")
        self._logs.append(log)

        share = None
        if cores is not None:
            share = self.shares[host.number] = CpuShare(host.number, cores).open()

        def pin() -> None:  # runs in the child: the worker and its flow processes inherit it
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})
            if share is not None:
                share.join()

        self.workers[host.number] = subprocess.Popen(
            argv,
            cwd=ROOT,  # the checkout: prefect.yaml's pull step sets the working directory to "."
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=pin,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.workers[host.number].poll() is not None:
                raise ScaledError(f"worker {name} exited; see {self.log(name)}")
            if name in self.online_workers():
                return
            time.sleep(0.5)
        raise ScaledError(f"worker {name} was not online after {timeout:.0f} s")

    def online_workers(self) -> set[str]:
        """Return the names of the pool's workers the server counts as online."""
        with self.stack.http(timeout=5) as api:
            resp = api.post("/work_pools/remedy-process/workers/filter", json={})
        if resp.status_code != 200:
            return set()
        return {w["name"] for w in resp.json() if w.get("status") == "ONLINE"}

    def operator_settings(self) -> dict[Any, Any]:
        """Prefect settings for a process on this machine: the stack's, and the workers' heartbeat
        frequency, so that its doctor counts silence as the sweep on the workers does."""
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY

        heartbeat = {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: HEARTBEAT_SECONDS}
        return self.stack.prefect_settings() | heartbeat

    def kill_host(self, host: Host) -> int:
        """SIGKILL everything on a host (worker and flow processes); return how many died."""
        killed = host.kill()
        proc = self.workers.pop(host.number, None)
        if proc is not None:
            proc.wait(timeout=10)
        return killed

    def log(self, name: str) -> Path:
        """Return where a part of the installation writes its log."""
        return self.root / "logs" / f"{name}.log"

    def close(self) -> None:
        """Stop every worker (their hosts go later) and close their logs."""
        for number in list(self.workers):
            self.kill_host(self.hosts[number])
        for share in self.shares.values():
            share.close()
        self.shares.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()


@contextlib.contextmanager
def scaled_installation(
    root: Path, *, hosts: int, key: str, admin_url: str, poll_seconds: int = 2
) -> Iterator[Scaled]:
    """Set up a scaled installation with `hosts` empty hosts; take everything down at the end.

    `admin_url` names a PostgreSQL server on 127.0.0.1 (psycopg) that may create databases; the
    Prefect server and the case store each get a fresh one. No worker is started yet.
    """
    from alembic import command

    from migrations import alembic_config

    (root / "logs").mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as undo:
        server_db = undo.enter_context(pg_database(admin_url, "prefect_hosts", trgm=True))
        store = undo.enter_context(pg_database(admin_url, "remedy_hosts"))
        command.upgrade(alembic_config(_render(store)), "head")
        mail = MailCatcher(port=free_port(), folder=root / "mail").start()
        undo.callback(mail.stop)
        chat = ChatReceiver(port=free_port(), log=root / "chat.jsonl").start()
        undo.callback(chat.stop)
        env = {
            "REMEDY_HOME": str(root / "var"),
            "REMEDY_DATABASE_URL": _render(store),
            "REMEDY_ENCRYPTION_KEY": key,
            "REMEDY_SMTP_URL": mail.url(SENDER),
            "REMEDY_CHAT_OPS": f"json://127.0.0.1:{chat.port}/hooks/ops",
            "PYTHONPATH": str(ROOT),
        }
        stack = LocalStack(
            home=root / "server",
            port=free_port(),
            server_database_url=_render(server_db.set(drivername="postgresql+asyncpg")),
            poll_seconds=poll_seconds,
            extra_env=env,
            auth_string=ensure_credential(Path(env["REMEDY_HOME"])),
        )
        undo.callback(stack.stop)
        stack.start_server()
        made = undo.enter_context(Hosts(hosts))
        ports = [stack.port, store.port or 5432, mail.port, chat.port]
        forwarder = Forwarder([h.gateway for h in made], ports, root / "logs" / "forwarder.log")
        undo.callback(forwarder.stop)
        forwarder.start()
        register(stack, root / "operator")
        scaled = Scaled(root, stack, made, forwarder, store, mail, chat, env, poll_seconds)
        undo.callback(scaled.close)
        yield scaled
