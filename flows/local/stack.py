"""A local Remedy stack: a Prefect server on 127.0.0.1 and a runner serving the deployments.

Used by `remedy up` (kept running), `make demo` (stopped at the end) and the end-to-end tests (one
per test session). Each part is a child process with its own log file under `home/logs`.

The server is locked: it answers only requests carrying the stack's credential (made once under
`home`, see flows/local/credential.py), grants CORS to the UI's own origin only, and wants
Prefect's CSRF token on every state-changing request. Every child gets the credential in its
environment, never on a command line.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from flows.local.credential import CLIENT_VARIABLE, ensure_credential
from tasks.store.home import (
    PRIVATE_UMASK,
    ensure_private_dir,
    open_private_append,
    tighten_file,
)

QUIET_PREFECT = {
    # there is no outside network here, and telemetry on a SQLite server caused lock errors
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
}


class StackError(RuntimeError):
    """A part of the local stack did not start."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    """Tell whether something listens on 127.0.0.1:port."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def api_healthy(api_url: str, timeout: float = 2.0) -> bool:
    """Tell whether a Prefect API answers its health check."""
    try:
        return httpx.get(f"{api_url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


class _ApiAuth(httpx.Auth):
    """Basic auth with the credential, and Prefect's CSRF token fetched before the first write."""

    requires_response_body = True

    def __init__(self, credential: str | None, api_url: str) -> None:
        basic = base64.b64encode(credential.encode()).decode() if credential else ""
        self._basic = f"Basic {basic}" if basic else ""
        self._api_url = api_url
        self._csrf: dict[str, str] | None = None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._basic:
            request.headers["Authorization"] = self._basic
        if request.method in ("POST", "PUT", "PATCH", "DELETE"):
            if self._csrf is None:
                client = str(uuid.uuid4())
                answer = yield httpx.Request(
                    "GET",
                    f"{self._api_url}/csrf-token",
                    params={"client": client},
                    headers={"Authorization": self._basic} if self._basic else {},
                )
                if answer.status_code == 200:
                    token = answer.json()["token"]
                    self._csrf = {"Prefect-Csrf-Token": token, "Prefect-Csrf-Client": client}
                elif answer.status_code == 422:  # this server has CSRF protection off
                    self._csrf = {}
            request.headers.update(self._csrf or {})
        yield request


def _page_healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _deployments_registered(api: httpx.Client) -> bool:
    from tasks.orchestration.deployments import DEPLOYMENTS

    try:
        resp = api.post("/deployments/count", json={})
        return resp.status_code == 200 and int(resp.json()) >= len(DEPLOYMENTS)
    except (httpx.HTTPError, ValueError):
        return False


@dataclass
class LocalStack:
    """The processes of a local stack and how to reach them."""

    home: Path
    port: int = 4200
    server_database_url: str | None = None  # postgresql+asyncpg://… ; default: SQLite in home
    poll_seconds: int = 2
    approval_port: int = 8686
    extra_env: dict[str, str] = field(default_factory=dict)
    # a SQLite server's writers queue for the lock instead of failing (False: Prefect's own way)
    sqlite_in_turn: bool = True
    # the API credential; default: the one under `home`, made on first start
    auth_string: str | None = field(default=None, repr=False)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: dict[str, IO[bytes]] = field(default_factory=dict)
    # how each part was started, so a dead one can be started again the same way
    _commands: dict[str, tuple[list[str], dict[str, str]]] = field(default_factory=dict)
    # process groups of parts that died and were replaced: flow runs they started may live on
    _retired: list[int] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client_env(self) -> dict[str, str]:
        """Return the environment for any process that talks to this stack's server."""
        env = dict(os.environ)
        env.update(QUIET_PREFECT)
        env.update(
            {
                "PREFECT_API_URL": self.api_url,
                "PREFECT_UI_URL": self.ui_url,
                "PREFECT_RUNNER_POLL_FREQUENCY": str(self.poll_seconds),
                "PREFECT_LOGGING_LEVEL": env.get("PREFECT_LOGGING_LEVEL", "INFO"),
                "PREFECT_CLIENT_CSRF_SUPPORT_ENABLED": "true",  # the server wants the token
            }
        )
        env.update(self.extra_env)
        if self.auth_string:
            env[CLIENT_VARIABLE] = self.auth_string
        return env

    def prefect_settings(self) -> dict[Any, Any]:
        """Return the Prefect settings that point this process's clients at the stack."""
        from prefect.settings import (
            PREFECT_API_AUTH_STRING,
            PREFECT_API_URL,
            PREFECT_CLIENT_CSRF_SUPPORT_ENABLED,
            PREFECT_UI_URL,
        )

        settings: dict[Any, Any] = {
            PREFECT_API_URL: self.api_url,
            PREFECT_UI_URL: self.ui_url,
            PREFECT_CLIENT_CSRF_SUPPORT_ENABLED: True,
        }
        if self.auth_string:
            settings[PREFECT_API_AUTH_STRING] = self.auth_string
        return settings

    def http(self, timeout: float = 30.0) -> httpx.Client:
        """Return an HTTP client for the stack's API carrying the credential and a CSRF token.

        For the few raw API calls Prefect's client has no method for (tests, checks); close it
        after use (it is a context manager).
        """
        auth = _ApiAuth(self.auth_string or os.environ.get(CLIENT_VARIABLE), self.api_url)
        return httpx.Client(base_url=self.api_url, auth=auth, timeout=timeout)

    def ui_origins(self) -> str:
        """Return the origins the UI is served from, the only ones granted CORS."""
        return f"http://127.0.0.1:{self.port},http://localhost:{self.port}"

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        ensure_private_dir(self.home)
        logs = ensure_private_dir(self.home / "logs")
        if name in self._logs:  # a part started again: its old log handle is done
            self._logs.pop(name).close()
        log = self._logs[name] = os.fdopen(open_private_append(logs / f"{name}.log"), "ab")
        # umask 077: whatever a part makes under the home (Prefect's database and its -wal and
        # -shm files, results) is its owner's only (tasks/store/home.py)
        self.processes[name] = proc = subprocess.Popen(
            argv,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            umask=PRIVATE_UMASK,
        )
        self._commands[name] = (argv, env)
        pid = os.open(self.pid_file(name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(pid, "w") as fh:
            fh.write(f"{proc.pid}\n")

    def pid_file(self, name: str) -> Path:
        """Return where a part's process id is kept while it runs (for operators and tests)."""
        return self.home / "logs" / f"{name}.pid"

    def restart(self, name: str) -> subprocess.Popen[bytes]:
        """Start a part that exited again, as it was started; return the new process.

        Flow runs the dead part started may still be at work in its process group: they are
        left to finish and stopped with the stack.
        """
        old = self.processes.pop(name)
        if old.poll() is None:
            raise StackError(f"{name} is still running")
        self._retired.append(old.pid)
        argv, env = self._commands[name]
        self._spawn(name, argv, env)
        return self.processes[name]

    def start_server(self, timeout: float = 120.0) -> str:
        """Start a Prefect server on 127.0.0.1 and wait until its API answers."""
        if port_open(self.port):
            raise StackError(f"127.0.0.1:{self.port} is taken; choose another port")
        if self.auth_string is None:
            self.auth_string = ensure_credential(self.home)
        env = self.client_env()
        env.update(
            {
                "PREFECT_SERVER_API_AUTH_STRING": self.auth_string,
                "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS": self.ui_origins(),
                "PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED": "true",
                # a 503 (e.g. SQLite's "database is locked") is logged, not only retried
                "PREFECT_SERVER_LOG_RETRYABLE_ERRORS": "true",
            }
        )
        prefect_home = self.prepare_prefect_home()
        env["PREFECT_HOME"] = str(prefect_home)
        env.pop("PREFECT_API_URL", None)
        env["PREFECT_UI_API_URL"] = self.api_url  # the UI in the browser calls this port
        if self.server_database_url:
            env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = self.server_database_url
        else:
            env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = (
                f"sqlite+aiosqlite:///{prefect_home / 'prefect.db'}"
            )
        # on SQLite, Prefect's server with every transaction taking the write lock first: no
        # "database is locked" (503) under a few cases at once (flows/local/sqlite_server.py)
        sqlite_in_turn = self.sqlite_in_turn and not self.server_database_url
        server = "flows.local.sqlite_server" if sqlite_in_turn else "prefect"
        argv = [sys.executable, "-m", server, "server", "start"]
        argv += ["--host", "127.0.0.1", "--port", str(self.port), "--analytics-off"]
        self._spawn("prefect-server", argv, env)
        self._wait("prefect-server", lambda: api_healthy(self.api_url), timeout)
        return self.api_url

    def prepare_prefect_home(self) -> Path:
        """Make the Prefect server's folder under the home, owner-only, its database too."""
        prefect_home = ensure_private_dir(self.home / "prefect")
        for name in ("prefect.db", "prefect.db-wal", "prefect.db-shm"):
            tighten_file(prefect_home / name)
        return prefect_home

    def start_runner(self, timeout: float = 120.0) -> None:
        """Start the runner serving every deployment, and wait until they are registered."""
        self._spawn("runner", [sys.executable, "-m", "flows.serve"], self.client_env())
        with self.http(timeout=2) as api:
            self._wait("runner", lambda: _deployments_registered(api), timeout)

    def start_approval_page(self, timeout: float = 60.0, *, port: int | None = None) -> str:
        """Start the approval page on 127.0.0.1 and wait until it answers; return its address.

        The address is http://localhost:PORT, not the IP it listens on: a passkey is bound to a
        host name. Whether it answers is asked of 127.0.0.1 itself, wherever localhost resolves.
        """
        port = port or self.approval_port
        if port_open(port):
            raise StackError(f"127.0.0.1:{port} is taken; choose another port")
        base = f"http://localhost:{port}"
        env = self.client_env()
        env["REMEDY_APPROVAL_PORT"] = str(port)
        # links and the page's origin check name this address unless the operator set another
        env.setdefault("REMEDY_APPROVAL_BASE_URL", base)
        self._spawn("approval-page", [sys.executable, "-m", "flows.web.app"], env)
        self._wait("approval-page", lambda: _page_healthy(f"http://127.0.0.1:{port}"), timeout)
        return base

    def _wait(self, name: str, ready: object, timeout: float) -> None:
        assert callable(ready)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.processes[name]
            if proc.poll() is not None:
                raise StackError(f"{name} exited with {proc.returncode}; see {self.log(name)}")
            if ready():
                return
            time.sleep(0.3)
        raise StackError(f"{name} was not ready after {timeout:.0f} s; see {self.log(name)}")

    def log(self, name: str) -> Path:
        return self.home / "logs" / f"{name}.log"

    def stop(self, name: str | None = None, *, sig: int = signal.SIGTERM) -> None:
        """Stop one part (or all, runner first) and wait for it to exit."""
        names = [name] if name else sorted(self.processes, key=lambda n: n != "runner")
        for n in names:
            proc = self.processes.pop(n, None)
            self.pid_file(n).unlink(missing_ok=True)
            if proc is None or proc.poll() is not None:
                continue
            os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if name is None:
            for group in self._retired:
                _signal_group(group, sig)
            self._retired.clear()
            for log in self._logs.values():
                log.close()
            self._logs.clear()


def _signal_group(group: int, sig: int) -> None:
    """Signal what is left of a process group; nothing is left is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, sig)
