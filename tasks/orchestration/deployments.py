"""The one registry of Remedy's deployments: names, entrypoints, steps, schedules and trigger.

Every deployment is named after its flow (`verify-allegation/verify-allegation`, see
docs/architecture.md, Deployments). `flows/serve.py` serves exactly these; `prefect.yaml` declares
the same ones for process workers, and tests/unit/test_deployments.py holds the two together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Literal

from models.enums import Step

if TYPE_CHECKING:
    from models.settings import Settings

TAGS: Final[tuple[str, ...]] = ("remedy",)
WORK_POOL: Final = "remedy-process"  # prefect.yaml's process work pool (workers only)
CASE_CLOSED_EVENT: Final = "remedy.case.closed"
CASE_RESOURCE: Final = "remedy.case"  # an event's resource id is this, a dot and the lowercase ref

StartKind = Literal["called", "cron", "interval", "event"]


@dataclass(frozen=True)
class Cron:
    """Runs on a cron schedule (UTC) that the settings give."""

    cron: Callable[[Settings], str]


@dataclass(frozen=True)
class Interval:
    """Runs every so many seconds, as the settings give."""

    seconds: Callable[[Settings], int]


@dataclass(frozen=True)
class EventTrigger:
    """Runs for each event `expect` on a case's resource, with parameters taken from the event."""

    name: str
    expect: str
    match: Mapping[str, str]
    parameters: Mapping[str, str]


@dataclass(frozen=True)
class Deployment:
    """One deployment: named after its flow, at `flows/<module>.py:<function>`."""

    name: str
    entrypoint: str
    description: str
    step: Step | None = None
    # None: started by a call (handover, a command or the reconciler through run_deployment)
    start: Cron | Interval | EventTrigger | None = None

    @property
    def kind(self) -> StartKind:
        """Tell how this deployment's runs start."""
        if isinstance(self.start, Cron):
            return "cron"
        if isinstance(self.start, Interval):
            return "interval"
        if isinstance(self.start, EventTrigger):
            return "event"
        return "called"


LESSONS_TRIGGER: Final = EventTrigger(
    name="lessons-on-case-closed",
    expect=CASE_CLOSED_EVENT,
    match=MappingProxyType({"prefect.resource.id": f"{CASE_RESOURCE}.*"}),
    parameters=MappingProxyType({"case_ref": "{{ event.payload.case_ref }}"}),
)

ENTRY: Final = Deployment(
    name="remediation-case",
    entrypoint="flows/remediation_case.py:remediation_case",
    description="Entry of a newly opened case; starts step 1.",
)

# In the order prefect.yaml lists them.
DEPLOYMENTS: Final[tuple[Deployment, ...]] = (
    ENTRY,
    Deployment(
        name="verify-allegation",
        entrypoint="flows/verify_allegation.py:verify_allegation",
        description="IOM step 1: screening, safety assessment, findings, substantiation.",
        step=Step.VERIFY,
    ),
    Deployment(
        name="determine-response",
        entrypoint="flows/determine_response.py:determine_response",
        description="IOM step 2: involvement, severity, response level, relationship, referral.",
        step=Step.RESPOND,
    ),
    Deployment(
        name="design-action-plan",
        entrypoint="flows/design_action_plan.py:design_action_plan",
        description="IOM step 3: draft plan, victims' agreement, budget approval.",
        step=Step.PLAN,
    ),
    Deployment(
        name="implement-and-monitor",
        entrypoint="flows/implement_and_monitor.py:implement_and_monitor",
        description="IOM step 4: activate the milestones and notify their owners.",
        step=Step.IMPLEMENT,
    ),
    Deployment(
        name="close-incident",
        entrypoint="flows/close_incident.py:close_incident",
        description="IOM step 5: closure criteria and four eyes; emits remedy.case.closed.",
        step=Step.CLOSE,
    ),
    Deployment(
        name="capture-lessons",
        entrypoint="flows/capture_lessons.py:capture_lessons",
        description="IOM step 6: lessons learned; triggered by remedy.case.closed.",
        step=Step.LESSONS,
        start=LESSONS_TRIGGER,
    ),
    Deployment(
        name="deliver-notifications",
        entrypoint="flows/deliver_notifications.py:deliver_notifications",
        description="Drains the notification outbox (what steps could not send at once).",
        start=Interval(lambda settings: settings.delivery_drain_seconds),
    ),
    Deployment(
        name="monitor-milestones",
        entrypoint="flows/monitor_milestones.py:monitor_milestones",
        description=(
            "Sweeps every open case - reminders, escalations, closures, repairs, portfolio."
        ),
        start=Cron(lambda settings: settings.monitor_cron),
    ),
)

# The deployment that carries each IOM step (the entry carries none).
STEP_DEPLOYMENTS: Final[Mapping[Step, Deployment]] = MappingProxyType(
    {d.step: d for d in DEPLOYMENTS if d.step is not None}
)


def entrypoint_modules() -> list[str]:
    """Return the module of every deployment's entrypoint (`flows.<module>`), in their order."""
    modules: list[str] = []
    for deployment in DEPLOYMENTS:
        module = deployment.entrypoint.split(":", 1)[0].removesuffix(".py").replace("/", ".")
        if module not in modules:
            modules.append(module)
    return modules


def deployment_name(flow: str) -> str:
    """Return the full name of a flow's deployment (deployments are named after their flows)."""
    return f"{flow}/{flow}"


def case_resource_id(case_ref: str) -> str:
    """Return the event resource id of a case, the one LESSONS_TRIGGER matches."""
    return f"{CASE_RESOURCE}.{case_ref.lower()}"
