"""Flow runs forked from a process that imported Prefect and the steps (flows/prefork.py): the
engine command becomes a fork that sees exactly the environment, directory and settings a fresh
`python -m prefect.engine` would; every other command is left to Prefect's own `run_process`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from flows.prefork import (
    ENGINE_COMMAND,
    engine_starter,
    fork_context,
    is_flow_process,
    run_engine,
)

ENGINE = [sys.executable, *ENGINE_COMMAND]


@pytest.fixture(scope="module")
def context() -> Any:
    return fork_context(["models.tables", "tests.unit.prefork_probe"])


class Started:
    """Stands for anyio's task status: keeps what the starter hands over."""

    def __init__(self) -> None:
        self.value: Any = None

    def started(self, value: Any) -> None:
        self.value = value


def test_the_engine_command_is_a_fork_of_the_fork_server(context: Any) -> None:
    others: list[list[str]] = []

    async def prefect_s_own(command: list[str], **_: Any) -> None:
        others.append(command)

    run_process = engine_starter(context, prefect_s_own)
    status = Started()
    env = {"PREFECT__FLOW_RUN_ID": "not-a-run", "PREFECT_API_URL": "http://127.0.0.1:9/api"}

    async def main() -> Any:
        await run_process(["echo", "hi"], stream_output=False)
        await run_process([*ENGINE, "extra"], stream_output=False)
        return await run_process(
            ENGINE, task_status=status, task_status_handler=lambda p: ("handle", p), env=env
        )

    process = anyio.run(main)
    # other commands, and the engine command with more arguments, are Prefect's to start
    assert others == [["echo", "hi"], [*ENGINE, "extra"]]
    assert status.value == ("handle", process)  # what Prefect watches and kills, by its pid
    assert process.exitcode == 1  # prefect.engine's own answer to a flow run id that is none
    with pytest.raises(ChildProcessError):  # the fork server's child, not ours
        os.waitpid(process.pid, os.WNOHANG)


def test_the_fork_runs_in_the_environment_and_directory_it_was_given(
    context: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "seen.json"
    monkeypatch.setenv("REMEDY_PREFORK_PARENT_ONLY", "1")  # the fork server's, not the run's
    env = {"PROBE_OUT": str(out), "PREFECT_API_URL": "http://10.231.0.1:4200/api", "A": "b"}
    # where the system's certificates are, as a worker passes its own on to its runs: the TLS
    # contexts the fork server made with them serve the run (flows/tls_pool.py)
    env |= {k: v for k, v in os.environ.items() if k in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    process = context.Process(
        target=run_engine, args=(env, str(tmp_path), True, "tests.unit.prefork_probe")
    )
    process.start()
    process.join(60)
    assert process.exitcode == 3
    seen = json.loads(out.read_text())
    assert seen["environ"] == env
    assert seen["cwd"] == str(tmp_path)
    # Prefect's settings are read again from the run's environment, as at a fresh start
    assert seen["api_url"] == "http://10.231.0.1:4200/api"
    assert [Path(arg).name for arg in seen["argv"]] == ["prefork_probe.py"]  # as `python -m`
    # named as a flow run (its command line is the fork server's), which a host's count needs
    assert seen["is_flow_process"] is True
    # what every flow run would otherwise do again was done once, before the fork
    assert seen["not_warm"] == []
    assert seen["imported_after_the_fork"] == []
    assert seen["unfrozen_at_start"] < 10_000, seen["unfrozen_at_start"]  # 33,638 before
    assert seen["templates_compiled"] == seen["templates"] > 10
    assert seen["mappers_configured"] is True
    assert seen["apprise_plugins"] > 50
    assert seen["tls_from_stock"] == 1
    assert not is_flow_process(os.getpid())


def test_a_log_line_tells_which_live_flow_process_runs_a_run() -> None:
    from flows.prefork import FORKED, forked_processes

    run_id = "6f1c1d52-0f0e-4c3b-9a55-0d6c5f3f6b1e"
    log = FORKED.format(run_id=run_id, pid=os.getpid()) + "\n"
    # named in the log, but this process executes no flow run (nor does a gone one)
    assert forked_processes(log, run_id) == []
    assert forked_processes(log.replace(str(os.getpid()), "999999999"), run_id) == []
