"""Start each flow run by forking a process that has already imported Prefect and Remedy's steps.

A runner (`flows/serve.py`) or a process worker (`flows/worker.py`) starts every flow run, the
first start and every resume of a suspended run, as `python -m prefect.engine`: a fresh
interpreter that imports Prefect and the step's modules again, which is most of what a pickup
costs (docs/architecture.md, Pickups). Here one *fork server* per runner or worker imports them
once, and each flow run is a fork of it with nothing left to import. The fork server is a
single-threaded process its runner starts (Python's `forkserver` start method), so forking it is
safe; its children share the imported code with it until they write to it.

`fork_engine_command()` stands in for the `run_process` Prefect's engine-command starter
(`prefect.runner._starter_engine`, the one both the runner and the process worker use) starts the
command with: for the engine command it forks; anything else goes to Prefect's own. The forked
child is the engine command as a fresh process would be (the environment, working directory and
settings the starter gave it, `prefect.engine` run as `__main__`), and Prefect watches, cancels and
kills it by its process id as before.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import re
import sys
from collections.abc import Mapping, Sequence
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

# What every flow process imports before it loads its flow (`python -m prefect.engine` too).
PREFECT_ENGINE = ("prefect.engine", "prefect.flow_engine")
# What a flow run imports only once it runs (measured: the modules a forked run added to
# sys.modules, bench/README.md, Forked pickups), imported by the fork server too.
WARMED = (
    "anyio._backends._asyncio",
    "anyio.streams.tls",
    "encodings.idna",
    "jinja2",
    "jinja2.ext",
    "prefect._internal.states",
    "prefect.artifacts",
    "prefect.concurrency._asyncio",
    "prefect.concurrency._sync",
    "prefect.task_engine",
    "prefect.utilities.visualization",
    "psycopg",  # the dialect imports its driver on the first engine
    "sqlalchemy.dialects.postgresql.psycopg",
    "sqlalchemy.dialects.sqlite.pysqlite",
    "sqlite3",
    "stringprep",
    "tasks.reports.artifacts",
)
# Imported last: imports WARMED and apprise's plugins, configures the store's mappers, compiles
# the message templates, builds the stock of TLS contexts and freezes what it built out of the
# runs' garbage collections (flows/prefork_warm.py).
WARM = "flows.prefork_warm"


def fork_context(preload: Sequence[str]) -> BaseContext:
    """Return the fork-server start method; its server imports `preload` once, when it starts,
    then does what every flow run would otherwise repeat (WARM)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([*PREFECT_ENGINE, *preload, WARM])
    return context


ENGINE_COMMAND = ("-m", "prefect.engine")
# What `ps -o comm` and top call a forked flow run (its command line is the fork server's).
FLOW_PROCESS_NAME = "prefect-engine"


# What a forked flow run logs first (its runner's or worker's log), since its command line and
# environment as /proc shows them are the fork server's: which process executes which flow run.
FORKED = "flow run {run_id}: process {pid}, forked"


def forked_processes(log: str, run_id: str) -> list[int]:
    """Return the processes a log says were forked for a flow run, those still alive."""
    found = re.findall(FORKED.format(run_id=re.escape(run_id), pid=r"(\d+)"), log)
    return [pid for pid in map(int, found) if is_flow_process(pid)]


def is_flow_process(pid: int) -> bool:
    """Tell whether a process executes a flow run: forked here, or `python -m prefect.engine`."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:  # gone, or not Linux
        return False
    return comm == FLOW_PROCESS_NAME or b"prefect.engine" in argv


def run_engine(
    environment: dict[str, str], cwd: str | None, quiet: bool, module: str = "prefect.engine"
) -> None:
    """Be `python -m prefect.engine` (`module`) in a forked child: the environment, working
    directory and settings it was started with."""
    import os
    import runpy
    import warnings

    from prefect.context import SettingsContext, get_settings_context
    from prefect.settings import Settings

    with contextlib.suppress(OSError):  # Linux only
        Path("/proc/self/comm").write_text(FLOW_PROCESS_NAME)
    os.environ.clear()
    os.environ.update(environment)
    if cwd is not None:
        os.chdir(cwd)
    if quiet:  # a worker asked not to stream the run's output
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
    from prefect.logging import get_logger

    run_id = environment.get("PREFECT__FLOW_RUN_ID", "?")
    get_logger("prefork").info(FORKED.format(run_id=run_id, pid=os.getpid()))
    sys.argv = [module]  # no arguments; runpy makes the first the module's file, as `-m` does
    # the settings Prefect read when the fork server imported it are its starter's; the run's are
    # read again from the run's environment, as a fresh process would (prefect.engine is imported
    # already, by design: no warning for that)
    settings = SettingsContext(profile=get_settings_context().profile, settings=Settings())
    with settings, warnings.catch_warnings():
        warnings.filterwarnings("ignore", f"'{module}' found in sys.modules")
        runpy.run_module(module, run_name="__main__", alter_sys=True)


def engine_starter(context: BaseContext, fallback: Any) -> Any:
    """Return a `run_process` for `prefect.runner._starter_engine` that starts the engine command
    (`python -m prefect.engine`) as a fork of the fork server, and any other command as `fallback`
    (Prefect's own `run_process`) does."""

    async def run_process(
        command: list[str],
        task_status: Any = None,
        task_status_handler: Any = None,
        stream_output: bool | tuple[Any, Any] = False,
        env: Mapping[str, str | None] | None = None,
        cwd: Any = None,
        **kwargs: Any,
    ) -> Any:
        forkable = command[0] == sys.executable and tuple(command[1:]) == ENGINE_COMMAND
        if not forkable or kwargs or isinstance(stream_output, tuple):
            return await fallback(
                command,
                task_status=task_status,
                task_status_handler=task_status_handler,
                stream_output=stream_output,
                env=env,
                cwd=cwd,
                **kwargs,
            )
        import anyio.to_thread

        environment = {k: v for k, v in (env or {}).items() if v is not None}
        process = context.Process(  # type: ignore[attr-defined]
            target=run_engine,
            args=(environment, str(cwd) if cwd is not None else None, not stream_output),
            name="prefect-engine",
        )
        await anyio.to_thread.run_sync(process.start)  # a fork: milliseconds, off the event loop
        if task_status is not None:
            task_status.started(task_status_handler(process) if task_status_handler else process)
        await anyio.to_thread.run_sync(process.join)
        return process

    return run_process


def fork_engine_command(modules: Sequence[str]) -> None:
    """Start this process's flow runs as forks of a server that imported Prefect and `modules`,
    and start that server now (its imports take seconds: not the first pickup's to pay).

    Raises RuntimeError if Prefect no longer starts them through the module's `run_process` (the
    runner or worker would otherwise quietly go back to a fresh interpreter per pickup).
    """
    import multiprocessing.forkserver

    from prefect.runner import _starter_engine

    fallback = getattr(_starter_engine, "run_process", None)
    if fallback is None:
        raise RuntimeError("prefect.runner._starter_engine has no run_process to stand in for")
    _starter_engine.run_process = engine_starter(fork_context(modules), fallback)
    multiprocessing.forkserver.ensure_running()
