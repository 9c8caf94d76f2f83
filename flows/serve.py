"""Serve every Remedy deployment from one runner process (the embedded default).

`python -m flows.serve` (started by `remedy up`) registers the seven step deployments and the
closure trigger with the configured Prefect server and executes their runs, at most
REMEDY_RUNNER_LIMIT at a time. Suspended runs hold no process.
"""

from __future__ import annotations

from typing import Any

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger

from flows.capture_lessons import capture_lessons
from flows.close_incident import close_incident
from flows.deliver_notifications import deliver_notifications
from flows.design_action_plan import design_action_plan
from flows.determine_response import determine_response
from flows.implement_and_monitor import implement_and_monitor
from flows.monitor_milestones import monitor_milestones
from flows.remediation_case import remediation_case
from flows.verify_allegation import verify_allegation
from models.settings import get_settings
from tasks.orchestration.runs import CASE_CLOSED_EVENT

STEP_FLOWS = (
    remediation_case,
    verify_allegation,
    determine_response,
    design_action_plan,
    implement_and_monitor,
    close_incident,
)


def lessons_trigger() -> DeploymentEventTrigger:
    """Start capture-lessons for the case named by each remedy.case.closed event."""
    return DeploymentEventTrigger(
        name="lessons-on-case-closed",
        expect={CASE_CLOSED_EVENT},
        match={"prefect.resource.id": "remedy.case.*"},
        parameters={"case_ref": "{{ event.payload.case_ref }}"},
    )


def deployments() -> list[RunnerDeployment]:
    """Return every Remedy deployment, each named after its flow."""
    tags = ["remedy"]
    built: list[Any] = [f.to_deployment(name=f.name, tags=tags) for f in STEP_FLOWS]
    built.append(
        capture_lessons.to_deployment(
            name=capture_lessons.name, tags=tags, triggers=[lessons_trigger()]
        )
    )
    built.append(
        monitor_milestones.to_deployment(
            name=monitor_milestones.name, tags=tags, cron=get_settings().monitor_cron
        )
    )
    built.append(
        deliver_notifications.to_deployment(
            name=deliver_notifications.name,
            tags=tags,
            interval=get_settings().delivery_drain_seconds,
        )
    )
    return built  # to_deployment is synchronous outside an event loop


def main() -> None:
    """Serve the deployments until interrupted."""
    serve(*deployments(), limit=get_settings().runner_limit, print_starting_message=True)


if __name__ == "__main__":
    main()
