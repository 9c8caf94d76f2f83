"""`python -m flows.worker --pool remedy-process [prefect worker start's options]`: a process worker
whose flow runs are forks of one process that has imported Prefect and Remedy's steps.

It is `prefect worker start`, with one difference: Prefect's process worker starts every flow run
(every pickup, every resume) as a fresh interpreter that imports Prefect and the step again (two,
with no command configured: a workspace supervisor, then `python -m prefect.engine`); this worker
starts the engine command directly and forks it from a fork server that imported all of it once
(flows/prefork.py). Restart the worker after changing the code on its host, as with the runner.
REMEDY_FORK_PICKUPS=false starts them as Prefect does.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

from flows.prefork import fork_engine_command
from models.settings import get_settings
from tasks.orchestration.deployments import entrypoint_modules
from tasks.orchestration.step_tasks import RUN_BY_TASKS

# What a deployment's flow process runs besides its entrypoint: prefect.yaml's pull step.
PULL_STEPS = ("prefect.deployments.steps", "flows.workdir")


def engine_command_by_default() -> None:
    """Have the process worker start `python -m prefect.engine` (this interpreter) when neither
    the work pool nor the deployment names a command, as it does when one is named.

    Without a command Prefect's process worker starts a workspace supervisor
    (`python -m prefect.runner._workspace_supervisor`, a second fresh interpreter per pickup) to
    prepare a uv project's dependencies, which Remedy's deployments do not use; prefect.yaml's
    pull step then runs in the engine, as with a named command.
    """
    from prefect.utilities.processutils import command_to_string
    from prefect.workers.process import ProcessJobConfiguration

    prepare = ProcessJobConfiguration.prepare_for_flow_run

    @functools.wraps(prepare)
    def prepare_with_engine_command(self: Any, *args: Any, **kwargs: Any) -> None:
        if self.command is None:
            self.command = command_to_string([sys.executable, "-m", "prefect.engine"])
        prepare(self, *args, **kwargs)

    ProcessJobConfiguration.prepare_for_flow_run = prepare_with_engine_command  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    """Run `prefect worker start` with the given options, its flow runs forked."""
    from prefect.cli import app

    if get_settings().fork_pickups:
        engine_command_by_default()
        fork_engine_command([*PULL_STEPS, *entrypoint_modules(), *RUN_BY_TASKS])
    options = sys.argv[1:] if argv is None else argv
    sys.argv = [sys.argv[0], "worker", "start", *options]  # Prefect's command line reads argv
    app()
    return 0


if __name__ == "__main__":
    sys.exit(main())
