"""Re-running the steps on real stores: a retried, resumed or duplicate step run writes
nothing new (docs/architecture.md, the case store is the source of truth).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from models.enums import CaseState, DecisionKind, Step
from models.tables import StepRun
from tasks.case_state import begin_case, mark_handed_over, open_step, pending_handover
from tasks.steps.implement import activate_plan
from tasks.steps.plan import draft_plan
from tests.conftest import Store
from tests.integration.factories import Clock, implement, respond, rows, start_sample_case, verify


def test_running_a_step_again_writes_nothing_new(store: Store) -> None:
    clock = Clock()
    case = start_sample_case(clock)

    def unchanged(again: Callable[[], object]) -> None:
        before, events = store.row_counts(), len(case.audit())
        again()
        assert store.row_counts() == before
        assert len(case.audit()) == events

    unchanged(lambda: begin_case(case.ref, now=clock.tick()))
    unchanged(lambda: open_step(case.ref, Step.VERIFY, flow_run_id=case.run_id, now=clock.tick()))
    # a second run while the first is alive leaves the step to it
    busy = open_step(
        case.ref, Step.VERIFY, flow_run_id=uuid.uuid4(), now=clock.tick(), other_run_alive=True
    )
    assert not busy.active and str(case.run_id) in busy.note
    [bound] = rows(StepRun, StepRun.case_id == case.case().id)
    assert bound.flow_run_id == case.run_id
    case.prepare(DecisionKind.SCREENING)
    unchanged(lambda: case.prepare(DecisionKind.SCREENING))
    verify(case)
    unchanged(lambda: begin_case(case.ref, now=clock.tick()))
    respond(case)
    # a step whose work is done has nothing to do, and says so
    stale = open_step(case.ref, Step.VERIFY, flow_run_id=uuid.uuid4(), now=clock.tick())
    assert not stale.active and "designing_plan" in stale.note
    case.enter(Step.PLAN)
    assert draft_plan(case.ref, now=clock.tick()) == 1
    unchanged(lambda: draft_plan(case.ref, now=clock.tick()))
    case.prepare(DecisionKind.PLAN_AGREEMENT)
    unchanged(lambda: case.prepare(DecisionKind.PLAN_AGREEMENT))
    case.decide(DecisionKind.PLAN_AGREEMENT)
    unchanged(lambda: case.prepare(DecisionKind.PLAN_AGREEMENT))
    case.decide(DecisionKind.PLAN_BUDGET)
    entry = pending_handover(case.ref)
    assert entry is not None
    mark_handed_over(case.ref, entry.step, entry.entry, case.run_id, now=clock.tick())
    unchanged(
        lambda: mark_handed_over(case.ref, entry.step, entry.entry, uuid.uuid4(), now=clock.tick())
    )
    case.enter(Step.IMPLEMENT, case.run_id)
    unchanged(
        lambda: open_step(case.ref, Step.IMPLEMENT, flow_run_id=case.run_id, now=clock.tick())
    )
    assert activate_plan(case.ref, now=clock.tick()) > 0
    unchanged(lambda: activate_plan(case.ref, now=clock.tick()))
    implement(case)
    assert case.case().state == CaseState.CLOSING
    unchanged(lambda: activate_plan(case.ref, now=clock.tick()))
    assert case.chain().ok
