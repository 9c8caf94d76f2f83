"""`python -m flows.worker --pool remedy-process [prefect worker start's options]`: a process worker
whose flow runs are forks of one process that has imported Prefect and Remedy's steps.

It is `prefect worker start`, with one difference: Prefect's process worker starts every flow run
(every pickup, every resume) as `python -m prefect.engine`, a fresh interpreter that imports
Prefect and the step again; this worker forks them from a fork server that imported all of it once
(flows/prefork.py). Restart the worker after changing the code on its host, as with the runner.
REMEDY_FORK_PICKUPS=false starts them as Prefect does.
"""

from __future__ import annotations

import sys

from flows.prefork import fork_engine_command
from models.settings import get_settings
from tasks.orchestration.deployments import entrypoint_modules
from tasks.orchestration.step_tasks import RUN_BY_TASKS

# What a deployment's flow process runs besides its entrypoint: prefect.yaml's pull step.
PULL_STEPS = ("prefect.deployments.steps", "flows.workdir")


def main(argv: list[str] | None = None) -> int:
    """Run `prefect worker start` with the given options, its flow runs forked."""
    from prefect.cli import app

    if get_settings().fork_pickups:
        fork_engine_command([*PULL_STEPS, *entrypoint_modules(), *RUN_BY_TASKS])
    options = sys.argv[1:] if argv is None else argv
    sys.argv = [sys.argv[0], "worker", "start", *options]  # Prefect's command line reads argv
    app()
    return 0


if __name__ == "__main__":
    sys.exit(main())
