"""`remedy up`: the embedded default, kept running until Ctrl-C or SIGTERM.

Starts a Prefect server on 127.0.0.1 (unless PREFECT_API_URL names a live one) with its data under
REMEDY_HOME, one runner serving every deployment and the approval page; migrates the case store
first. The server is locked with the credential kept in REMEDY_HOME/prefect-api.auth (made on the
first start). What it started it supervises: a part that dies is started again with backoff.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from flows.local.credential import credential_path, ensure_credential
from flows.local.stack import LocalStack, StackError, api_healthy, port_open


def prepare_store() -> None:
    """Migrate the case store and make sure an encryption key exists."""
    from alembic import command

    from migrations import alembic_config
    from models.settings import get_settings
    from tasks.store.home import ensure_home
    from tasks.store.vault import init_key_file

    settings = get_settings()
    ensure_home(settings.home)  # owner-only, and tightened (with a warning) if it was not
    if settings.encryption_key is None:
        init_key_file(settings.resolved_key_file())
    command.upgrade(
        alembic_config(settings.resolved_database_url(), settings.database_schema), "head"
    )


def start_stack(
    home: Path, port: int, say: Callable[[str], None], *, approval_port: int | None = None
) -> LocalStack:
    """Start (or join) a server and start the runner; return the running stack."""
    from models.settings import get_settings

    home = home.resolve()
    env = {"REMEDY_HOME": str(home)}
    page_port = approval_port or get_settings().approval_port
    if port_open(page_port):
        raise StackError(f"127.0.0.1:{page_port} is in use; choose another with --approval-port")
    if "REMEDY_APPROVAL_BASE_URL" not in os.environ:
        # messages carry links to the page: the runner must know where it listens
        env["REMEDY_APPROVAL_BASE_URL"] = f"http://127.0.0.1:{page_port}"
    external = os.environ.get("PREFECT_API_URL")
    if external and api_healthy(external):
        stack = LocalStack(home=home, extra_env=env | {"PREFECT_API_URL": external})
        say(f"Using the Prefect server at {external}")
    else:
        if external:
            say(f"PREFECT_API_URL={external} does not answer; starting a local server instead")
        if port_open(port):
            raise StackError(f"127.0.0.1:{port} is in use; choose another with --port")
        stack = LocalStack(home=home, port=port, extra_env=env, auth_string=ensure_credential(home))
        say(f"Starting a Prefect server on 127.0.0.1:{port} (data in {home / 'prefect'}) ...")
        stack.start_server()
        say(
            f"Prefect UI: {stack.ui_url} (it asks for the API credential: the line in "
            f"{credential_path(home)})"
        )
        for name, value in stack.client_env().items():
            if name.startswith("PREFECT_"):
                os.environ[name] = value
    say("Starting the runner that serves the Remedy deployments ...")
    stack.start_runner()
    say("Starting the approval page ...")
    stack.approval_port = page_port
    page = stack.start_approval_page(port=page_port)
    say(f"Approval page: {page} (bound to 127.0.0.1)")
    return stack


@dataclass
class Restarts:
    """When a part of the stack died lately, and when it is due to start again."""

    deaths: list[float] = field(default_factory=list)
    due: float | None = None


@dataclass
class Supervisor:
    """Start again what dies, with backoff; give up only on repeated immediate failure.

    A part that dies is started again after 1 s, or 2, 4, 8 ... (at most `max_backoff`) when it
    died more than once within `window` seconds. `max_deaths` deaths of one part within `window`
    end the stack: something is broken that starting it again cannot fix. Each death and restart
    is said and written to logs/supervisor.log: the part's name, exit code and process id only.
    """

    stack: LocalStack
    say: Callable[[str], None]
    max_deaths: int = 5
    window: float = 60.0
    max_backoff: float = 30.0
    parts: dict[str, Restarts] = field(default_factory=dict)

    def note(self, message: str) -> None:
        """Say it, and keep it in the stack's supervisor log."""
        self.say(message)
        with self.stack.log("supervisor").open("a") as log:
            log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")

    def check(self, now: float) -> bool:
        """Notice dead parts and start again those that are due; False when the stack must end."""
        for name, proc in list(self.stack.processes.items()):
            part = self.parts.setdefault(name, Restarts())
            if part.due is None and proc.poll() is not None:
                if not self._schedule(name, part, proc.returncode, now):
                    return False
            elif part.due is not None and now >= part.due:
                part.due = None
                new = self.stack.restart(name)
                self.note(f"{name} started again (process {new.pid})")
        return True

    def _schedule(self, name: str, part: Restarts, code: int, now: float) -> bool:
        part.deaths = [t for t in part.deaths if now - t < self.window] + [now]
        if len(part.deaths) >= self.max_deaths:
            self.note(
                f"{name} {_ended(code)}, {len(part.deaths)} times within {self.window:.0f} s; "
                f"stopping (see {self.stack.log(name)})"
            )
            return False
        delay = min(self.max_backoff, 2.0 ** (len(part.deaths) - 1))
        part.due = now + delay
        self.note(f"{name} {_ended(code)}; starting it again in {delay:.0f} s")
        return True


def _ended(code: int) -> str:
    """Say how a process ended: its exit code, or the signal that ended it."""
    if code < 0:
        try:
            return f"was ended by {signal.Signals(-code).name}"
        except ValueError:
            return f"was ended by signal {-code}"
    return f"exited with {code}"


def run_until_interrupted(stack: LocalStack, say: Callable[[str], None]) -> int:
    """Keep the stack up until Ctrl-C or SIGTERM, starting again any part that dies; then stop."""
    stopping = False

    def _stop(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    supervisor = Supervisor(stack, say)
    code = 0
    try:
        while not stopping:
            if not supervisor.check(time.monotonic()):
                code = 1
                break
            time.sleep(0.5)
    finally:
        say("Stopping ...")
        stack.stop()
    return code
