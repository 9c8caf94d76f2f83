"""The reconciler: repair what `remedy doctor` finds (docs/architecture.md, Crash recovery).

Each (case, step) in disagreement is repaired once per sweep: a pending entry is handed over;
a case left at intake gets its entry run; anything else gets a fresh run of the step, after any
run whose process is gone is marked Crashed. Every repair is audited once; the restarted step
finds its work done in the store.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Protocol

from pydantic import BaseModel
from sqlmodel import Session, col, func, select

from models.enums import Step, StepRunStatus
from models.tables import AuditEvent, StepRun
from tasks.monitoring.doctor import CASE_STARTED, Finding, RunReader, diagnose, read_runs
from tasks.orchestration import runs
from tasks.orchestration.deployments import STEP_DEPLOYMENTS
from tasks.store.audit import append_audit
from tasks.store.cases import get_case
from tasks.store.db import unit_of_work

RECONCILER = "system:reconciler"


class Repair(BaseModel):
    """One repair: which case and step, why, and the run that now carries the step."""

    case_ref: str
    step: int
    reason: str
    flow_run_id: uuid.UUID | None


class RunControl(Protocol):
    """What the reconciler asks of Prefect (tests pass a fake of this port)."""

    def start(
        self, flow: str, case_ref: str, *, idempotency_key: str, step: Step | None
    ) -> uuid.UUID:
        """Create a run of a deployment (step None: the entry); a repeated key: the same run."""

    def crash(self, flow_run_id: uuid.UUID, *, why: str) -> bool:
        """Mark a run whose process is gone Crashed; say whether it was changed."""

    def hand_over(self, case_ref: str, *, now: datetime) -> str | None:
        """Start the pending entry of the step the case is in (tasks/orchestration/runs.py)."""


class PrefectRuns:
    """The reconciler's port to the Prefect API."""

    def start(
        self, flow: str, case_ref: str, *, idempotency_key: str, step: Step | None
    ) -> uuid.UUID:
        return runs.start_flow(flow, case_ref, idempotency_key=idempotency_key, step=step)

    def crash(self, flow_run_id: uuid.UUID, *, why: str) -> bool:
        return runs.mark_crashed(flow_run_id, why=why)

    def hand_over(self, case_ref: str, *, now: datetime) -> str | None:
        return runs.hand_over(case_ref, now=now)


def restart_step(
    case_ref: str,
    step: Step,
    reason: str,
    *,
    now: datetime,
    control: RunControl | None = None,
    crashed: list[uuid.UUID] | None = None,
) -> Repair:
    """Start a fresh run of a case's current step and bind the step to it (audited once)."""
    control = control or PrefectRuns()
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        entry = session.exec(
            select(StepRun)
            .where(StepRun.case_id == case.id, StepRun.step == int(step))
            .order_by(col(StepRun.entry).desc())
        ).first()
        earlier = session.exec(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.chain == case_ref, AuditEvent.action == "reconcile.restarted")
        ).one()
    entry_no = entry.entry if entry else 0
    replaced = entry.flow_run_id if entry else None
    key = f"{case_ref.lower()}-step-{int(step)}-entry-{entry_no}-repair-{earlier + 1}"
    run_id = control.start(STEP_DEPLOYMENTS[step].name, case_ref, idempotency_key=key, step=step)
    repair = Repair(case_ref=case_ref, step=int(step), reason=reason, flow_run_id=run_id)
    with unit_of_work() as session:
        get_case(session, case_ref, lock=True)
        if _audited(session, case_ref, run_id):
            return repair  # a sweep at the same moment made this very repair (same key)
        row = session.get(StepRun, entry.id) if entry is not None else None
        if row is not None:
            row.flow_run_id, row.status = run_id, StepRunStatus.STARTED
            row.started_at = row.started_at or now
            session.add(row)
        append_audit(
            session,
            chain=case_ref,
            actor=RECONCILER,
            action="reconcile.restarted",
            at=now,
            subject_type="step_run",
            subject_id=str(row.id) if row is not None else None,
            details={
                "step": int(step),
                "reason": reason,
                "flow_run_id": str(run_id),
                "replaced": str(replaced) if replaced else None,
                "marked_crashed": sorted(str(r) for r in crashed or []),
            },
        )
    return repair


def _audited(
    session: Session, case_ref: str, run_id: uuid.UUID, *, action: str = "reconcile.restarted"
) -> bool:
    """Tell whether a repair onto this run is in the case's audit chain already."""
    restarts = session.exec(
        select(AuditEvent).where(AuditEvent.chain == case_ref, AuditEvent.action == action)
    ).all()
    return any(e.details.get("flow_run_id") == str(run_id) for e in restarts)


def reconcile(
    *,
    now: datetime,
    findings: list[Finding] | None = None,
    control: RunControl | None = None,
    reader: RunReader = read_runs,
) -> list[Repair]:
    """Repair each (case, step) the doctor finds in disagreement, once per sweep."""
    control = control or PrefectRuns()
    findings = diagnose(now=now, runs=reader) if findings is None else findings
    groups: dict[tuple[str, int], list[Finding]] = {}
    for finding in findings:
        groups.setdefault((finding.case_ref, finding.step), []).append(finding)
    repairs = []
    for (case_ref, step_no), found in groups.items():
        repair = _repair(case_ref, Step(step_no), found, now=now, control=control)
        if repair is not None:
            repairs.append(repair)
    return repairs


def _repair(
    case_ref: str, step: Step, found: list[Finding], *, now: datetime, control: RunControl
) -> Repair | None:
    """Repair one case's step: hand a pending entry over, or crash what is dead and restart."""
    kinds = {f.kind for f in found}
    if kinds == {"case-not-started"}:
        return start_case(case_ref, now=now, control=control)
    if kinds == {"step-not-started"} and step != Step.LESSONS:
        started = control.hand_over(case_ref, now=now)
        if not started:
            return None  # someone started it in the meantime
        with unit_of_work() as session:
            append_audit(
                session,
                chain=case_ref,
                actor=RECONCILER,
                action="reconcile.started",
                at=now,
                details={"step": int(step), "flow": started},
            )
        return Repair(
            case_ref=case_ref, step=int(step), reason="step-not-started", flow_run_id=None
        )
    # a run whose process is gone must be final before a new run opens the step, or the new
    # run would find the step carried by a live run and end at once
    dead = {f.flow_run_id for f in found if f.run_dead and f.flow_run_id is not None}
    why = "its process is gone: no heartbeat, or killed while suspending (Remedy's reconciler)"
    crashed = [r for r in sorted(dead, key=str) if control.crash(r, why=why)]
    return restart_step(case_ref, step, found[0].kind, now=now, control=control, crashed=crashed)


def start_case(case_ref: str, *, now: datetime, control: RunControl) -> Repair | None:
    """Start the entry run of a case left at intake (audited once per run started).

    The first repair uses the key intake uses, so a run that was created after all (its answer
    lost) is found again rather than doubled; a repair after a run that ended without moving
    the case draws a fresh key. Two sweeps at once get the same run and audit it once.
    """
    with unit_of_work() as session:
        earlier = session.exec(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.chain == case_ref, AuditEvent.action == CASE_STARTED)
        ).one()
    key = f"{case_ref.lower()}-{runs.ENTRY_FLOW}" + (f"-repair-{earlier}" if earlier else "")
    run_id = control.start(runs.ENTRY_FLOW, case_ref, idempotency_key=key, step=None)
    with unit_of_work() as session:
        get_case(session, case_ref, lock=True)
        if _audited(session, case_ref, run_id, action=CASE_STARTED):
            return None  # a sweep at the same moment made this very repair (same key)
        append_audit(
            session,
            chain=case_ref,
            actor=RECONCILER,
            action=CASE_STARTED,
            at=now,
            details={"step": int(Step.VERIFY), "flow_run_id": str(run_id), "key_repair": earlier},
        )
    return Repair(
        case_ref=case_ref, step=int(Step.VERIFY), reason="case-not-started", flow_run_id=run_id
    )
