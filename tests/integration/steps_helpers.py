"""Reading a sample case's lifecycle back from the store, for the per-step integration tests."""

from __future__ import annotations

from models.enums import CaseState, CaseStatus, Step, StepRunStatus
from models.tables import ActionPlan, PlanAction, StepRun
from tests.integration.factories import SampleCase, rows

PENDING, STARTED, FINISHED = StepRunStatus.PENDING, StepRunStatus.STARTED, StepRunStatus.FINISHED


def step_runs(case: SampleCase) -> list[tuple[int, int, StepRunStatus]]:
    """Return the case's step runs as (step, entry, status), in step order."""
    found = rows(StepRun, StepRun.case_id == case.case().id)
    return sorted((r.step, r.entry, r.status) for r in found)


def assert_state(case: SampleCase, state: CaseState, step: Step, status: CaseStatus) -> None:
    """Assert the stored case's state, step and status."""
    stored = case.case()
    assert (stored.state, stored.step, stored.status) == (state, int(step), status)


def transitions(case: SampleCase) -> list[tuple[str, str, str]]:
    """Return the audited transitions as (event, from, to), in order."""
    return [
        (e.details["event"], e.details["from"], e.details["to"])
        for e in case.audit()
        if e.action == "case.transition"
    ]


def plan_keys(case: SampleCase, version: int) -> dict[str, PlanAction]:
    """Return the actions of one version of the case's plan, by key."""
    [plan_row] = rows(
        ActionPlan, ActionPlan.case_id == case.case().id, ActionPlan.version == version
    )
    return {a.key: a for a in rows(PlanAction, PlanAction.plan_id == plan_row.id)}
