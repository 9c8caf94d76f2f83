"""Serve every Remedy deployment from one runner process (the embedded default).

`python -m flows.serve` (started by `remedy up`) registers every deployment of the registry in
tasks/orchestration/deployments.py (the entry, the six steps with step 6's closure trigger, the
sweep and the outbox drain) with the configured Prefect server and executes their runs, at most
REMEDY_RUNNER_LIMIT at a time. Suspended runs hold no process.
"""

from __future__ import annotations

import importlib
from typing import Any

from prefect import Flow, serve
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger

from flows.prefork import fork_engine_command
from models.settings import Settings, get_settings
from tasks.orchestration.deployments import (
    DEPLOYMENTS,
    TAGS,
    Cron,
    Deployment,
    EventTrigger,
    Interval,
    entrypoint_modules,
)
from tasks.orchestration.step_tasks import RUN_BY_TASKS


def load_flow(deployment: Deployment) -> Flow[..., Any]:
    """Import the flow object a deployment's entrypoint (`flows/<module>.py:<function>`) names."""
    path, function = deployment.entrypoint.split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    found = getattr(module, function)
    if not isinstance(found, Flow):
        raise TypeError(f"{deployment.entrypoint} is not a Prefect flow")
    return found


def event_trigger(trigger: EventTrigger) -> DeploymentEventTrigger:
    """Build the Prefect trigger that starts a run for each matching event."""
    return DeploymentEventTrigger(
        name=trigger.name,
        expect={trigger.expect},
        match=dict(trigger.match),
        parameters=dict(trigger.parameters),
    )


def _start_options(deployment: Deployment, settings: Settings) -> dict[str, Any]:
    start = deployment.start
    if isinstance(start, Cron):
        return {"cron": start.cron(settings)}
    if isinstance(start, Interval):
        return {"interval": start.seconds(settings)}
    if isinstance(start, EventTrigger):
        return {"triggers": [event_trigger(start)]}
    return {}


def deployments() -> list[RunnerDeployment]:
    """Return every Remedy deployment of the registry, each named after its flow."""
    settings = get_settings()
    built: list[Any] = [
        load_flow(d).to_deployment(name=d.name, tags=list(TAGS), **_start_options(d, settings))
        for d in DEPLOYMENTS
    ]
    return built  # to_deployment is synchronous outside an event loop


def main() -> None:
    """Serve the deployments until interrupted, each flow run a fork of one process that has
    imported them and what their tasks run (flows/prefork.py)."""
    settings = get_settings()
    if settings.fork_pickups:
        fork_engine_command([*entrypoint_modules(), *RUN_BY_TASKS])
    serve(*deployments(), limit=settings.runner_limit, print_starting_message=True)


if __name__ == "__main__":
    main()
