"""Deadlines that protect reporters, and the news of a changed status: the sweep's reporter part.

Every receipt promises its reporter an acknowledgement and then feedback, by the policy's
deadlines counted from the filing (models.policy `reporter_deadlines`):

- acknowledged: `remedy reporter ack`, or the first reply (tasks/reporter/staff.py);
- feedback: the first staff reply *after* the acknowledgement (the reply that acknowledged does
  not count twice), or the status the reporter sees leaving verification (remedy being planned,
  under way, closed: the follow-up page shows it), whichever comes first.

The sweep (tasks/monitoring/sweep.py) reminds the case lead `remind_days_before` the deadline and
escalates once it is missed, once each, with `reminder_sent` keys like every other threshold.
Deadlines of a case that is not active (on hold, closed) are left alone, as milestones are.

News: when the status a reporter sees changes, the sweep records the new one on the receipt
(`status_told`) and, in the same transaction, enqueues "there is news" for a reporter who gave an
e-mail contact and agreed (tasks/reporter/notices.py). The sweep, not the transitions, does it:
the transitions are spread over every step and control, and one that crashed between its commit
and the message would lose the news for good, whereas the sweep compares what is stored with what
the reporter sees now, so a sweep that dies before its commit is simply redone by the next one,
and one that committed has recorded both (the drain delivers what is pending). Closed cases are
swept for news too: a verdict may close a case before a sweep saw it closing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, func, or_, select

from models.enums import CaseStatus, NotificationEvent, ReporterStatus
from models.policy import Policy, reporter_deadlines
from models.tables import RemediationCase, ReporterMessage, ReporterReceipt
from notifications.outbox import notify
from tasks.context import current_routing
from tasks.reporter.notices import tell_status
from tasks.reporter.status import FEEDBACK_STATUSES, is_news, reporter_status
from tasks.store.audit import append_audit

NEWS = "reporter-news"
EVENTS = {
    "reporter-ack-due": NotificationEvent.REPORTER_ACK_DUE,
    "reporter-ack-missed": NotificationEvent.REPORTER_ACK_MISSED,
    "reporter-feedback-due": NotificationEvent.REPORTER_FEEDBACK_DUE,
    "reporter-feedback-missed": NotificationEvent.REPORTER_FEEDBACK_MISSED,
}


@dataclass(frozen=True)
class ReceiptTimes:
    """One receipt's two deadlines and when each was met (None: not yet)."""

    receipt_id: uuid.UUID
    receipt_ref: str
    case_id: uuid.UUID
    case_ref: str
    filed_at: datetime
    acknowledge_by: datetime
    acknowledged_at: datetime | None
    feedback_by: datetime
    feedback_at: datetime | None


def seen_status(case: RemediationCase) -> ReporterStatus:
    """Return the status a case's reporters see now."""
    return reporter_status(case.state, held_from=case.held_from, closure_type=case.closure_type)


def _status_feedback(receipt: ReporterReceipt, case: RemediationCase) -> datetime | None:
    """When the status gave the reporter a result: as recorded, or (not swept yet) as it stands."""
    if receipt.status_feedback_at is not None:
        return receipt.status_feedback_at
    if seen_status(case) in FEEDBACK_STATUSES:
        return max(receipt.filed_at, case.state_changed_at)
    return None


def _replies_after_acknowledgement(
    session: Session, receipt_ids: list[uuid.UUID]
) -> dict[uuid.UUID, datetime]:
    """Return each receipt's first staff reply after its acknowledgement (GROUP BY, chunked)."""
    found: dict[uuid.UUID, datetime] = {}
    for start in range(0, len(receipt_ids), 500):
        chunk = receipt_ids[start : start + 500]
        rows = session.exec(
            select(col(ReporterMessage.receipt_id), func.min(col(ReporterMessage.at)))
            .join(ReporterReceipt, col(ReporterReceipt.id) == col(ReporterMessage.receipt_id))
            .where(
                col(ReporterMessage.receipt_id).in_(chunk),
                col(ReporterMessage.from_reporter).is_(False),
                col(ReporterReceipt.acknowledged_at).is_not(None),
                col(ReporterMessage.at) > col(ReporterReceipt.acknowledged_at),
            )
            .group_by(col(ReporterMessage.receipt_id))
        ).all()
        found.update({receipt_id: at for receipt_id, at in rows})
    return found


def receipt_times(session: Session, *where: Any, policy: Policy) -> list[ReceiptTimes]:
    """Return the deadlines of the receipts (of the cases) matching `where`, oldest first."""
    rows = session.exec(
        select(ReporterReceipt, RemediationCase)
        .join(RemediationCase, col(RemediationCase.id) == col(ReporterReceipt.case_id))
        .where(*where)
        .order_by(col(ReporterReceipt.filed_at), col(ReporterReceipt.receipt_ref))
    ).all()
    replies = _replies_after_acknowledgement(session, [r.id for r, _ in rows])
    return [_times(receipt, case, replies.get(receipt.id), policy) for receipt, case in rows]


def _times(
    receipt: ReporterReceipt, case: RemediationCase, reply_at: datetime | None, policy: Policy
) -> ReceiptTimes:
    due = reporter_deadlines(receipt.filed_at, case.severity, policy)
    met = [t for t in (reply_at, _status_feedback(receipt, case)) if t is not None]
    return ReceiptTimes(
        receipt_id=receipt.id,
        receipt_ref=receipt.receipt_ref,
        case_id=case.id,
        case_ref=case.reference,
        filed_at=receipt.filed_at,
        acknowledge_by=due.acknowledge_by,
        acknowledged_at=receipt.acknowledged_at,
        feedback_by=due.feedback_by,
        feedback_at=min(met, default=None),
    )


def _days(delta: timedelta) -> str:
    days = delta.days
    if days < 1:
        return "less than a day"
    return "1 day" if days == 1 else f"{days} days"


def timeliness(due: datetime, met: datetime | None, now: datetime) -> str:
    """Say how a deadline stands: on time, late by n days, due (when), or overdue by n days."""
    if met is not None:
        return "on time" if met <= due else f"late by {_days(met - due)}"
    if now <= due:
        return f"due {due:%Y-%m-%d %H:%M}"
    return f"overdue by {_days(now - due)}"


def urgency(due: datetime, met: datetime | None, now: datetime) -> tuple[int, float]:
    """Order deadlines from the least to the most worrying (overdue, then late, then open)."""
    if met is not None:
        return (0, 0.0) if met <= due else (2, (met - due).total_seconds())
    return (1, 0.0) if now <= due else (3, (now - due).total_seconds())


# --- the sweep's part ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReporterItem:
    """A reporter's threshold crossed: a deadline's reminder or escalation, or a status's news."""

    key: str
    threshold: str  # reporter-ack-due, reporter-ack-missed, reporter-feedback-..., reporter-news
    case_ref: str
    receipt_id: uuid.UUID
    deadline: str  # the deadline (ISO) a reminder belongs to, or the status the news tells


def deadline_items(times: ReceiptTimes, now: datetime, policy: Policy) -> list[ReporterItem]:
    """Return every threshold a receipt's unmet deadlines have crossed by now (sent ones too)."""
    remind = timedelta(days=policy.reporters.remind_days_before)
    items = []
    for what, due, met in (
        ("ack", times.acknowledge_by, times.acknowledged_at),
        ("feedback", times.feedback_by, times.feedback_at),
    ):
        if met is not None or now < max(due - remind, times.filed_at):
            continue
        for threshold in [f"reporter-{what}-due"] + ([f"reporter-{what}-missed"] * (now > due)):
            items.append(
                ReporterItem(
                    key=f"{threshold}:{times.receipt_id}:{due.isoformat()}",
                    threshold=threshold,
                    case_ref=times.case_ref,
                    receipt_id=times.receipt_id,
                    deadline=due.isoformat(),
                )
            )
    return items


def find_reporter_items(session: Session, *, now: datetime, policy: Policy) -> list[ReporterItem]:
    """Find the reporters' deadlines crossed and the statuses changed (sent ones included)."""
    times = receipt_times(
        session,
        RemediationCase.status == CaseStatus.ACTIVE,
        or_(
            col(ReporterReceipt.acknowledged_at).is_(None),
            col(ReporterReceipt.status_feedback_at).is_(None),
        ),
        policy=policy,
    )
    items = [item for t in times for item in deadline_items(t, now, policy)]
    # closed is the last status: a receipt told of it is never looked at again
    changed = session.exec(
        select(ReporterReceipt, RemediationCase)
        .join(RemediationCase, col(RemediationCase.id) == col(ReporterReceipt.case_id))
        .where(
            or_(
                col(ReporterReceipt.status_told).is_(None),
                ReporterReceipt.status_told != ReporterStatus.CLOSED,
            )
        )
    ).all()
    for receipt, case in changed:
        status = seen_status(case)
        if is_news(receipt.status_told, status):
            items.append(
                ReporterItem(
                    key=f"{NEWS}:{receipt.id}:{status.value}",
                    threshold=NEWS,
                    case_ref=case.reference,
                    receipt_id=receipt.id,
                    deadline=status.value,
                )
            )
    return items


def act_on_receipt(
    session: Session,
    case: RemediationCase,
    *,
    receipt_id: uuid.UUID,
    threshold: str,
    key: str,
    deadline: str,
    now: datetime,
    policy: Policy,
) -> bool:
    """Send what a reporter's threshold calls for; False if it no longer applies (met, moved)."""
    receipt = session.get(ReporterReceipt, receipt_id)
    if receipt is None or receipt.case_id != case.id:
        return False
    if threshold == NEWS:
        return _tell_news(session, case, receipt, deadline, now)
    reply = _replies_after_acknowledgement(session, [receipt.id]).get(receipt.id)
    times = _times(receipt, case, reply, policy)
    what = threshold.removeprefix("reporter-").rsplit("-", 1)[0]
    due, met = (
        (times.acknowledge_by, times.acknowledged_at)
        if what == "ack"
        else (times.feedback_by, times.feedback_at)
    )
    if met is not None or due.isoformat() != deadline:
        return False
    written = notify(
        session,
        routing=current_routing(),
        event=EVENTS[threshold],
        case=case,
        key=key,
        now=now,
        context={
            "case_ref": case.reference,
            "step": case.step,
            "receipt_ref": receipt.receipt_ref,
            "due_at": due.isoformat(),
            "days_late": max((now - due).days, 0),
        },
    )
    return bool(written)  # nobody to tell (no case lead yet): the next sweep tries again


def _tell_news(
    session: Session, case: RemediationCase, receipt: ReporterReceipt, status: str, now: datetime
) -> bool:
    seen = seen_status(case)
    if seen.value != status or not is_news(receipt.status_told, seen):
        return False
    receipt.status_told = seen
    if seen in FEEDBACK_STATUSES and receipt.status_feedback_at is None:
        # the reporter could see it from when the case moved (the sweep comes later)
        receipt.status_feedback_at = max(receipt.filed_at, min(now, case.state_changed_at))
    session.add(receipt)
    told = tell_status(session, receipt=receipt, now=now)
    append_audit(
        session,
        chain=case.reference,
        actor="system:monitoring",
        action="reporter.status_told",
        at=now,
        subject_type="reporter_receipt",
        subject_id=str(receipt.id),
        details={"receipt_ref": receipt.receipt_ref, "status": seen.value, "emailed": told},
    )
    return True


def receipts_of(
    session: Session, case_ids: Iterable[uuid.UUID], policy: Policy
) -> dict[uuid.UUID, list[ReceiptTimes]]:
    """Return the deadlines of the receipts of some cases, grouped by case id."""
    grouped: dict[uuid.UUID, list[ReceiptTimes]] = {}
    ids = list(case_ids)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for t in receipt_times(session, col(ReporterReceipt.case_id).in_(chunk), policy=policy):
            grouped.setdefault(t.case_id, []).append(t)
    return grouped
