"""The reconciler: repair what `remedy doctor` finds (docs/architecture.md, Crash recovery).

Every repair is audited.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel
from sqlmodel import col, func, select

from models.enums import Step, StepRunStatus
from models.tables import AuditEvent, StepRun
from tasks.monitoring.doctor import Finding, diagnose
from tasks.orchestration.deployments import STEP_DEPLOYMENTS
from tasks.orchestration.runs import hand_over, start_flow
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


def restart_step(case_ref: str, step: Step, reason: str, *, now: datetime) -> Repair:
    """Start a fresh run of a case's current step and bind the step to it (audited)."""
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
    key = f"{case_ref.lower()}-step-{int(step)}-entry-{entry_no}-repair-{earlier + 1}"
    run_id = start_flow(STEP_DEPLOYMENTS[step].name, case_ref, idempotency_key=key, step=step)
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        if entry is not None:
            row = session.get(StepRun, entry.id)
            assert row is not None
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
            subject_id=str(entry.id) if entry else None,
            details={"step": int(step), "reason": reason, "flow_run_id": str(run_id)},
        )
    return Repair(case_ref=case_ref, step=int(step), reason=reason, flow_run_id=run_id)


def reconcile(*, now: datetime, findings: list[Finding] | None = None) -> list[Repair]:
    """Repair each (case, step) the doctor finds in disagreement, once per sweep."""
    findings = diagnose(now=now) if findings is None else findings
    repairs: list[Repair] = []
    done: set[tuple[str, int]] = set()
    for finding in findings:
        target = (finding.case_ref, finding.step)
        if target in done:
            continue
        done.add(target)
        step = Step(finding.step)
        if finding.kind == "step-not-started" and step != Step.LESSONS:
            started = hand_over(finding.case_ref, now=now)
            if started:
                with unit_of_work() as session:
                    append_audit(
                        session,
                        chain=finding.case_ref,
                        actor=RECONCILER,
                        action="reconcile.started",
                        at=now,
                        details={"step": int(step), "flow": started},
                    )
                repairs.append(
                    Repair(
                        case_ref=finding.case_ref,
                        step=int(step),
                        reason=finding.kind,
                        flow_run_id=None,
                    )
                )
            continue
        repairs.append(restart_step(finding.case_ref, step, finding.kind, now=now))
    return repairs
