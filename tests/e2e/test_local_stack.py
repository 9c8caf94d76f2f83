"""`remedy up` as an operator runs it: the embedded default on SQLite, supervised.

Its own stack (the session's server runs on PostgreSQL in CI): `remedy up` in a subprocess with a
REMEDY_HOME of its own, a Prefect server on SQLite, the runner and the approval page. Five cases
go through step 1 at once without a single 5xx from the server; then the runner is SIGKILLed and
must be started again while the server and the page stay up; SIGTERM stops everything.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from demo.catchers import ChatReceiver, MailCatcher
from demo.workload import in_context
from flows.local.credential import CLIENT_VARIABLE, ensure_credential
from flows.local.stack import LocalStack, free_port
from models.enums import CaseState
from tests.conftest import ROOT
from tests.e2e.helpers import open_case, wait_for

pytestmark = [pytest.mark.prefect, pytest.mark.slow]
# a request the server answered with 503 (it logs them: LocalStack) or 500, and SQLite's lock
TROUBLE = re.compile(r"Encountered (retryable )?exception in request|database is locked")


@dataclass
class Up:
    """A running `remedy up` and what the test needs to reach it."""

    proc: subprocess.Popen[bytes]
    stack: LocalStack  # addresses, credential and log paths only: `remedy up` owns the processes
    env: dict[str, str]
    page_port: int
    out: Path

    def pid(self, part: str) -> int:
        """Return the id of the part `remedy up` runs now (0 if none), read from /proc."""
        found = [pid for pid in _children(self.proc.pid) if PARTS[part] in _cmdline(pid)]
        return found[0] if found else 0


PARTS = {"runner": "-m flows.serve", "approval-page": "-m flows.web.app"}
PARTS["prefect-server"] = "server start"  # Prefect's, as flows/local/sqlite_server.py runs it


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    """Return the live child processes of pid (zombies left out)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory, session_key: str) -> Iterator[Up]:
    """Start `remedy up` on free ports with its own home; stop it (SIGTERM) at the end."""
    root = tmp_path_factory.mktemp("up")
    home = root / "var"
    mail = MailCatcher(port=free_port(), folder=root / "mail").start()
    chat = ChatReceiver(port=free_port(), log=root / "chat.jsonl").start()
    env = {
        "REMEDY_HOME": str(home),
        "REMEDY_DATABASE_URL": f"sqlite:///{home / 'remedy.db'}",
        "REMEDY_ENCRYPTION_KEY": session_key,
        "REMEDY_SMTP_URL": mail.url(),
        "REMEDY_CHAT_OPS": f"json://127.0.0.1:{chat.port}/hooks/ops",
        "REMEDY_MONITOR_CRON": "0 0 1 1 *",  # no sweep fires by itself during the test
        "PYTHONPATH": str(ROOT),
    }
    port, page_port = free_port(), free_port()
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    child_env.pop(CLIENT_VARIABLE, None)
    child_env.update(env)
    out = root / "up.out"
    argv = [sys.executable, "-m", "flows.cli", "up", "--port", str(port)]
    with out.open("wb") as fh:
        proc = subprocess.Popen(
            [*argv, "--approval-port", str(page_port)],
            cwd=ROOT,
            env=child_env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    stack = LocalStack(home=home.resolve(), port=port)
    try:

        def ready() -> bool:
            assert proc.poll() is None, out.read_text()
            return "Remedy is up" in out.read_text()

        wait_for(ready, timeout=240, what="remedy up")
        stack.auth_string = ensure_credential(home)  # made by `remedy up` on its first start
        yield Up(proc, stack, env, page_port, out)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=90)
        mail.stop()
        chat.stop()


@pytest.fixture
def on_up(up: Up, monkeypatch: pytest.MonkeyPatch, examples: Path) -> Iterator[Up]:
    """Point this test's process at the `remedy up` stack's server and case store."""
    from prefect.settings import temporary_settings

    from tests.conftest import _clear_caches
    from tests.integration.test_intake import run_cli

    for name, value in up.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PREFECT_API_URL", up.stack.api_url)
    assert up.stack.auth_string
    monkeypatch.setenv(CLIENT_VARIABLE, up.stack.auth_string)
    _clear_caches()
    with temporary_settings(up.stack.prefect_settings()):
        assert run_cli("directory", "load", str(examples / "stakeholders.yaml")) == 0
        yield up


def test_five_cases_through_step_1_at_once_without_a_5xx(
    on_up: Up, examples: Path, tmp_path: Path
) -> None:
    from demo.scripted import ScriptedStakeholders
    from tasks.orchestration.runs import ENTRY_FLOW, start_flow

    refs = [open_case(examples, tmp_path, start=False) for _ in range(5)]

    def move(ref: str) -> None:
        start_flow(ENTRY_FLOW, ref, idempotency_key=f"{ref}-up", step=None)
        ScriptedStakeholders().drive(ref, until=CaseState.DETERMINING_RESPONSE, timeout=400)

    t0 = time.monotonic()
    with ThreadPoolExecutor(5) as pool:
        list(pool.map(in_context(move), refs))
    print(f"\nfive cases through step 1 at once on SQLite: {time.monotonic() - t0:.1f} s")
    log = on_up.stack.log("prefect-server").read_text(errors="replace")
    trouble = [line for line in log.splitlines() if TROUBLE.search(line)]
    assert trouble == [], "\n".join(trouble[:20])


def test_a_killed_runner_is_started_again_and_sigterm_stops_everything(up: Up) -> None:
    runner, server, page = up.pid("runner"), up.pid("prefect-server"), up.pid("approval-page")
    assert runner and server and page
    killed_at = datetime.now(UTC)
    os.kill(runner, signal.SIGKILL)
    new = wait_for(lambda: up.pid("runner") not in (0, runner) and up.pid("runner"), 60, "runner")

    def new_runner_polls() -> bool:
        with up.stack.http(timeout=5) as api:
            rows = api.post("/deployments/filter", json={}).json()
        polled = [r["last_polled"] for r in rows]
        return bool(rows) and all(p and datetime.fromisoformat(p) > killed_at for p in polled)

    wait_for(new_runner_polls, timeout=120, what="the new runner to serve every deployment")
    assert up.proc.poll() is None
    assert (up.pid("prefect-server"), up.pid("approval-page")) == (server, page)
    assert _alive(server) and _alive(page)
    page_answer = httpx.get(f"http://127.0.0.1:{up.page_port}/healthz", timeout=5)
    assert page_answer.status_code == 200
    said = (up.stack.home / "logs" / "supervisor.log").read_text()
    assert "runner was ended by SIGKILL; starting it again in 1 s" in said
    assert f"runner started again (process {new})" in said

    up.proc.send_signal(signal.SIGTERM)
    assert up.proc.wait(timeout=90) == 0
    assert not any(_alive(pid) for pid in (new, server, page))


def test_a_part_failing_at_once_again_and_again_ends_the_stack(tmp_path: Path) -> None:
    """Started again after 1, 2, 4, 8 s; the fifth death within a minute ends the stack."""
    from flows.local.up import Supervisor

    stack = LocalStack(home=tmp_path)
    stack._spawn("runner", [sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ))
    said: list[str] = []
    supervisor, now = Supervisor(stack, said.append), 0.0
    try:
        while supervisor.check(now):
            stack.processes["runner"].wait(timeout=30)
            now += 0.5
            assert now < 60
    finally:
        stack.stop()
    assert [s for s in said if "exited" in s] == [
        *(f"runner exited with 3; starting it again in {d} s" for d in (1, 2, 4, 8)),
        f"runner exited with 3, 5 times within 60 s; stopping (see {stack.log('runner')})",
    ]
    assert len([s for s in said if s.startswith("runner started again (process ")]) == 4
    assert len((tmp_path / "logs" / "supervisor.log").read_text().splitlines()) == 9
