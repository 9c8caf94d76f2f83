"""The monitoring sweep's work: find what is due with set-based queries, act once per threshold.

A threshold is a milestone due soon, due today, overdue, or escalated for the n-th time, a
decision past its due time (reminder) or past the grace period (escalation n), or a reporter's
acknowledgement or feedback deadline coming (reminder) or missed (escalation), or the status a
reporter sees having changed (news: tasks/monitoring/reporter_deadlines.py). Each has a key
naming the milestone or decision and its deadline; `reminder_sent` records the keys acted on, so
a sweep never repeats a reminder and an extended deadline gets reminders of its own.

A key is written in the same transaction as the outbox rows of its messages (`check_case`): it
says "handed to the outbox", never "sent". A sweep killed before its commit leaves neither, and
the next sweep sends the reminders; one killed after it, while delivering, leaves both, and the
drain sends what is still pending once the dead sweep's lease runs out (tasks/drain.py).

`now` is the sweep's moment: the wall clock in production (the deployment takes no other,
flows/monitor_milestones.py); a chosen one only on a store marked as a simulation.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel
from sqlmodel import Session, col, func, select

from models.enums import (
    CaseState,
    CaseStatus,
    DecisionRequestStatus,
    MilestoneStatus,
    NotificationEvent,
    PlanStatus,
    Role,
)
from models.policy import Policy
from models.tables import (
    ActionPlan,
    DecisionRequest,
    PlanAction,
    RemediationCase,
    ReminderSent,
    Stakeholder,
)
from notifications.outbox import notify
from tasks.case_state import CLOSED_MILESTONES
from tasks.context import current_policy, current_routing, utcnow
from tasks.decisions.codes import live_link, request_context
from tasks.monitoring.reporter_deadlines import NEWS, act_on_receipt, find_reporter_items
from tasks.steps.implement import milestone_notice
from tasks.store.audit import append_audit
from tasks.store.cases import get_case
from tasks.store.db import read_only, unit_of_work
from tasks.store.directory import members_of

SWEEP = "system:monitoring"
# the milestones reminded: a held one (its person's consent stands withdrawn) is left alone, and
# one found held by the time its case is checked is skipped (`_act`), so nothing mentions them
OPEN_MILESTONES = (MilestoneStatus.PLANNED, MilestoneStatus.ACTIVE)
Threshold = Literal[
    "due-soon",
    "due-today",
    "overdue",
    "escalated",
    "decision-reminder",
    "decision-escalated",
    # a reporter's deadlines and news (tasks/monitoring/reporter_deadlines.py)
    "reporter-ack-due",
    "reporter-ack-missed",
    "reporter-feedback-due",
    "reporter-feedback-missed",
    "reporter-news",
]


class DueItem(BaseModel):
    """One threshold crossed by one milestone or waiting decision."""

    key: str
    threshold: Threshold
    case_ref: str
    action_id: uuid.UUID | None = None
    request_id: uuid.UUID | None = None
    receipt_id: uuid.UUID | None = None
    deadline: str  # the due date (or time) the threshold belongs to (a reporter's news: status)
    level: int = 0  # escalation number


class SweepPlan(BaseModel):
    """What a sweep found: new thresholds, grouped by case."""

    now: datetime
    by_case: dict[str, list[DueItem]]
    candidates: int  # milestones and decisions looked at


def _escalation(days_late: float, policy: Policy) -> int:
    """Return which escalation is due (0: none yet): first after the grace, then every so often."""
    grace, repeat = policy.milestones.overdue_grace_days, policy.milestones.escalation_repeat_days
    if days_late <= grace:
        return 0
    return 1 + int((days_late - grace - 1e-9) // repeat)


def milestone_items(
    action_id: uuid.UUID, case_ref: str, due_on: date, today: date, policy: Policy
) -> list[DueItem]:
    """Return every threshold a milestone has crossed by today (already sent ones included)."""
    items = []
    base = {"case_ref": case_ref, "action_id": action_id, "deadline": due_on.isoformat()}
    if due_on >= today:
        items.append(DueItem(key=f"due-soon:{action_id}:{due_on}", threshold="due-soon", **base))
        if due_on == today:
            items.append(
                DueItem(key=f"due-today:{action_id}:{due_on}", threshold="due-today", **base)
            )
        return items
    items.append(DueItem(key=f"overdue:{action_id}:{due_on}", threshold="overdue", **base))
    level = _escalation((today - due_on).days, policy)
    if level:
        items.append(
            DueItem(
                key=f"escalated:{action_id}:{due_on}:{level}",
                threshold="escalated",
                level=level,
                **base,
            )
        )
    return items


def decision_items(
    request_id: uuid.UUID, case_ref: str, due_at: datetime, now: datetime, policy: Policy
) -> list[DueItem]:
    """Return the thresholds a waiting decision has crossed (it is past due)."""
    base = {"case_ref": case_ref, "request_id": request_id, "deadline": due_at.isoformat()}
    items = [DueItem(key=f"decision-reminder:{request_id}", threshold="decision-reminder", **base)]
    level = _escalation((now - due_at) / timedelta(days=1), policy)
    if level:
        items.append(
            DueItem(
                key=f"decision-escalated:{request_id}:{level}",
                threshold="decision-escalated",
                level=level,
                **base,
            )
        )
    return items


def find_due(*, now: datetime, policy: Policy | None = None) -> SweepPlan:
    """Find, with set-based queries, the thresholds crossed and not yet acted on."""
    policy = policy or current_policy()
    today = now.date()
    horizon = today + timedelta(days=policy.milestones.due_soon_days)
    with read_only() as session:
        milestones = session.exec(
            select(col(PlanAction.id), col(RemediationCase.reference), col(PlanAction.due_on))
            .join(ActionPlan, col(ActionPlan.id) == col(PlanAction.plan_id))
            .join(RemediationCase, col(RemediationCase.id) == col(PlanAction.case_id))
            .where(
                ActionPlan.status == PlanStatus.APPROVED,
                RemediationCase.status == CaseStatus.ACTIVE,
                RemediationCase.state == CaseState.IMPLEMENTING,
                col(PlanAction.status).in_(OPEN_MILESTONES),
                col(PlanAction.due_on) <= horizon,
            )
        ).all()
        decisions = session.exec(
            select(
                col(DecisionRequest.id), col(RemediationCase.reference), col(DecisionRequest.due_at)
            )
            .join(RemediationCase, col(RemediationCase.id) == col(DecisionRequest.case_id))
            .where(
                DecisionRequest.status == DecisionRequestStatus.WAITING,
                RemediationCase.status == CaseStatus.ACTIVE,
                col(DecisionRequest.due_at) < now,
            )
        ).all()
        items: list[DueItem] = []
        for action_id, ref, due_on in milestones:
            items += milestone_items(action_id, ref, due_on, today, policy)
        for request_id, ref, due_at in decisions:
            if due_at is not None:
                items += decision_items(request_id, ref, due_at, now, policy)
        reporters = find_reporter_items(session, now=now, policy=policy)
        items += [
            DueItem(
                key=r.key,
                threshold=r.threshold,
                case_ref=r.case_ref,
                receipt_id=r.receipt_id,
                deadline=r.deadline,
            )
            for r in reporters
        ]
        sent: set[str] = set()
        keys = [i.key for i in items]
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            sent.update(
                session.exec(select(ReminderSent.key).where(col(ReminderSent.key).in_(chunk))).all()
            )
    by_case: dict[str, list[DueItem]] = defaultdict(list)
    for item in items:
        if item.key not in sent:
            by_case[item.case_ref].append(item)
    return SweepPlan(
        now=now,
        by_case=dict(by_case),
        candidates=len(milestones) + len(decisions) + len({r.receipt_id for r in reporters}),
    )


class CaseCheck(BaseModel):
    """What one case's check sent."""

    case_ref: str
    sent: list[str]
    skipped: list[str]


def check_case(case_ref: str, items: list[DueItem], *, now: datetime) -> CaseCheck:
    """Act on one case's new thresholds in one transaction, each exactly once."""
    sent, skipped = [], []
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        if case.status != CaseStatus.ACTIVE:
            # a case on hold or closed is not chased; its reporters still hear that there is news
            skipped = [i.key for i in items if i.threshold != NEWS]
            items = [i for i in items if i.threshold == NEWS]
            if not items:
                return CaseCheck(case_ref=case_ref, sent=[], skipped=skipped)
        for item in items:
            if session.get(ReminderSent, item.key) is not None or not _act(
                session, case, item, now
            ):
                skipped.append(item.key)
                continue
            # committed with its messages' outbox rows; the wall clock (a simulated sweep's
            # moment is in the audit, not here)
            session.add(ReminderSent(key=item.key, case_id=case.id, sent_at=utcnow()))
            sent.append(item.key)
        append_audit(
            session,
            chain=case.reference,
            actor=SWEEP,
            action="monitoring.checked",
            at=now,
            subject_type="case",
            subject_id=str(case.id),
            details={"sent": [k.split(":")[0] for k in sent], "count": len(sent)},
        )
    return CaseCheck(case_ref=case_ref, sent=sent, skipped=skipped)


def _act(session: Session, case: RemediationCase, item: DueItem, now: datetime) -> bool:
    """Send what a threshold calls for; False if it no longer applies (moved, extended...)."""
    if item.receipt_id is not None:
        return act_on_receipt(
            session,
            case,
            receipt_id=item.receipt_id,
            threshold=item.threshold,
            key=item.key,
            deadline=item.deadline,
            now=now,
            policy=current_policy(),
        )
    if item.action_id is not None:
        action = session.get(PlanAction, item.action_id)
        if (
            action is None
            or action.status not in OPEN_MILESTONES
            or action.due_on.isoformat() != item.deadline
        ):
            return False
        owner = session.get(Stakeholder, action.owner_id) if action.owner_id else None
        event = {
            "due-soon": NotificationEvent.MILESTONE_DUE_SOON,
            "due-today": NotificationEvent.MILESTONE_DUE_SOON,
            "overdue": NotificationEvent.MILESTONE_OVERDUE,
            "escalated": NotificationEvent.MILESTONE_ESCALATED,
        }[item.threshold]
        if owner is None:
            owner = next(iter(members_of(session, case.id, Role.CASE_LEAD)), None)
        if owner is None:
            return False
        milestone_notice(
            session,
            case,
            action,
            owner,
            event=event,
            key=item.key,
            now=now,
            extra={"level": item.level, "days_late": max((now.date() - action.due_on).days, 0)},
        )
        return True
    request = session.get(DecisionRequest, item.request_id)
    if request is None or request.status != DecisionRequestStatus.WAITING:
        return False
    context = {**request_context(case, request), "level": item.level}
    if item.threshold == "decision-reminder":
        approvers = session.exec(
            select(Stakeholder).where(
                col(Stakeholder.id).in_([uuid.UUID(i) for i in request.approver_ids])
            )
        ).all()
        private: dict[uuid.UUID, dict[str, Any]] = {}
        for person in approvers:
            # a link lives less long than a decision may wait: a reminder brings a working one
            link = live_link(session, request=request, person=person, now=now)
            if link is not None:
                private[person.id] = {
                    "link_id": str(link.id),
                    **({"code_ciphertext": link.code_ciphertext} if link.code_ciphertext else {}),
                }
        notify(
            session,
            routing=current_routing(),
            event=NotificationEvent.DECISION_REMINDER,
            case=case,
            key=item.key,
            now=now,
            approvers=sorted(approvers, key=lambda p: p.key),
            private=private,
            context=context,
        )
        request.last_reminded_at = now
    else:
        notify(
            session,
            routing=current_routing(),
            event=NotificationEvent.DECISION_ESCALATED,
            case=case,
            key=item.key,
            now=now,
            context=context,
        )
        request.escalated_at = now
    session.add(request)
    return True


def completed_plans() -> list[str]:
    """Return the cases still implementing whose every milestone is verified or waived."""
    with read_only() as session:
        open_count = (
            select(func.count())
            .select_from(PlanAction)
            .where(
                col(PlanAction.plan_id) == col(ActionPlan.id),
                col(PlanAction.status).not_in(CLOSED_MILESTONES),
            )
            .scalar_subquery()
        )
        total = (
            select(func.count())
            .select_from(PlanAction)
            .where(
                col(PlanAction.plan_id) == col(ActionPlan.id),
                PlanAction.status != MilestoneStatus.CANCELLED,
            )
            .scalar_subquery()
        )
        rows = session.exec(
            select(RemediationCase.reference)
            .join(ActionPlan, col(ActionPlan.case_id) == col(RemediationCase.id))
            .where(
                RemediationCase.state == CaseState.IMPLEMENTING,
                ActionPlan.status == PlanStatus.APPROVED,
                open_count == 0,
                total > 0,
            )
        ).all()
        return sorted(rows)
