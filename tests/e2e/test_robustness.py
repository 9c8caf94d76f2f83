"""Re-entrancy, crashes, lost runs and load, against the session's real server and runner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType

from demo.scripted import ScriptedStakeholders
from flows.prefork import forked_processes
from models.enums import CaseState
from tests.conftest import ROOT
from tests.e2e.conftest import E2E
from tests.e2e.helpers import open_case, wait_for

if TYPE_CHECKING:
    from models.tables import DecisionRequest
    from tasks.monitoring.doctor import Finding
    from tasks.monitoring.reconcile import Repair

pytestmark = [pytest.mark.prefect, pytest.mark.slow]
T = TypeVar("T")


def snapshot(reference: str) -> dict[str, object]:
    """Everything a duplicate would show up in: decisions, requests, outbox, audit, step runs."""
    from sqlmodel import select

    from models.tables import (
        AuditEvent,
        Decision,
        DecisionRequest,
        Notification,
        PlanAction,
        RemediationCase,
        StepRun,
    )
    from tasks.store.db import read_only

    with read_only() as s:
        case = s.exec(select(RemediationCase).where(RemediationCase.reference == reference)).one()
        audit = s.exec(select(AuditEvent).where(AuditEvent.chain == reference)).all()
        return {
            "state": case.state,
            "decisions": sorted(
                (d.kind.value, str(d.request_id))
                for d in s.exec(select(Decision).where(Decision.case_id == case.id))
            ),
            "requests": sorted(
                (r.kind.value, r.round, r.status.value)
                for r in s.exec(select(DecisionRequest).where(DecisionRequest.case_id == case.id))
            ),
            "notifications": sorted(
                n.idempotency_key
                for n in s.exec(select(Notification).where(Notification.case_id == case.id))
            ),
            "audit": Counter((e.action, e.subject_id) for e in audit),
            "step_runs": sorted(
                (r.step, r.entry) for r in s.exec(select(StepRun).where(StepRun.case_id == case.id))
            ),
            "milestones": sorted(
                a.key for a in s.exec(select(PlanAction).where(PlanAction.case_id == case.id))
            ),
        }


def waiting_kind(reference: str) -> str | None:
    from tasks.decisions.requests import waiting_requests
    from tasks.decisions.resume import waiting_run_ready

    waiting = waiting_requests(reference)
    if len(waiting) == 1 and waiting_run_ready(waiting[0]):
        return waiting[0].kind.value
    return None


def start_again(flow: str, reference: str) -> uuid.UUID:
    """Start another run of a step for the same case, as an operator might by mistake."""
    from tasks.orchestration.runs import start_flow

    return start_flow(flow, reference, idempotency_key=f"again-{uuid.uuid4()}", step=None)


def wait_final(run_id: uuid.UUID, timeout: float = 120.0) -> str:
    seen: list[str] = []

    def final() -> str | None:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run_id).state
        seen.append(f"{state.type.value}/{state.name}" if state is not None else "none")
        return state.name if state is not None and state.is_final() else None

    try:
        return str(wait_for(final, timeout, f"run {run_id} to finish"))
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; its states: {' -> '.join(dict.fromkeys(seen))}") from None


def test_running_steps_twice_duplicates_nothing(live: E2E, examples: Path, tmp_path: Path) -> None:
    ref = open_case(examples, tmp_path)
    people = ScriptedStakeholders()
    wait_for(lambda: waiting_kind(ref) == "screening", what="screening to wait")
    people.decide(_waiting(ref))
    wait_for(lambda: waiting_kind(ref) == "safety", what="safety to wait")
    before = snapshot(ref)
    # the entry flow and step 1 run again while step 1's run waits: both do nothing
    for flow in ("remediation-case", "verify-allegation"):
        assert wait_final(start_again(flow, ref)) == "Completed"
    assert snapshot(ref) == before
    assert waiting_kind(ref) == "safety"  # the original run still waits
    # the case goes on as if nothing happened, to step 2 and a repeated step-2 run
    people.drive(ref, until=CaseState.DETERMINING_RESPONSE, timeout=180)
    wait_for(lambda: waiting_kind(ref) == "impact_assessment", what="step 2 to wait")
    before = snapshot(ref)
    assert wait_final(start_again("determine-response", ref)) == "Completed"
    assert wait_final(start_again("verify-allegation", ref)) == "Completed"
    assert snapshot(ref) == before


def _waiting(reference: str):  # type: ignore[no-untyped-def]
    from tasks.decisions.requests import waiting_requests

    [request] = waiting_requests(reference)
    return request


def _flow_run_pids(live: E2E, run_id: uuid.UUID) -> list[int]:
    """Find the processes executing a flow run: the runner forks them and each says so in its
    log (flows/prefork.py); a fresh one has the run's id in its environment."""
    log = (live.stack.home / "logs" / "runner.log").read_text(errors="replace")
    pids = forked_processes(log, str(run_id))
    needle = f"PREFECT__FLOW_RUN_ID={run_id}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


# --- SIGKILL inside each step; the sweep's reconciler is the only repair --------------------------

# Where each step is killed: the decision submitted first (for steps 3 and 4 the previous step's
# last one, whose handover starts the step), whose run is killed, and when.
KILLS: dict[int, tuple[str, str, str]] = {
    1: ("screening", "resumed", "running"),  # before it records: the submission is recovered
    2: ("impact_assessment", "resumed", "recorded"),  # recorded; the next not asked yet
    3: ("response", "entered", "drafted"),  # after the plan draft, before the agreement
    4: ("plan_budget", "entered", "running"),  # before the milestones are activated
    5: ("closure", "resumed", "running"),
    6: ("lessons", "resumed", "running"),
}
NEXT = {1: "safety", 2: "response", 3: "plan_agreement", 5: "closure_confirmation"}
SILENCE = timedelta(seconds=3)  # the doctor's patience in these tests (by default 9 minutes)
_WALK: dict[str, str] = {}  # the one case walking through the six steps, killed once in each


def _poll(predicate: Callable[[], T], timeout: float, what: str, every: float = 0.02) -> T:
    """Poll fast: a kill must land inside a step's work, which takes well under a second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out waiting for {what}")


def _run_state(run_id: uuid.UUID) -> StateType | None:
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
    return state.type if state is not None else None


@contextmanager
def _runner_dead(live: E2E, dead: bool) -> Iterator[None]:
    """Freeze the runner (SIGSTOP) so that nobody reports the run killed meanwhile, as after a
    runner killed with its children; let it go (SIGCONT) at the end whatever happens, for the
    tests after this one."""
    pid = live.stack.processes["runner"].pid
    if dead:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        if dead:
            os.kill(pid, signal.SIGCONT)


def _case_id(ref: str) -> uuid.UUID:
    from tasks.store.cases import get_case
    from tasks.store.db import read_only

    with read_only() as session:
        return get_case(session, ref).id


def _case_state(ref: str) -> CaseState:
    from tasks.store.cases import case_summary

    return case_summary(ref).state


def _decided(ref: str, kind: str) -> bool:
    return kind in {d[0] for d in snapshot(ref)["decisions"]}  # type: ignore[attr-defined]


def _kill_point(ref: str, step: int, run_id: uuid.UUID, when: str) -> Callable[[], bool]:
    """What the kill waits for, read from Prefect or from the store."""
    from models.tables import ActionPlan
    from tests.integration.factories import rows

    if when == "running":
        return lambda: _run_state(run_id) == StateType.RUNNING
    if when == "recorded":
        return lambda: _decided(ref, KILLS[step][0])
    assert when == "drafted"
    return lambda: bool(rows(ActionPlan, ActionPlan.case_id == _case_id(ref)))


def _entry_run(ref: str, step: int) -> uuid.UUID | None:
    """The run the case's entry into a step is bound to (by the handover that started it)."""
    from models.tables import StepRun
    from tests.integration.factories import rows

    found = rows(StepRun, StepRun.case_id == _case_id(ref), StepRun.step == step)
    return found[0].flow_run_id if found else None


def _open_milestones(ref: str) -> bool:
    from demo.scripted import _open_milestones as open_ones

    return _case_state(ref) == CaseState.IMPLEMENTING and bool(open_ones(ref))


def _decide_until(ref: str, kind: str, people: ScriptedStakeholders) -> DecisionRequest:
    """Take the case's decisions as the script says until `kind` waits; return its request."""
    from tasks.decisions.resume import waiting_run_ready

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        waiting = _waiting_or_none(ref)
        if waiting is not None and waiting_run_ready(waiting):
            if waiting.kind.value == kind:
                return waiting
            people.decide(waiting)
        elif waiting is None and _open_milestones(ref):
            people.finish_milestones(ref, "lena.lead")
        else:
            time.sleep(0.3)
    raise TimeoutError(f"{ref}: {kind} never came to wait")


def _submit(request: DecisionRequest) -> None:
    """Submit the script's form as its approver would, without waiting for the outcome."""
    from demo.scripted import SAMPLE_SCRIPT
    from tasks.decisions.resume import issued_code, submit_with_code

    who, values = SAMPLE_SCRIPT[request.kind]
    code = issued_code(request.id, who) or ""
    form = {**values, "approver": who, "approval_code": code}
    submit_with_code(request.id, form, channel="script")


def _findings(ref: str) -> list[Finding]:
    """What the doctor finds for this case, unheard runs counting as dead after SILENCE."""
    from tasks.context import utcnow
    from tasks.monitoring.doctor import diagnose, read_runs

    found = diagnose(now=utcnow(), runs=partial(read_runs, silence=SILENCE))
    return [f for f in found if f.case_ref == ref]


def _kill(live: E2E, ref: str, step: int, request: DecisionRequest) -> tuple[uuid.UUID, Repair]:
    """Submit, SIGKILL the step's run at its kill point, and repair as the next sweep does."""
    from tasks.context import utcnow
    from tasks.monitoring.reconcile import reconcile

    _, how, when = KILLS[step]
    runner_dead = step > 1  # step 1: the runner sees its child die and reports it Crashed
    # the process that suspended the run may still be exiting: only a new one is the resumed run
    exiting = set(_flow_run_pids(live, request.flow_run_id)) if request.flow_run_id else set()
    _submit(request)
    if how == "resumed":
        run_id = request.flow_run_id
    else:
        run_id = _poll(lambda: _entry_run(ref, step), 120, f"step {step}'s run", every=0.1)
    assert run_id is not None
    _poll(lambda: set(_flow_run_pids(live, run_id)) - exiting, 120, f"a process for run {run_id}")
    with _runner_dead(live, runner_dead):
        _poll(_kill_point(ref, step, run_id, when), 60, f"step {step}: {when}")
        pids = _flow_run_pids(live, run_id)
        assert set(pids) - exiting, f"run {run_id} ended before the kill"
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        state = _run_state(run_id)
        assert state in (StateType.RUNNING, StateType.CRASHED), f"the kill came late: {state}"
        expected = "step-run-silent" if runner_dead else "step-run-lost"

        def found() -> list[Finding]:
            return [f for f in _findings(ref) if f.kind == expected]

        [finding] = _poll(found, 60, f"the doctor to find {expected}", every=0.5)
        assert (finding.step, finding.flow_run_id, finding.run_dead) == (
            step,
            run_id,
            runner_dead,
        )
        repairs = reconcile(now=utcnow(), findings=_findings(ref))
        assert [(r.case_ref, r.step) for r in repairs] == [(ref, step)]
        assert repairs[0].flow_run_id not in (None, run_id)
        assert _run_state(run_id) == StateType.CRASHED  # by the reconciler if the runner is dead
    return run_id, repairs[0]


def _new_events(
    before: Counter[tuple[str, str]], after: Counter[tuple[str, str]]
) -> Counter[tuple[str, str]]:
    return Counter({k: n - before.get(k, 0) for k, n in after.items() if n > before.get(k, 0)})


@pytest.mark.parametrize("step", [1, 2, 3, 4, 5, 6], ids=lambda s: f"step{s}")
def test_sigkill_inside_a_step_is_repaired_by_the_next_sweep(
    live: E2E, examples: Path, tmp_path: Path, step: int
) -> None:
    """One case walks through the six steps and, in each, the run at work is SIGKILLed: in step
    1 the runner reports it Crashed; from step 2 on the runner is dead too, so the run would say
    Running for ever. The sweep's reconciler alone brings the case back; nothing is doubled."""
    if "ref" not in _WALK:
        _WALK["ref"] = open_case(examples, tmp_path)
    ref = _WALK["ref"]
    request = _decide_until(ref, KILLS[step][0], ScriptedStakeholders())
    before, mail_from = snapshot(ref), len(live.mail.messages)
    killed, repair = _kill(live, ref, step, request)
    new_run = repair.flow_run_id
    assert new_run is not None

    # the step runs again and reaches its next waiting decision, or its end
    if step in NEXT:
        _poll(lambda: waiting_kind(ref) == NEXT[step], 180, f"{NEXT[step]} to wait", every=0.5)
        assert _waiting(ref).flow_run_id == new_run
    elif step == 4:
        from models.enums import MilestoneStatus
        from models.tables import PlanAction
        from tests.integration.factories import rows

        def activated() -> bool:
            actions = rows(PlanAction, PlanAction.case_id == _case_id(ref))
            return bool(actions) and all(a.status == MilestoneStatus.ACTIVE for a in actions)

        _poll(activated, 180, "the milestones to be activated", every=0.5)
        assert wait_final(new_run) == "Completed"
    else:
        _poll(lambda: _case_state(ref) == CaseState.LESSONS_CAPTURED, 180, "lessons", every=0.5)
    assert _decided(ref, KILLS[step][0])
    assert _findings(ref) == []  # the next sweep has nothing left to repair

    after = snapshot(ref)
    decided = Counter(d[0] for d in after["decisions"])  # type: ignore[attr-defined]
    assert all(n == 1 for n in decided.values()), decided  # one decision per request and kind
    entries = Counter(s for s, _ in after["step_runs"])  # type: ignore[attr-defined]
    assert all(n == 1 for n in entries.values()), entries  # a repair carries the same entry
    milestones: list[str] = after["milestones"]  # type: ignore[assignment]
    assert len(milestones) == len(set(milestones))
    old: Counter[tuple[str, str]] = before["audit"]  # type: ignore[assignment]
    new = _new_events(old, after["audit"])  # type: ignore[arg-type]
    once = {k: n for k, n in new.items() if k[0] != "case.transition"}
    assert all(n == 1 for n in once.values()) and not set(once) & set(old), new
    assert [k[0] for k in once if k[0].startswith("reconcile.")] == ["reconcile.restarted"]
    keys = Counter(str(m["X-Remedy-Key"]) for m in live.mail.messages[mail_from:])
    earlier = {str(m["X-Remedy-Key"]) for m in live.mail.messages[:mail_from]}
    assert all(n == 1 for n in keys.values()) and not set(keys) & earlier, keys
    assert killed != new_run


def _waiting_or_none(reference: str):  # type: ignore[no-untyped-def]
    from tasks.decisions.requests import waiting_requests

    waiting = waiting_requests(reference)
    return waiting[0] if len(waiting) == 1 else None


def test_doctor_lists_a_case_whose_suspended_run_was_deleted(
    live: E2E, examples: Path, tmp_path: Path
) -> None:
    ref = open_case(examples, tmp_path)
    wait_for(lambda: waiting_kind(ref) == "screening", what="screening to wait")
    run_id = _waiting(ref).flow_run_id
    assert run_id is not None
    env = os.environ | {"PREFECT_API_URL": live.stack.api_url}
    doctor = [sys.executable, "-m", "flows.cli", "doctor", "--json"]

    def findings() -> list[dict[str, object]]:
        proc = subprocess.run(
            doctor, capture_output=True, text=True, env=env, cwd=ROOT, check=False
        )
        rows: list[dict[str, object]] = json.loads(proc.stdout)
        assert proc.returncode == (1 if rows else 0), proc.stderr
        return [r for r in rows if r["case_ref"] == ref]

    assert findings() == []
    with get_client(sync_client=True) as client:
        client.delete_flow_run(run_id)
    found = findings()
    kinds = {f["kind"] for f in found}
    assert "decision-without-run" in kinds and "step-run-lost" in kinds
    assert all(f["flow_run_id"] == str(run_id) and f["step"] == 1 for f in found)

    # running the step again repairs it: a new run waits for the same decision
    again = start_again("verify-allegation", ref)
    wait_for(lambda: waiting_kind(ref) == "screening", what="screening to wait again")
    assert _waiting(ref).flow_run_id == again
    assert findings() == []
    people = ScriptedStakeholders()
    people.decide(_waiting(ref))
    wait_for(lambda: waiting_kind(ref) == "safety", what="safety to wait")


def test_a_run_killed_while_suspending_is_found_and_replaced(
    live: E2E, examples: Path, tmp_path: Path
) -> None:
    """Prefect sets a run Suspended and only then saves its form (the run input schema): a run
    killed between the two waits on the right key for ever and every submission is refused
    ("Run input schema not found"). Here the form is deleted as that kill would leave it."""
    from tasks.context import utcnow
    from tasks.decisions.resume import SubmitFailedError, waiting_run_ready
    from tasks.monitoring.doctor import diagnose, read_runs
    from tasks.monitoring.reconcile import reconcile

    ref = open_case(examples, tmp_path)
    wait_for(lambda: waiting_kind(ref) == "screening", what="screening to wait")
    request = _waiting(ref)
    run_id = request.flow_run_id
    assert run_id is not None and waiting_run_ready(request)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        assert run.state is not None and run.state.state_details.run_input_keyset
        client.delete_flow_run_input(run_id, run.state.state_details.run_input_keyset["schema"])

    # a submission waits for the form, then says where to look, instead of Prefect's refusal
    assert not waiting_run_ready(request)
    from demo.scripted import SAMPLE_SCRIPT
    from tasks.decisions.resume import issued_code, submit_with_code

    who, values = SAMPLE_SCRIPT[request.kind]
    form = {**values, "approver": who, "approval_code": issued_code(request.id, who) or ""}
    with pytest.raises(SubmitFailedError, match="remedy doctor"):
        submit_with_code(request.id, form, channel="script", wait_seconds=2)

    def findings() -> list[Finding]:
        reader = partial(read_runs, silence=SILENCE, form_grace=timedelta(0))
        return [f for f in diagnose(now=utcnow(), runs=reader) if f.case_ref == ref]

    [finding] = findings()
    assert (finding.kind, finding.flow_run_id, finding.run_dead) == (
        "decision-without-run",
        run_id,
        True,
    )
    [repair] = reconcile(now=utcnow(), findings=findings())
    assert _run_state(run_id) == StateType.CRASHED
    new_run = repair.flow_run_id
    _poll(lambda: _waiting(ref).flow_run_id == new_run, 180, "the new run to ask", every=0.5)
    assert findings() == []
    ScriptedStakeholders().decide(_waiting(ref))
    wait_for(lambda: waiting_kind(ref) == "safety", what="safety to wait")
