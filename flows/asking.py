"""One way for every step to wait for a person's decision without holding a process.

`ask` returns the decision if the store has it; otherwise it suspends the run (the process exits,
nothing is held) until someone submits the form through the Prefect API (UI, `remedy decide`, or
the approval page). On resume the step re-runs from the top, reaches `ask` again, and the submitted
form comes back at once; it is checked in our code, and a refused submission is audited and asked
again under a new key, so a person's input never fails the run. Once recorded, the submission is
deleted from Prefect (docs/security.md).
"""

from __future__ import annotations

import uuid
from typing import Any

from prefect import get_run_logger
from prefect.flow_runs import suspend_flow_run

from models.enums import DecisionKind
from tasks.case_state import StepContext
from tasks.decisions.requests import DecisionView, Pending
from tasks.orchestration.step_tasks import (
    current_run_id,
    deliver_case_task,
    forget_submission_task,
    prepare_decision_task,
    publish_case_view_task,
    record_decision_task,
    submitted_input_task,
)
from tasks.steps.table import spec_of


def ask(
    ctx: StepContext,
    kind: DecisionKind,
    *,
    scope: str | None = None,
    exclude: list[uuid.UUID] | None = None,
) -> DecisionView:
    """Return the decision of this kind for the step, waiting for it if it is not taken yet."""
    logger = get_run_logger()
    while True:
        pending = prepare_decision_task(ctx.case_ref, kind, scope or ctx.scope, exclude, ctx.step)
        if pending.decision is not None:
            return pending.decision
        submission, run_id = _submission(ctx, pending)
        result = record_decision_task(pending.request_id, submission)
        # recorded: what it presented is consumed; Prefect keeps run inputs in clear, so drop it
        forget_submission_task(run_id, pending.suspend_key)
        if result.accepted and result.decision is not None:
            logger.info("%s: %s decided: %s", ctx.case_ref, kind.value, result.decision.outcome)
            publish_case_view_task(ctx.case_ref)
            return result.decision
        logger.warning(
            "%s: a %s submission was %s: %s",
            ctx.case_ref,
            kind.value,
            "not proven (the same round waits)" if result.attempt_failed else "refused",
            result.reason,
        )


def _submission(ctx: StepContext, pending: Pending) -> tuple[dict[str, Any], uuid.UUID]:
    """Wait (suspended, no process held) for the form; or take it from a run that was lost.

    Returns the form and the run whose input held it.
    """
    if pending.previous_flow_run_id is not None:
        values = submitted_input_task(pending.previous_flow_run_id, pending.suspend_key)
        if values is not None:
            get_run_logger().info("%s: recovered a submission from an earlier run", ctx.case_ref)
            return values, pending.previous_flow_run_id
    publish_case_view_task(ctx.case_ref)
    deliver_case_task(ctx.case_ref)  # the approvers get their codes now, not at the next drain
    get_run_logger().info(
        "%s: waiting for the %s decision (round %d)",
        ctx.case_ref,
        pending.kind.value,
        pending.round,
    )
    form = spec_of(pending.kind).form.with_initial_data(
        description=pending.description, **pending.initial
    )
    submission = suspend_flow_run(wait_for_input=form, key=pending.suspend_key, timeout=None)
    assert submission is not None
    run_id = current_run_id()
    assert run_id is not None
    return submission.model_dump(mode="json"), run_id
