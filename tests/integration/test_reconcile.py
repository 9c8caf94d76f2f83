"""The doctor and the reconciler on real stores, with Prefect's runs played by fakes of our ports.

The doctor reads runs through a reader (here a dict of what Prefect would say); the reconciler
starts, crashes and hands over runs through a `RunControl` (here a fake that records what it was
asked). Everything else, the store, its locks and the audit chain, is real.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from prefect.client.schemas.objects import FlowRun, StateType
from prefect.states import State

from models.enums import CaseState, DecisionKind, Step
from models.tables import AuditEvent, StepRun
from tasks.case_state import mark_handed_over, open_step, pending_handover
from tasks.monitoring.doctor import (
    GRACE,
    Finding,
    RunReader,
    RunSeen,
    _quiet_since,
    diagnose,
    unheard_since,
)
from tasks.monitoring.reconcile import reconcile, restart_step
from tasks.orchestration.deployments import STEP_DEPLOYMENTS
from tests.conftest import Store
from tests.integration.factories import Clock, SampleCase, rows, start_sample_case, to_implementing

SUSPENDED = "Suspended"


def seen(kind: StateType, name: str | None = None, **more: object) -> RunSeen:
    return RunSeen(state_type=kind, state_name=name or kind.value.title(), **more)


def reader(known: dict[uuid.UUID, RunSeen]) -> RunReader:
    """What Prefect says of the runs the doctor asks about (absent: deleted)."""
    return lambda ids: {i: known[i] for i in ids if i in known}


def found(case: SampleCase, known: dict[uuid.UUID, RunSeen], now: datetime) -> list[Finding]:
    return [f for f in diagnose(now=now, runs=reader(known)) if f.case_ref == case.ref]


def kinds(findings: list[Finding]) -> set[str]:
    return {f.kind for f in findings}


@dataclass
class FakePrefect:
    """The reconciler's port: records runs started (one per key, as Prefect does) and crashed."""

    started: dict[str, uuid.UUID] = field(default_factory=dict)
    crashed: list[uuid.UUID] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    def start(self, flow: str, case_ref: str, *, idempotency_key: str, step: Step) -> uuid.UUID:
        self.calls.append(f"start {flow}")
        return self.started.setdefault(idempotency_key, uuid.uuid4())

    def crash(self, flow_run_id: uuid.UUID, *, why: str) -> bool:
        self.calls.append(f"crash {flow_run_id}")
        self.crashed.append(flow_run_id)
        return True

    def hand_over(self, case_ref: str, *, now: datetime) -> str | None:
        pending = pending_handover(case_ref)
        if pending is None:
            return None
        flow = STEP_DEPLOYMENTS[pending.step].name
        run_id = self.start(
            flow, case_ref, idempotency_key=pending.idempotency_key, step=pending.step
        )
        mark_handed_over(case_ref, pending.step, pending.entry, run_id, now=now)
        return flow


def waiting_screening(clock: Clock) -> tuple[SampleCase, str]:
    """A case in step 1 whose run asked for the screening decision (and would suspend on it)."""
    case = start_sample_case(clock)
    pending = case.prepare(DecisionKind.SCREENING)
    return case, pending.suspend_key


def repairs_in(case: SampleCase) -> list[AuditEvent]:
    return [e for e in case.audit() if e.action.startswith("reconcile.")]


def test_the_doctor_knows_every_way_a_waiting_step_can_die(store: Store) -> None:
    """A step waiting for a decision, against each thing Prefect could say of its run."""
    clock = Clock()
    case, key = waiting_screening(clock)
    now = clock.now + GRACE * 2
    quiet = clock.now - timedelta(minutes=20)
    expected: list[tuple[str, RunSeen | None, set[str]]] = [
        ("suspended on the request", seen(StateType.PAUSED, SUSPENDED, pause_key=key), set()),
        ("resumed, waiting for a runner", seen(StateType.SCHEDULED, "Resuming"), set()),
        ("starting", seen(StateType.PENDING), set()),
        ("running and heard from", seen(StateType.RUNNING), set()),
        (
            "running, its process gone",
            seen(StateType.RUNNING, silent_since=quiet),
            {"decision-without-run", "step-run-silent"},
        ),
        (
            "starting, its process gone",
            seen(StateType.PENDING, silent_since=quiet),
            {"decision-without-run", "step-run-silent"},
        ),
        ("crashed", seen(StateType.CRASHED), {"decision-without-run", "step-run-lost"}),
        ("failed", seen(StateType.FAILED), {"decision-without-run", "step-run-lost"}),
        ("cancelled", seen(StateType.CANCELLED), {"decision-without-run", "step-run-lost"}),
        ("completed", seen(StateType.COMPLETED), {"decision-without-run", "step-run-ended"}),
        ("deleted", None, {"decision-without-run", "step-run-lost"}),
        (
            "suspended on another key",
            seen(StateType.PAUSED, SUSPENDED, pause_key="other"),
            {"decision-without-run"},
        ),
    ]
    for what, run, want in expected:
        known = {case.run_id: run} if run is not None else {}
        findings = found(case, known, now)
        assert kinds(findings) == want, what
        assert all(f.step == 1 and f.flow_run_id == case.run_id for f in findings), what
        assert all(f.run_dead == (run is not None and run.silent) for f in findings), what
        assert all(f.repair == "restart step 1" for f in findings), what
    # a suspend on the next key a moment ago is a step moving on, not a problem yet
    moving = {case.run_id: seen(StateType.PAUSED, SUSPENDED, pause_key="other")}
    assert found(case, moving, clock.now + GRACE / 2) == []


def test_a_run_that_died_while_suspending_is_crashed_and_its_step_restarted(
    store: Store,
) -> None:
    """Prefect sets Suspended, then saves the run's form: a process killed between the two
    leaves a run that waits on the right key and that nobody can ever resume."""
    clock = Clock()
    case, key = waiting_screening(clock)
    formless = case.run_id
    known = {formless: seen(StateType.PAUSED, SUSPENDED, pause_key=key, form_lost=True)}
    [finding] = found(case, known, clock.now + GRACE * 2)
    assert (finding.kind, finding.step, finding.flow_run_id) == (
        "decision-without-run",
        1,
        formless,
    )
    assert "its form was never saved" in finding.detail and finding.run_dead
    prefect = FakePrefect()
    [repair] = reconcile(now=clock.now + GRACE * 2, control=prefect, reader=reader(known))
    # crashed first, so that the new run does not find the step carried by a waiting run
    assert prefect.calls == [f"crash {formless}", "start verify-allegation"]
    [event] = repairs_in(case)
    assert event.details["marked_crashed"] == [str(formless)]
    assert repair.flow_run_id == next(iter(prefect.started.values()))


def test_a_silent_run_is_named_with_the_last_moment_it_was_heard(store: Store) -> None:
    clock = Clock()
    case, _ = waiting_screening(clock)
    quiet = clock.now - timedelta(minutes=20)
    findings = found(case, {case.run_id: seen(StateType.RUNNING, silent_since=quiet)}, clock.now)
    assert all(f"unheard since {quiet:%Y-%m-%d %H:%M} UTC" in f.detail for f in findings)
    assert all(f.run_state == "Running" for f in findings)


def test_a_decision_of_a_run_being_replaced_is_left_to_the_new_run(store: Store) -> None:
    """After a repair the step is bound to a new run at once; the waiting request is rebound
    only when that run asks: meanwhile the doctor must not restart the step again."""
    clock = Clock()
    case, key = waiting_screening(clock)
    dead, new = case.run_id, uuid.uuid4()
    open_step(case.ref, Step.VERIFY, flow_run_id=new, now=clock.tick())
    now = clock.now + GRACE * 2
    for state in (StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING):
        known = {dead: seen(StateType.CRASHED), new: seen(state)}
        assert found(case, known, now) == [], state
    known = {dead: seen(StateType.CRASHED), new: seen(StateType.PAUSED, SUSPENDED, pause_key=key)}
    assert found(case, known, now) == []
    # unless the new run died as well
    known = {dead: seen(StateType.CRASHED), new: seen(StateType.CRASHED)}
    assert kinds(found(case, known, now)) == {"decision-without-run", "step-run-lost"}


def test_steps_the_case_left_and_step_4_after_its_run_are_not_findings(store: Store) -> None:
    clock = Clock()
    case = to_implementing(clock)  # step 4 entered; steps 1 to 3 done
    now = clock.now + GRACE * 2
    assert found(case, {case.run_id: seen(StateType.COMPLETED)}, now) == []
    assert found(case, {case.run_id: seen(StateType.RUNNING)}, now) == []
    assert kinds(found(case, {case.run_id: seen(StateType.CRASHED)}, now)) == {"step-run-lost"}
    assert kinds(found(case, {}, now)) == {"step-run-lost"}


def test_a_step_entered_but_never_started_is_found_after_the_grace(store: Store) -> None:
    clock = Clock()
    case = start_sample_case(clock)
    case.decide(DecisionKind.SCREENING)
    case.decide(DecisionKind.SAFETY)
    case.decide(DecisionKind.VERIFICATION)
    assert case.case().state == CaseState.DETERMINING_RESPONSE
    assert found(case, {}, clock.now + GRACE / 2) == []
    [finding] = found(case, {}, clock.now + GRACE * 2)
    assert (finding.kind, finding.step, finding.repair) == ("step-not-started", 2, "start step 2")
    # the reconciler hands it over, audited; the next sweep finds nothing
    prefect = FakePrefect()
    [repair] = reconcile(now=clock.now + GRACE * 2, control=prefect, reader=reader({}))
    assert (repair.step, repair.reason) == (2, "step-not-started")
    [started] = prefect.started.values()
    assert found(case, {started: seen(StateType.SCHEDULED)}, clock.now + GRACE * 2) == []
    assert [e.action for e in repairs_in(case)] == ["reconcile.started"]


def test_a_run_whose_process_is_gone_is_crashed_then_its_step_restarted_once(
    store: Store,
) -> None:
    clock = Clock()
    case, key = waiting_screening(clock)
    zombie = case.run_id
    quiet = clock.now - timedelta(minutes=20)
    known = {zombie: seen(StateType.RUNNING, silent_since=quiet)}
    prefect = FakePrefect()
    [repair] = reconcile(now=clock.tick(), control=prefect, reader=reader(known))
    [new] = prefect.started.values()
    # crashed first: a run opening the step must not find it carried by a live run
    assert prefect.calls == [f"crash {zombie}", "start verify-allegation"]
    assert (repair.step, repair.reason, repair.flow_run_id) == (1, "decision-without-run", new)
    [event] = repairs_in(case)
    assert event.action == "reconcile.restarted"
    assert event.details == {
        "step": 1,
        "reason": "decision-without-run",
        "flow_run_id": str(new),
        "replaced": str(zombie),
        "marked_crashed": [str(zombie)],
    }
    [entry] = rows(StepRun, StepRun.case_id == case.case().id, StepRun.step == 1)
    assert entry.flow_run_id == new and event.subject_id == str(entry.id)

    # the next sweep, before the new run has asked: nothing to repair
    known = {zombie: seen(StateType.CRASHED), new: seen(StateType.SCHEDULED)}
    assert reconcile(now=clock.tick(), control=prefect, reader=reader(known)) == []
    # the new run opens the step and asks: it takes the request over, nothing new is written
    before = case.actions()
    ctx = open_step(case.ref, Step.VERIFY, flow_run_id=new, now=clock.tick())
    assert ctx.active and ctx.entry == entry.entry
    case.run_id = new
    pending = case.prepare(DecisionKind.SCREENING)
    assert (pending.suspend_key, pending.previous_flow_run_id) == (key, zombie)
    known[new] = seen(StateType.PAUSED, SUSPENDED, pause_key=key)
    assert reconcile(now=clock.tick(), control=prefect, reader=reader(known)) == []
    assert case.actions() == before and len(prefect.started) == 1
    # and the decision is taken once, as if nothing had happened
    case.decide(DecisionKind.SCREENING)
    assert case.chain().ok


def test_a_crashed_step_is_restarted_with_a_new_key_each_time_it_dies(store: Store) -> None:
    clock = Clock()
    case, _ = waiting_screening(clock)
    prefect = FakePrefect()
    first_dead = case.run_id
    reconcile(now=clock.tick(), control=prefect, reader=reader({}))
    [first] = prefect.started.values()
    assert prefect.crashed == []  # a deleted run needs no crashing
    reconcile(
        now=clock.tick(),
        control=prefect,
        reader=reader({first_dead: seen(StateType.CRASHED), first: seen(StateType.CRASHED)}),
    )
    assert len(prefect.started) == 2
    assert sorted(k.rsplit("-", 1)[1] for k in prefect.started) == ["1", "2"]
    assert [e.details["replaced"] for e in repairs_in(case)] == [str(first_dead), str(first)]


def test_two_sweeps_repairing_at_once_audit_the_repair_once(store: Store) -> None:
    """Two sweeps that read the case before either audited compute the same repair key, and
    Prefect gives both the same run: one repair, audited once."""
    clock = Clock()
    case, _ = waiting_screening(clock)
    now = clock.tick()
    first = restart_step(case.ref, Step.VERIFY, "step-run-lost", now=now, control=FakePrefect())
    assert first.flow_run_id is not None

    @dataclass
    class SameKey(FakePrefect):
        def start(self, flow: str, case_ref: str, *, idempotency_key: str, step: Step) -> uuid.UUID:
            return first.flow_run_id  # type: ignore[return-value]

    second = restart_step(case.ref, Step.VERIFY, "step-run-lost", now=now, control=SameKey())
    assert second.flow_run_id == first.flow_run_id
    assert len(repairs_in(case)) == 1


def test_a_running_run_is_quiet_only_once_its_state_is_older_than_the_silence() -> None:
    """The reader asks Prefect for heartbeats only of runs whose state is older than that."""
    now = datetime.fromisoformat("2026-11-26T12:00:00+00:00")
    cutoff = now - timedelta(minutes=9)

    def run(kind: StateType, at: datetime) -> FlowRun:
        return FlowRun(flow_id=uuid.uuid4(), state=State(type=kind, timestamp=at))

    old, recent = now - timedelta(minutes=10), now - timedelta(minutes=1)
    assert _quiet_since(run(StateType.RUNNING, old), cutoff) == old
    assert _quiet_since(run(StateType.PENDING, old), cutoff) == old
    assert _quiet_since(run(StateType.RUNNING, recent), cutoff) is None
    for kind in (StateType.PAUSED, StateType.SCHEDULED, StateType.CRASHED, StateType.COMPLETED):
        assert _quiet_since(run(kind, old), cutoff) is None


def test_a_run_is_unheard_since_its_last_heartbeat_or_else_its_state() -> None:
    now = datetime.fromisoformat("2026-11-26T12:00:00+00:00")
    cutoff = now - timedelta(minutes=9)
    started = now - timedelta(hours=2)
    assert unheard_since(started, None, cutoff) == started  # never heard from
    assert unheard_since(started, now - timedelta(minutes=20), cutoff) == now - timedelta(
        minutes=20
    )
    assert unheard_since(started, now - timedelta(minutes=3), cutoff) is None  # beating
    assert unheard_since(None, None, cutoff) is None  # not running: not a question of silence
