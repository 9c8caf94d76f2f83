"""Talking to Prefect: starting the next step's run, checking runs, emitting the closure event."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final, NamedTuple

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.events import emit_event
from prefect.exceptions import ObjectNotFound
from prefect.input.run_input import read_flow_run_input
from prefect.settings import get_current_settings
from prefect.states import Cancelled

from models.enums import Step
from tasks.case_state import mark_handed_over, pending_handover
from tasks.orchestration.deployments import (
    CASE_CLOSED_EVENT,
    ENTRY,
    STEP_DEPLOYMENTS,
    case_resource_id,
    deployment_name,
)
from tasks.steps.implement import move_to_closure

# The entry deployment's flow, started by intake and `remedy start`.
ENTRY_FLOW: Final = ENTRY.name


def case_tags(case_ref: str, step: Step | None = None) -> list[str]:
    """Return the tags that let the UI filter runs by case (and step)."""
    tags = [f"case:{case_ref}"]
    if step is not None:
        tags.append(f"step:{int(step)}")
    return tags


def case_runs(case_ref: str) -> list[FlowRun]:
    """Return every flow run tagged with the case (its steps, sweeps of it, repairs)."""
    tagged = FlowRunFilter(tags=FlowRunFilterTags(all_=case_tags(case_ref)))
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=tagged)


def read_run(flow_run_id: uuid.UUID) -> FlowRun | None:
    """Return a flow run, or None if Prefect no longer has it."""
    with get_client(sync_client=True) as client:
        try:
            return client.read_flow_run(flow_run_id)
        except ObjectNotFound:
            return None


def run_is_alive(flow_run_id: uuid.UUID) -> bool:
    """Tell whether a flow run can still go on (scheduled, running or waiting for a decision)."""
    run = read_run(flow_run_id)
    return run is not None and run.state is not None and not run.state.is_final()


def start_flow(flow: str, case_ref: str, *, idempotency_key: str, step: Step | None) -> uuid.UUID:
    """Create a top-level run of a deployment for a case; a repeated key returns the same run."""
    run: FlowRun = run_deployment(  # type: ignore[assignment,call-arg]
        deployment_name(flow),
        parameters={"case_ref": case_ref},
        as_subflow=False,
        idempotency_key=idempotency_key,
        timeout=0,
        tags=case_tags(case_ref, step),
        _sync=True,  # also when called beside an event loop (the approval page, a browser)
    )
    return run.id


def start_case_run(case_ref: str) -> uuid.UUID:
    """Start (or find again) a case's remediation-case run: one per case, by its key."""
    return start_flow(
        ENTRY_FLOW, case_ref, idempotency_key=f"{case_ref.lower()}-{ENTRY_FLOW}", step=None
    )


def tag_run(flow_run_id: uuid.UUID, case_ref: str, step: Step | None) -> None:
    """Make sure a run carries the case's tags, however it was started (trigger, UI, CLI)."""
    wanted = case_tags(case_ref, step)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        if not set(wanted) <= set(run.tags):
            client.update_flow_run(flow_run_id, tags=sorted({*run.tags, *wanted}))


def submitted_input(flow_run_id: uuid.UUID, suspend_key: str) -> dict[str, Any] | None:
    """Return the form a person submitted to a run suspended on a key, if the run kept one.

    A run killed after it was resumed but before it recorded the decision leaves the person's
    submission behind; the run that takes over the step reads it here instead of asking again.
    """
    try:
        value = read_flow_run_input(
            key=f"suspended-{suspend_key}-response", flow_run_id=flow_run_id
        )
    except ObjectNotFound:
        return None
    return value if isinstance(value, dict) else None


def forget_submitted_input(flow_run_id: uuid.UUID, suspend_key: str) -> None:
    """Delete a recorded submission from Prefect, which keeps run inputs in clear.

    What it held is consumed already (docs/security.md); deleting it leaves API readers nothing
    to study. Gone already is fine.
    """
    with get_client(sync_client=True) as client:
        try:
            client.delete_flow_run_input(flow_run_id, f"suspended-{suspend_key}-response")
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 404:
                raise


def cancel_waiting_runs(flow_run_ids: list[uuid.UUID], *, why: str) -> int:
    """Cancel runs still suspended on decisions that were cancelled; return how many were.

    A suspended run holds no process, so its state is set directly; runs that are running or
    finished are left alone (a running one finds its step gone and ends by itself).
    """
    cancelled = 0
    with get_client(sync_client=True) as client:
        for flow_run_id in flow_run_ids:
            try:
                run = client.read_flow_run(flow_run_id)
            except ObjectNotFound:
                continue
            if run.state is None or not run.state.is_paused():
                continue
            client.set_flow_run_state(flow_run_id, Cancelled(message=why), force=True)
            cancelled += 1
    return cancelled


def mark_crashed(flow_run_id: uuid.UUID, *, why: str) -> bool:
    """Set a run whose process is gone to Crashed, as Prefect's zombie automation would.

    A runner killed with its children reports nothing, so the run says Running for ever; once
    Crashed, a run of the same step started after it no longer finds the step carried (tasks/
    orchestration/step_tasks.py, `_open_step`). Final or missing runs are left as they are.
    """
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(flow_run_id)
        except ObjectNotFound:
            return False
        if run.state is not None and run.state.is_final():
            return False
        client.set_flow_run_state(flow_run_id, Crashed(message=why), force=True)
        return True


def emit_case_closed(case_ref: str) -> None:
    """Announce a closure; the capture-lessons deployment is triggered by this event."""
    emit_event(
        event=CASE_CLOSED_EVENT,
        resource={
            "prefect.resource.id": case_resource_id(case_ref),
            "remedy.case.reference": case_ref,
        },
        payload={"case_ref": case_ref},
    )


def hand_over(case_ref: str, *, now: datetime) -> str | None:
    """Start the run for the step the case is in now, if nobody has (idempotent by key)."""
    pending = pending_handover(case_ref)
    if pending is None:
        return None
    deployment = STEP_DEPLOYMENTS[pending.step]
    if deployment.kind == "event":  # step 6: the closure event's trigger starts its run
        emit_case_closed(case_ref)
        mark_handed_over(case_ref, pending.step, pending.entry, None, now=now)
        return CASE_CLOSED_EVENT
    run_id = start_flow(
        deployment.name, case_ref, idempotency_key=pending.idempotency_key, step=pending.step
    )
    mark_handed_over(case_ref, pending.step, pending.entry, run_id, now=now)
    return deployment.name


def ui_url() -> str | None:
    """Return the Prefect UI's address, if one is configured."""
    return get_current_settings().ui_url


def flow_run_link(flow_run_id: uuid.UUID | None) -> str | None:
    """Return the UI page of a flow run (where a waiting decision's Resume form is)."""
    base = ui_url()
    if base is None or flow_run_id is None:
        return None
    return f"{base.rstrip('/')}/runs/flow-run/{flow_run_id}"


def prefect_configured() -> bool:
    """Tell whether a Prefect server is configured (PREFECT_API_URL, or the active profile's)."""
    return bool(get_current_settings().api.url)


class Closing(NamedTuple):
    """What closing a completed plan did: moved the case (or found it moved), started a run."""

    moved: bool
    started: str | None


def close_completed_plan(case_ref: str, *, now: datetime, actor: str) -> Closing:
    """Every milestone of the case's plan is settled: move it to closure and start step 5.

    Both halves are idempotent, so the CLI, the approval page and the monitoring sweep all call
    this after the last milestone settles (the last update usually moved the case already).
    """
    moved = move_to_closure(case_ref, now=now, actor=actor)
    started = hand_over(case_ref, now=now)  # starts close-incident once (by key)
    return Closing(moved, started)
