"""IOM step 4, implement and monitor the plan: milestones activated and assigned, progress
reported by their owners, verified or waived by the case lead, due dates extended. Step 4 asks
no decision of its own; the last settled milestone moves the case to closure.

Consent is each person's own: the actions for a person whose case-handling consent stands
withdrawn are `held` (not reminded, not updated, only waived), and resume when they renew it;
the actions for the others, and the case's own, go on.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session, col, select

from models.enums import (
    CaseEvent,
    CaseState,
    ConsentPurpose,
    LinkPurpose,
    MilestoneStatus,
    NotificationEvent,
    PlanStatus,
    Role,
    Step,
    StepRunStatus,
)
from models.settings import get_settings
from models.tables import (
    AffectedPerson,
    AuditEvent,
    PlanAction,
    ProgressUpdate,
    RemediationCase,
    Stakeholder,
)
from notifications.outbox import notify
from tasks.actors import Operator
from tasks.case_state import (
    CLOSED_MILESTONES,
    SYSTEM,
    current_plan,
    latest_step_run,
    milestone_summary,
    move,
)
from tasks.context import current_routing
from tasks.reports.case_view import republishes
from tasks.store.audit import append_audit
from tasks.store.cases import get_case
from tasks.store.consent import withdrawn_people
from tasks.store.db import unit_of_work
from tasks.store.directory import members_of
from tasks.store.ledger_view import action_owed, by_action, unsettled_note
from tasks.store.links import create_link
from tasks.store.sealed import seal_text


def milestone_notice(
    session: Session,
    case: RemediationCase,
    action: PlanAction,
    owner: Stakeholder,
    *,
    event: NotificationEvent,
    key: str,
    now: datetime,
    extra: dict[str, Any] | None = None,
    progress_link: bool = True,
) -> None:
    """Tell a milestone's owner (and whoever the routing adds) about it, with a progress link."""
    private: dict[uuid.UUID, dict[str, Any]] = {}
    if progress_link:  # a settled milestone takes no more reports: its notice has no link
        link = create_link(
            session,
            purpose=LinkPurpose.PROGRESS,
            case_id=case.id,
            stakeholder_id=owner.id,
            action_id=action.id,
            now=now,
            expires_at=now + timedelta(days=get_settings().progress_link_days),
        )
        private = {owner.id: {"link_id": str(link.id)}}
    person = session.get(AffectedPerson, action.person_id) if action.person_id else None
    notify(
        session,
        routing=current_routing(),
        event=event,
        case=case,
        key=key,
        now=now,
        owner=owner,
        private=private,
        mentions=[person.pseudonym] if person else [],
        context={
            "case_ref": case.reference,
            "step": case.step,
            "milestone": action.key,
            "title": action.title,
            "due_on": action.due_on.isoformat(),
            "verification_method": action.verification_method,
            "amount": action_owed(by_action(session, action)),  # (amounts, persons) or None
            **(extra or {}),
        },
    )


def activate_plan(case_ref: str, *, now: datetime) -> int:
    """Activate the approved plan's milestones and tell their owners (once)."""
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        plan = current_plan(session, case.id, PlanStatus.APPROVED)
        if plan is None or case.state != CaseState.IMPLEMENTING:
            return 0
        planned = session.exec(
            select(PlanAction).where(
                PlanAction.plan_id == plan.id, PlanAction.status == MilestoneStatus.PLANNED
            )
        ).all()
        withdrawn = _withdrawn_ids(session, case)
        held = [a for a in planned if a.person_id in withdrawn]
        for action in planned:
            if action.person_id in withdrawn:
                # their consent stands withdrawn: nothing starts for them, nobody is told
                action.status, action.status_changed_at = MilestoneStatus.HELD, now
                session.add(action)
                continue
            action.status, action.status_changed_at = MilestoneStatus.ACTIVE, now
            session.add(action)
            _assign(session, case, action, key=f"milestone-assigned:{action.id}", now=now)
        entry = latest_step_run(session, case.id, int(Step.IMPLEMENT))
        if entry is not None and entry.status != StepRunStatus.FINISHED:
            # step 4's run has done its part; the monitoring sweep carries the step from here
            entry.status, entry.finished_at = StepRunStatus.FINISHED, now
            session.add(entry)
        if planned:
            append_audit(
                session,
                chain=case.reference,
                actor=SYSTEM,
                action="plan.activated",
                at=now,
                subject_type="action_plan",
                subject_id=str(plan.id),
                details={
                    "version": plan.version,
                    "milestones": [a.key for a in planned if a.person_id not in withdrawn],
                    **({"held": [a.key for a in held]} if held else {}),
                },
            )
        return len(planned) - len(held)


NOTICE_OF = {MilestoneStatus.VERIFIED: NotificationEvent.MILESTONE_VERIFIED}  # else assigned


def _assign(
    session: Session, case: RemediationCase, action: PlanAction, *, key: str, now: datetime
) -> None:
    """Tell a milestone's owner it is theirs, or that it was verified (once per key)."""
    owner = session.get(Stakeholder, action.owner_id) if action.owner_id else None
    if owner is not None:
        milestone_notice(
            session,
            case,
            action,
            owner,
            event=NOTICE_OF.get(action.status, NotificationEvent.MILESTONE_ASSIGNED),
            key=key,
            now=now,
            progress_link=action.status not in CLOSED_MILESTONES,
        )


def _withdrawn_ids(session: Session, case: RemediationCase) -> set[uuid.UUID]:
    """Return the ids of the case's persons whose case-handling consent stands withdrawn."""
    names = withdrawn_people(session, case.id, [ConsentPurpose.CASE_HANDLING])
    if not names:
        return set()
    return set(
        session.exec(
            select(AffectedPerson.id).where(
                AffectedPerson.case_id == case.id, col(AffectedPerson.pseudonym).in_(names)
            )
        ).all()
    )


# Where a person's action may be held from: not yet settled, in the plan in force.
HOLDABLE = (MilestoneStatus.PLANNED, MilestoneStatus.ACTIVE, MilestoneStatus.DONE)


def _person_actions(
    session: Session,
    case: RemediationCase,
    person: AffectedPerson,
    statuses: tuple[MilestoneStatus, ...],
) -> list[PlanAction]:
    plan = current_plan(session, case.id, PlanStatus.APPROVED)
    if plan is None:
        return []
    return list(
        session.exec(
            select(PlanAction)
            .where(
                PlanAction.plan_id == plan.id,
                PlanAction.person_id == person.id,
                col(PlanAction.status).in_(statuses),
            )
            .order_by(col(PlanAction.key))
        ).all()
    )


def hold_person_actions(
    session: Session, case: RemediationCase, person: AffectedPerson, *, now: datetime
) -> list[str]:
    """Hold the open actions for one person in the plan in force (caller's unit of work).

    A draft's actions stay planned: activation holds them if the consent still stands withdrawn.
    Returns the keys held.
    """
    held = _person_actions(session, case, person, HOLDABLE)
    for action in held:
        action.status, action.status_changed_at = MilestoneStatus.HELD, now
        session.add(action)
    return [a.key for a in held]


def resume_person_actions(
    session: Session, case: RemediationCase, person: AffectedPerson, *, now: datetime
) -> list[str]:
    """Resume one person's held actions after their renewal (caller's unit of work).

    An action whose owner last reported it done is done again (awaiting verification). Any other
    is active again if the plan was activated already (activation never comes back to it), its
    owner told at once if the case implements the plan; else it is planned, for activation.
    Returns the keys resumed.
    """
    resumed = _person_actions(session, case, person, (MilestoneStatus.HELD,))
    activated = _activated(session, case, resumed)
    for action in resumed:
        last = session.exec(
            select(ProgressUpdate.status)
            .where(ProgressUpdate.action_id == action.id)
            .order_by(col(ProgressUpdate.reported_at).desc())
        ).first()
        if last == MilestoneStatus.DONE:
            action.status = MilestoneStatus.DONE
        elif activated:
            action.status = MilestoneStatus.ACTIVE
        else:
            action.status = MilestoneStatus.PLANNED
        action.status_changed_at = now
        session.add(action)
        if action.status == MilestoneStatus.ACTIVE and case.state == CaseState.IMPLEMENTING:
            key = f"milestone-resumed:{action.id}:{now.isoformat()}"
            _assign(session, case, action, key=key, now=now)
    return [a.key for a in resumed]


def _activated(session: Session, case: RemediationCase, actions: list[PlanAction]) -> bool:
    """Tell whether the plan these actions belong to was activated (step 4 did its part)."""
    if not actions:
        return False
    return (
        session.exec(
            select(AuditEvent.id).where(
                AuditEvent.chain == case.reference,
                AuditEvent.action == "plan.activated",
                AuditEvent.subject_id == str(actions[0].plan_id),
            )
        ).first()
        is not None
    )


class MilestoneUpdateError(Exception):
    """A milestone update is not allowed; the message says why."""


class MilestoneResult(BaseModel):
    case_ref: str
    key: str
    status: MilestoneStatus
    open_milestones: int
    plan_completed: bool


@republishes
def update_milestone(
    case_ref: str,
    key: str,
    *,
    status: MilestoneStatus,
    by: str,
    now: datetime,
    note: str = "",
    evidence: list[str] | None = None,
    idempotency_key: str | None = None,
    operator: Operator | None = None,
) -> MilestoneResult:
    """Record progress on a milestone; the case lead verifies or waives; the last one closes."""
    evidence = [e.strip()[:200] for e in (evidence or []) if e.strip()]
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        if idempotency_key:
            seen = session.exec(
                select(ProgressUpdate).where(ProgressUpdate.idempotency_key == idempotency_key)
            ).first()
            if seen is not None:
                seen_action = session.get(PlanAction, seen.action_id)
                if seen.case_id != case.id or seen_action is None or seen_action.key != key:
                    raise MilestoneUpdateError("this update key was used for another milestone")
                return _milestone_result(session, case, key, seen.status)
        if case.state != CaseState.IMPLEMENTING:
            raise MilestoneUpdateError(f"{case_ref} is {case.state.value}, not implementing a plan")
        action = _open_milestone(session, case, key, settled_too=True)
        person = session.exec(select(Stakeholder).where(Stakeholder.key == by)).first()
        if person is None:
            raise MilestoneUpdateError(f"unknown stakeholder {by}")
        leads = {s.id for s in members_of(session, case.id, Role.CASE_LEAD)}
        is_owner, is_lead = action.owner_id == person.id, person.id in leads
        if status in (MilestoneStatus.VERIFIED, MilestoneStatus.WAIVED) and not is_lead:
            raise MilestoneUpdateError("only the case lead verifies or waives a milestone")
        if status in (MilestoneStatus.ACTIVE, MilestoneStatus.DONE) and not (is_owner or is_lead):
            raise MilestoneUpdateError(
                "only the milestone's owner or the case lead reports progress"
            )
        if status in (MilestoneStatus.PLANNED, MilestoneStatus.HELD, MilestoneStatus.CANCELLED):
            raise MilestoneUpdateError(f"a milestone cannot be set to {status.value}")
        if status == MilestoneStatus.WAIVED and not note.strip():
            raise MilestoneUpdateError("waiving a milestone needs a reason (--note)")
        if status == MilestoneStatus.VERIFIED and not (evidence or action.evidence_refs):
            raise MilestoneUpdateError("verifying a milestone needs evidence (--evidence)")
        if status == MilestoneStatus.VERIFIED and (owing := unsettled_note(session, action)):
            raise MilestoneUpdateError(owing)  # a financial milestone: docs/domain.md, ledger
        if action.status in CLOSED_MILESTONES:
            raise MilestoneUpdateError(f"milestone {key} is {action.status.value} already")
        if action.status == MilestoneStatus.HELD and status != MilestoneStatus.WAIVED:
            # the person it is for withdrew consent: it may only be given up (with a reason)
            raise MilestoneUpdateError(
                f"milestone {key} is held: consent for it stands withdrawn until renewed"
            )
        session.add(
            ProgressUpdate(
                action_id=action.id,
                case_id=case.id,
                reported_by_id=person.id,
                reported_at=now,
                status=status,
                note=seal_text(session, case.id, note.strip()[:4000]),
                evidence_refs=evidence,
                idempotency_key=idempotency_key,
            )
        )
        action.status, action.status_changed_at = status, now
        action.evidence_refs = [*action.evidence_refs, *evidence]
        if status == MilestoneStatus.WAIVED:
            action.waived_reason = seal_text(session, case.id, note.strip()[:2000])
        session.add(action)
        session.flush()
        append_audit(
            session,
            chain=case.reference,
            actor=f"stakeholder:{person.key}",
            action="milestone.updated",
            at=now,
            subject_type="plan_action",
            subject_id=str(action.id),
            details={"milestone": key, "status": status.value, "evidence": len(evidence)}
            | (operator.audit_details() if operator else {}),
        )
        if status == MilestoneStatus.VERIFIED:  # its owner hears that their work was accepted
            _assign(session, case, action, key=f"milestone-verified:{action.id}", now=now)
        summary = milestone_summary(session, case.id)
        if summary.total and summary.open == 0:
            move(session, case, CaseEvent.PLAN_COMPLETED, now=now, actor=f"stakeholder:{by}")
        return _milestone_result(session, case, key, status)


def _milestone_result(
    session: Session, case: RemediationCase, key: str, status: MilestoneStatus
) -> MilestoneResult:
    summary = milestone_summary(session, case.id)
    return MilestoneResult(
        case_ref=case.reference,
        key=key,
        status=status,
        open_milestones=summary.open,
        plan_completed=case.state != CaseState.IMPLEMENTING and summary.open == 0,
    )


def _open_milestone(
    session: Session, case: RemediationCase, key: str, *, settled_too: bool = False
) -> PlanAction:
    plan = current_plan(session, case.id, PlanStatus.APPROVED)
    action = None
    if plan is not None:
        action = session.exec(
            select(PlanAction).where(PlanAction.plan_id == plan.id, PlanAction.key == key)
        ).first()
    if action is None:
        raise MilestoneUpdateError(f"{case.reference} has no milestone {key} in its approved plan")
    if action.status in CLOSED_MILESTONES and not settled_too:
        raise MilestoneUpdateError(f"milestone {key} is {action.status.value} already")
    return action


@republishes
def request_extension(
    case_ref: str,
    key: str,
    *,
    to: date,
    reason: str,
    by: str,
    now: datetime,
    operator: Operator | None = None,
) -> None:
    """Ask for a later due date (the milestone's owner, with a reason); the case lead decides."""
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        action = _open_milestone(session, case, key)
        person = session.exec(select(Stakeholder).where(Stakeholder.key == by)).first()
        if person is None or person.id != action.owner_id:
            raise MilestoneUpdateError("only the milestone's owner asks for an extension")
        if to <= action.due_on:
            raise MilestoneUpdateError(f"the new date must be after {action.due_on}")
        if not reason.strip():
            raise MilestoneUpdateError("an extension needs a reason (--reason)")
        action.extension_due_on, action.extension_requested_by_id = to, person.id
        action.extension_reason = seal_text(session, case.id, reason.strip()[:2000])
        session.add(action)
        append_audit(
            session,
            chain=case.reference,
            actor=f"stakeholder:{by}",
            action="milestone.extension_requested",
            at=now,
            subject_type="plan_action",
            subject_id=str(action.id),
            details={"milestone": key, "from": str(action.due_on), "to": str(to)}
            | (operator.audit_details() if operator else {}),
        )


@republishes
def decide_extension(
    case_ref: str,
    key: str,
    *,
    approve: bool,
    by: str,
    now: datetime,
    reason: str = "",
    operator: Operator | None = None,
) -> date:
    """The case lead approves (the due date moves; reminders follow it) or refuses; audited."""
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        action = _open_milestone(session, case, key)
        leads = {p.key for p in members_of(session, case.id, Role.CASE_LEAD)}
        if by not in leads:
            raise MilestoneUpdateError("only the case lead approves or refuses an extension")
        if action.extension_due_on is None:
            raise MilestoneUpdateError(f"nobody asked to extend milestone {key}")
        if not approve and not reason.strip():
            raise MilestoneUpdateError("refusing an extension needs a reason (--reason)")
        before, asked = action.due_on, action.extension_due_on
        if approve:
            action.due_on = asked
        action.extension_due_on = action.extension_reason = action.extension_requested_by_id = None
        session.add(action)
        append_audit(
            session,
            chain=case.reference,
            actor=f"stakeholder:{by}",
            action="milestone.extended" if approve else "milestone.extension_refused",
            at=now,
            subject_type="plan_action",
            subject_id=str(action.id),
            details={"milestone": key, "from": str(before), "to": str(asked)}
            | (operator.audit_details() if operator else {}),
        )
        return action.due_on


def move_to_closure(case_ref: str, *, now: datetime, actor: str) -> bool:
    """Move a case whose plan is complete to closure (False if it moved already)."""
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        if case.state != CaseState.IMPLEMENTING:
            return False
        move(session, case, CaseEvent.PLAN_COMPLETED, now=now, actor=actor)
        return True
