"""The Prefect tasks the step flows call: each wraps one plain unit of work of `tasks`.

The plain functions take `now` and the current run explicitly so tests can call them directly;
these wrappers supply them, and retry what touches the case store or the Prefect API.

Each wrapper imports the unit of work it runs when it runs: every deployment's flow process (a
fresh one at each pickup) imports this module, and deliver-notifications, which starts every
minute or so, needs only the outbox's drain, not the decision engine, the steps or the reports.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Final

from prefect.runtime import flow_run

from tasks.context import utcnow
from tasks.orchestration.retrying import remedy_task

# What the tasks below import when they run (tests/unit/test_lazy_imports.py checks the list): a
# runner's fork server imports them once for all its flow processes (flows/prefork.py).
RUN_BY_TASKS: Final = (
    "tasks.case_state",
    "tasks.decisions.requests",
    "tasks.decisions.submissions",
    "tasks.drain",
    "tasks.orchestration.runs",
    "tasks.reports.case_view",
    "tasks.steps.implement",
    "tasks.steps.plan",
)

if TYPE_CHECKING:
    from models.enums import DecisionKind, Step
    from tasks.case_state import StepContext
    from tasks.decisions.requests import Pending
    from tasks.decisions.submissions import SubmissionResult
    from tasks.drain import DeliveryReport


def current_run_id() -> uuid.UUID | None:
    """Return the id of the flow run this code runs in."""
    run_id = flow_run.get_id()
    return uuid.UUID(str(run_id)) if run_id else None


def _begin_case(case_ref: str) -> StepContext:
    from tasks.case_state import begin_case

    return begin_case(case_ref, now=utcnow())


def _open_step(case_ref: str, step: Step) -> StepContext:
    from tasks.case_state import open_step, step_run_binding
    from tasks.orchestration.runs import run_is_alive, tag_run

    run_id = current_run_id()
    if run_id is not None:
        tag_run(run_id, case_ref, step)
    bound = step_run_binding(case_ref, step)
    alive = bound is not None and bound != run_id and run_is_alive(bound)
    return open_step(case_ref, step, flow_run_id=run_id, now=utcnow(), other_run_alive=alive)


def _prepare_decision(
    case_ref: str,
    kind: DecisionKind,
    scope: str,
    exclude: list[uuid.UUID] | None = None,
    step: Step | None = None,
) -> Pending:
    from tasks.decisions.requests import prepare_decision

    return prepare_decision(
        case_ref,
        kind,
        scope=scope,
        flow_run_id=current_run_id(),
        now=utcnow(),
        exclude_approvers=exclude,
        step=int(step) if step is not None else None,
    )


def _record_submission(request_id: uuid.UUID, submission: dict[str, Any]) -> SubmissionResult:
    from tasks.decisions.submissions import record_submission

    return record_submission(request_id, submission, now=utcnow())


def _publish_case_view(case_ref: str) -> None:
    from tasks.reports.case_view import publish_case_view

    publish_case_view(case_ref, now=utcnow())


def _hand_over(case_ref: str) -> str | None:
    from tasks.orchestration.runs import hand_over

    return hand_over(case_ref, now=utcnow())


def _draft_plan(case_ref: str) -> int:
    from tasks.steps.plan import draft_plan

    return draft_plan(case_ref, now=utcnow())


def _activate_plan(case_ref: str) -> int:
    from tasks.steps.implement import activate_plan

    return activate_plan(case_ref, now=utcnow())


def _submitted_input(flow_run_id: uuid.UUID, suspend_key: str) -> dict[str, Any] | None:
    from tasks.orchestration import runs

    return runs.submitted_input(flow_run_id, suspend_key)


def _forget_submitted_input(flow_run_id: uuid.UUID, suspend_key: str) -> None:
    from tasks.orchestration import runs

    runs.forget_submitted_input(flow_run_id, suspend_key)


submitted_input_task = remedy_task(_submitted_input, name="recover-submission")
forget_submission_task = remedy_task(_forget_submitted_input, name="forget-submission")


def _deliver_case(case_ref: str) -> int:
    from tasks.drain import deliver_due

    # the wall clock, even in a simulated sweep: leases and retries are real time (tasks/drain.py)
    return deliver_due(now=utcnow(), case_ref=case_ref).delivered


def _deliver_all(limit: int = 2000) -> DeliveryReport:
    from tasks.drain import deliver_due

    return deliver_due(now=utcnow(), limit=limit)


deliver_case_task = remedy_task(_deliver_case, name="deliver-case-notifications", retries=2)
deliver_all_task = remedy_task(_deliver_all, name="deliver-notifications", retries=2)
begin_case_task = remedy_task(_begin_case, name="begin-case")
open_step_task = remedy_task(_open_step, name="open-step")
prepare_decision_task = remedy_task(_prepare_decision, name="prepare-decision")
record_decision_task = remedy_task(_record_submission, name="record-decision")
publish_case_view_task = remedy_task(_publish_case_view, name="publish-case-view")
hand_over_task = remedy_task(_hand_over, name="start-next-step")
draft_plan_task = remedy_task(_draft_plan, name="draft-plan")
activate_plan_task = remedy_task(_activate_plan, name="activate-milestones")
