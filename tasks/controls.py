"""Case controls: the lifecycle's roads that no step decision takes.

A victim withdraws consent (their actions hold; the case holds when nobody's consent stands, or the
policy says any withdrawal holds it) or renews it (what was held resumes); the
case lead and the victim representative revise a plan under way; management closes a case early,
unresolved or after a withdrawal; a closed case is reopened. Each is one unit of work: the
transition, the consent records, the audit events and the cancelled requests of the step left
behind. The caller then starts the step the case is in now (`tasks.orchestration.runs.hand_over`)
and cancels the runs that were waiting on those requests; if it cannot reach Prefect, the monitoring
sweep starts the step and a resumed stale run ends without effect.

Re-entering a step (after a hold, a revision or a reopening) is a new entry: its decisions are asked
again, since circumstances changed in between. Reasons are stored, never shown in messages.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel
from sqlmodel import Session, col, select

from models.enums import (
    CaseEvent,
    CaseState,
    ConsentMethod,
    ConsentPurpose,
    Role,
)
from models.lifecycle import RESUMABLE_STATES, TransitionNotAllowed, possible_events
from models.tables import (
    AffectedPerson,
    ConsentRecord,
    RemediationCase,
    Stakeholder,
)
from tasks.actors import Operator
from tasks.case_state import move
from tasks.context import current_policy
from tasks.decisions.requests import cancel_waiting
from tasks.steps.implement import hold_person_actions, resume_person_actions
from tasks.store.audit import append_audit
from tasks.store.cases import get_case
from tasks.store.consent import case_may_work, withdrawn_people
from tasks.store.db import unit_of_work
from tasks.store.directory import acting_member, given_reason
from tasks.store.sealed import seal_text

REASON_LIMIT = 2000


class ControlError(Exception):
    """A control is not allowed now or not by this person; the message says why."""


class ControlResult(BaseModel):
    """Where the case is now, and the runs left waiting on decisions that were cancelled."""

    case_ref: str
    state: CaseState
    moved: bool
    stale_runs: list[uuid.UUID] = []
    # the milestones (keys) a consent control held or resumed for the person
    milestones: list[str] = []


def _person(
    session: Session, case: RemediationCase, key: str, roles: tuple[Role, ...], what: str
) -> Stakeholder:
    """Return the active stakeholder `key` if they hold one of `roles` on the case."""
    return acting_member(session, case, key, roles, what, ControlError)


def _reason(reason: str, what: str) -> str:
    return given_reason(reason, what, limit=REASON_LIMIT, error=ControlError)


def _move(
    session: Session,
    case: RemediationCase,
    event: CaseEvent,
    *,
    now: datetime,
    by: str,
    why: str,
    **facts: object,
) -> list[uuid.UUID]:
    """Leave the current step by `event`: cancel what waits in it, then move (or explain)."""
    if event not in possible_events(case.state):
        raise ControlError(f"{case.reference} is {case.state.value}: it cannot be {why} now")
    actor = f"stakeholder:{by}"
    stale = cancel_waiting(session, case, now=now, actor=actor, why=why)
    try:
        move(session, case, event, now=now, actor=actor, **facts)
    except TransitionNotAllowed as exc:
        raise ControlError(exc.reason) from None
    return stale


def _audit(
    session: Session,
    case: RemediationCase,
    by: str,
    action: str,
    now: datetime,
    subject: AffectedPerson | None = None,
    operator: Operator | None = None,
    **details: object,
) -> None:
    """Audit a control on the case's chain; about the case, or about one affected person.

    The actor is the person in whose name the control is taken; from the command line, the
    details add who typed it (their operating-system account and stakeholder key).
    """
    append_audit(
        session,
        chain=case.reference,
        actor=f"stakeholder:{by}",
        action=action,
        at=now,
        subject_type="affected_person" if subject else "case",
        subject_id=str(subject.id if subject else case.id),
        details={
            **details,
            # a typed reason is free text: sealed with the case's key (docs/security.md)
            **(
                {"reason": seal_text(session, case.id, str(details["reason"]))}
                if "reason" in details
                else {}
            ),
            **(operator.audit_details() if operator else {}),
        },
    )


def _affected(session: Session, case: RemediationCase, pseudonym: str) -> AffectedPerson:
    person = session.exec(
        select(AffectedPerson).where(
            AffectedPerson.case_id == case.id, AffectedPerson.pseudonym == pseudonym
        )
    ).first()
    if person is None:
        raise ControlError(f"{case.reference} has no affected person {pseudonym}")
    return person


def withdraw_consent(
    case_ref: str,
    pseudonym: str,
    *,
    purpose: ConsentPurpose,
    by: str,
    now: datetime,
    operator: Operator | None = None,
) -> ControlResult:
    """Record that a person withdrew consent for a purpose; for case handling, hold what is theirs.

    Withdrawal is the person's right: whoever in the directory records it, it is recorded.
    Messages that mention the person are suppressed from now on (tasks.drain checks). For case
    handling, the actions for the person are held (the monitoring sweep leaves them alone) and the
    plan goes on for the others; the whole case holds only when nobody's case-handling consent
    stands any more, or the policy holds the whole case on any withdrawal. Then the held step's
    waiting decisions are cancelled, so nobody is asked or reminded while the case holds.
    """
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        person = _affected(session, case, pseudonym)
        recorder = session.exec(select(Stakeholder).where(Stakeholder.key == by)).first()
        if recorder is None or not recorder.active:
            raise ControlError(f"there is no active stakeholder {by}")  # the audit names a person
        records = session.exec(
            select(ConsentRecord).where(
                ConsentRecord.person_id == person.id,
                ConsentRecord.purpose == purpose,
                col(ConsentRecord.withdrawn_at).is_(None),
            )
        ).all()
        if not records:
            # withdrawn before it was ever recorded: keep the withdrawal itself on file
            records = [
                ConsentRecord(
                    case_id=case.id,
                    person_id=person.id,
                    purpose=purpose,
                    method=ConsentMethod.VERBAL,
                    given_at=now,
                    recorded_by_id=recorder.id,
                )
            ]
        for record in records:
            record.withdrawn_at = now
            session.add(record)
        session.flush()
        handling = purpose == ConsentPurpose.CASE_HANDLING
        held: list[str] = []
        if handling and (case.state in RESUMABLE_STATES or case.state == CaseState.ON_HOLD):
            held = hold_person_actions(session, case, person, now=now)
        details: dict[str, object] = {"person": pseudonym, "purpose": purpose.value}
        if held:
            details["held"] = held
        _audit(session, case, by, "consent.withdrawn", now, person, operator, **details)
        stale: list[uuid.UUID] = []
        moved = (
            handling
            and case.state in RESUMABLE_STATES
            and not case_may_work(session, case.id, current_policy().consent)
        )
        if moved:
            stale = _move(
                session, case, CaseEvent.CONSENT_WITHDRAWN, now=now, by=by, why="put on hold"
            )
        return ControlResult(
            case_ref=case_ref, state=case.state, moved=moved, stale_runs=stale, milestones=held
        )


def renew_consent(
    case_ref: str,
    pseudonym: str,
    *,
    purpose: ConsentPurpose,
    by: str,
    method: ConsentMethod,
    now: datetime,
    language: str | None = None,
    interpreter_used: bool = False,
    operator: Operator | None = None,
) -> ControlResult:
    """Record a person's renewed consent; what was held for them resumes, and a held case too.

    The case lead or the victim representative records it. For case handling, the person's held
    actions resume (tasks.steps.implement.resume_person_actions); a held case resumes once
    consent lets it work again (someone's stands, or, if the policy holds the whole case on any
    withdrawal, nobody's stands withdrawn). The held step starts a new entry: its decisions are
    asked again (the safety assessment first of all).
    """
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        person = _affected(session, case, pseudonym)
        roles = (Role.CASE_LEAD, Role.VICTIM_REPRESENTATIVE)
        recorder = _person(session, case, by, roles, "record renewed consent")
        if pseudonym not in withdrawn_people(session, case.id, [purpose]):
            raise ControlError(f"{pseudonym}'s consent for {purpose.value} is not withdrawn")
        session.add(
            ConsentRecord(
                case_id=case.id,
                person_id=person.id,
                purpose=purpose,
                method=method,
                language=language,
                interpreter_used=interpreter_used,
                given_at=now,
                recorded_by_id=recorder.id,
            )
        )
        session.flush()
        details = {"person": pseudonym, "purpose": purpose.value, "method": method.value}
        _audit(session, case, by, "consent.renewed", now, person, operator, **details)
        moved = (
            purpose == ConsentPurpose.CASE_HANDLING
            and case.state == CaseState.ON_HOLD
            and case_may_work(session, case.id, current_policy().consent)
        )
        stale: list[uuid.UUID] = []
        if moved:
            # anything a run asked for while the hold was being recorded belongs to the old entry
            stale = _move(session, case, CaseEvent.CONSENT_RENEWED, now=now, by=by, why="resumed")
        resumed: list[str] = []
        if purpose == ConsentPurpose.CASE_HANDLING:
            # after the case moved: an action resumes active only in a case that implements
            resumed = resume_person_actions(session, case, person, now=now)
        if resumed:
            _audit(
                session, case, by, "milestones.resumed", now, person, operator, milestones=resumed
            )
        return ControlResult(
            case_ref=case_ref, state=case.state, moved=moved, stale_runs=stale, milestones=resumed
        )


def close_early(
    case_ref: str, *, by: str, reason: str, now: datetime, operator: Operator | None = None
) -> ControlResult:
    """Send a case to closure before its plan is done: unresolved, or after consent was withdrawn.

    Closing a working case unresolved is management's call (the case's senior approver); a held
    case may be sent to closure by its case lead too. Closure itself stays four-eyes (step 5).
    """
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        text = _reason(reason, "closing a case early")
        if case.state == CaseState.ON_HOLD:
            roles: tuple[Role, ...] = (Role.CASE_LEAD, Role.SENIOR_APPROVER)
            _person(session, case, by, roles, "send a held case to closure")
            event, facts = CaseEvent.CLOSE_ON_WITHDRAWAL, {}
        else:
            _person(session, case, by, (Role.SENIOR_APPROVER,), "authorise an unresolved closure")
            event, facts = CaseEvent.CLOSE_UNRESOLVED, {"unresolved_authorised": True}
        stale = _move(session, case, event, now=now, by=by, why="closed early", **facts)
        _audit(
            session,
            case,
            by,
            "case.closure_requested",
            now,
            operator=operator,
            event=event.value,
            reason=text,
        )
        return ControlResult(case_ref=case_ref, state=case.state, moved=True, stale_runs=stale)


def revise_plan(
    case_ref: str,
    *,
    by: str,
    agreed_by: str,
    reason: str,
    now: datetime,
    operator: Operator | None = None,
) -> ControlResult:
    """Take a plan under way back to design: the case lead asks, the victim representative agrees.

    Step 3 drafts the next version from the approved plan (open actions kept, new ones added);
    its agreement and budget are asked again; the old plan stays in force until the new one is
    approved, and the monitoring sweep leaves its milestones alone meanwhile.
    """
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        text = _reason(reason, "revising a plan")
        _person(session, case, by, (Role.CASE_LEAD,), "ask for a plan revision")
        _person(session, case, agreed_by, (Role.VICTIM_REPRESENTATIVE,), "agree to a plan revision")
        if agreed_by == by:
            raise ControlError("the case lead cannot agree to their own revision for the victims")
        stale = _move(
            session,
            case,
            CaseEvent.PLAN_REVISION_REQUESTED,
            now=now,
            by=by,
            why="revised",
            revision_agreed=True,
        )
        _audit(
            session,
            case,
            by,
            "plan.revision_requested",
            now,
            operator=operator,
            agreed_by=agreed_by,
            reason=text,
        )
        return ControlResult(case_ref=case_ref, state=case.state, moved=True, stale_runs=stale)


def reopen_case(
    case_ref: str,
    *,
    to: Literal["verification", "remedy"],
    by: str,
    reason: str,
    now: datetime,
    operator: Operator | None = None,
) -> ControlResult:
    """Reopen a closed case: back to verification (new facts) or to plan design (remedy failed).

    The case lead or the senior approver reopens it; a remedy can be reopened only for a case
    that once had an approved plan.
    """
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        text = _reason(reason, "reopening a case")
        roles = (Role.CASE_LEAD, Role.SENIOR_APPROVER)
        _person(session, case, by, roles, "reopen a case")
        event = (
            CaseEvent.REOPEN_FOR_VERIFICATION
            if to == "verification"
            else CaseEvent.REOPEN_FOR_REMEDY
        )
        stale = _move(session, case, event, now=now, by=by, why="reopened", reopen_reason=text)
        case.closed_at = None
        if to == "verification":
            case.closure_type = None
        session.add(case)
        _audit(session, case, by, "case.reopened", now, operator=operator, to=to, reason=text)
        return ControlResult(case_ref=case_ref, state=case.state, moved=True, stale_runs=stale)
