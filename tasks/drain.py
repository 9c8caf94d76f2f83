"""Draining the outbox: claim due messages, render, send through apprise, record each attempt.

The guarantee is at-least-once. A message is claimed (a lease of `delivery_lease_seconds`) and its
attempt counted before it is sent, and recorded as delivered after; if the process dies in
between, the lease runs out and the next drain sends it again (deliver-notifications runs every
`delivery_drain_seconds`), so a crash can duplicate at most the messages in flight, each carrying
the same idempotency key (header X-Remedy-Key) for the receiver to drop a repeat. A slow drain
renews its claim before each send once half the lease is gone, and only while no other drain has
claimed the message since. Failures back off exponentially and stop after
`delivery_max_attempts` (audited). Leases and backoff run on the wall clock; the `now` a caller
passes dates only what is recorded.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlmodel import col, or_, select

from models.enums import (
    ChatKind,
    ConsentPurpose,
    EmailFormat,
    NotificationChannel,
    NotificationStatus,
)
from models.settings import get_settings
from models.tables import (
    ApprovalLink,
    Notification,
    RemediationCase,
    Stakeholder,
)
from notifications.render import Rendered, message_format, render
from notifications.secrets import resolve_secret
from notifications.send import DeliveryFailedError, chat_url, email_url, send
from tasks.context import utcnow
from tasks.store.audit import SYSTEM_CHAIN, append_audit
from tasks.store.consent import withdrawn_people
from tasks.store.db import is_postgres, read_only, unit_of_work
from tasks.store.links import link_url, run_link_url
from tasks.store.vault import get_vault

# Every template may name these; a message without them renders them as absent.
BASE_CONTEXT: dict[str, Any] = {
    "approval_link": None,
    "progress_link": None,
    "enrol_link": None,
    "run_link": None,  # the stable link to the run waiting on a decision, never the run itself
    "code": None,
    "code_expires_at": None,
    "narrative": None,
    "case_view_link": None,
    "receipt_ref": None,  # a reporter's receipt (tasks/reporter/): public, names no case
    "follow_up_link": None,
    "visibility": "minimal",
    "step": 1,
    "amount": None,  # what a financial milestone repays: "450.00 USD to 3 persons"
    # the audit checkpoint sent at a closure (tasks/store/checkpoints.py send_checkpoint)
    "checkpoint_at": None,
    "head_seq": None,
    "head_hash": None,
    "chains": None,
    "root": None,
    "public_key": None,
    "signature": None,
}
BATCH = 25
MAX_BACKOFF = timedelta(hours=1)
SENSITIVE = ("code_ciphertext", "sealed")
LINK_KEYS = ("link_id", "flow_run_id")  # what links are made of; no template links a run itself


class DeliveryReport(BaseModel):
    """What one drain did."""

    claimed: int = 0
    delivered: int = 0
    failed: int = 0  # this attempt failed; retried later
    gave_up: int = 0  # out of attempts
    suppressed: int = 0


@dataclass
class Prepared:
    """A claimed message, rendered and addressed (the URL is a secret: never logged)."""

    id: uuid.UUID
    channel: NotificationChannel
    url: str = field(repr=False)
    rendered: Rendered


def lease_period() -> timedelta:
    """How long a claim holds (the setting; at most five minutes)."""
    return timedelta(seconds=get_settings().delivery_lease_seconds)


@dataclass(frozen=True)
class Lease:
    """A claimed message: its id, the attempt the claim counted (the fence), until when."""

    id: uuid.UUID
    attempt: int
    until: datetime


def claim_due(*, limit: int = 200, case_id: uuid.UUID | None = None) -> list[Lease]:
    """Take a lease on due messages and count the attempt; return the leases.

    Due-ness and the lease are the wall clock's, never a caller's moment: a drain told it is
    2031 must neither send a message early nor hold it until 2031 if it dies.
    """
    now = utcnow()
    until = now + lease_period()
    with unit_of_work() as session:
        query = (
            select(Notification)
            .where(
                Notification.status == NotificationStatus.PENDING,
                col(Notification.next_attempt_at) <= now,
                or_(
                    col(Notification.claimed_until).is_(None),
                    col(Notification.claimed_until) < now,
                ),
            )
            .order_by(col(Notification.created_at))
            .limit(limit)
        )
        if case_id is not None:
            query = query.where(Notification.case_id == case_id)
        if is_postgres(session):
            query = query.with_for_update(skip_locked=True)  # parallel drains share the work
        rows = session.exec(query).all()
        for row in rows:
            row.claimed_until = until
            row.attempts += 1
            session.add(row)
        return [Lease(id=r.id, attempt=r.attempts, until=until) for r in rows]


def keep(lease: Lease) -> bool:
    """Make sure a claim holds for a whole send before it starts; False if it was lost.

    A batch is claimed at once. Once half its lease is gone (a slow or hanging server), each
    further message's lease is renewed before it is sent, but only if no other drain has claimed
    it since (its attempt count is still the one this claim set): a slow drain never sends a
    message that another drain has taken over.
    """
    now = utcnow()
    period = lease_period()
    if lease.until - now > period / 2:
        return True
    with unit_of_work() as session:
        row = session.exec(
            select(Notification)
            .where(
                Notification.id == lease.id,
                Notification.attempts == lease.attempt,
                Notification.status == NotificationStatus.PENDING,
            )
            .with_for_update()
        ).first()
        if row is None:
            return False
        row.claimed_until = now + period
        session.add(row)
        return True


def _withdrawn(case_id: uuid.UUID | None, mentions: list[str]) -> bool:
    if not mentions or case_id is None:
        return False
    with read_only() as session:
        stopped = withdrawn_people(
            session, case_id, [ConsentPurpose.CASE_HANDLING, ConsentPurpose.CONTACT]
        )
    return bool(stopped & set(mentions))


def _secret(ref: str) -> str:
    """Read a chat webhook URL from where the stakeholder's record says it is kept."""
    return resolve_secret(ref, home=get_settings().home)


def render_context(row: Notification, case_ref: str | None, now: datetime) -> dict[str, Any]:
    """Everything a template may use: the stored context, decrypted parts and links."""
    from tasks.orchestration.runs import ui_url

    vault = get_vault()
    ctx: dict[str, Any] = dict(BASE_CONTEXT)
    ctx.update({k: v for k, v in row.context.items() if k not in SENSITIVE and k not in LINK_KEYS})
    if row.context.get("code_ciphertext"):
        ctx["code"] = vault.decrypt(row.context["code_ciphertext"])["code"]
    if row.context.get("sealed"):
        ctx["narrative"] = vault.decrypt(row.context["sealed"])
    if row.context.get("link_id"):
        with read_only() as session:
            link = session.get(ApprovalLink, uuid.UUID(row.context["link_id"]))
        if link is not None and link.expires_at > now:
            key = {"decide": "approval_link", "enrol": "enrol_link"}.get(
                link.purpose.value, "progress_link"
            )
            ctx[key] = link_url(link.id, link.expires_at)
    base = ui_url()
    if base and row.context.get("request_id"):
        # a run may crash and be replaced; this address leads to whichever waits now
        ctx["run_link"] = run_link_url(uuid.UUID(row.context["request_id"]))
    if base and case_ref:
        ctx["case_view_link"] = f"{base.rstrip('/')}/artifacts/key/case-{case_ref.lower()}"
    return ctx


@dataclass
class Claimed:
    """A claimed message with what delivering and recording it need (read once)."""

    row: Notification
    person: Stakeholder | None  # None: the reporter of row.receipt_id (tasks/reporter/)
    chain: str  # the audit chain: the case reference, or the system chain
    case_ref: str | None


def load(notification_id: uuid.UUID) -> Claimed | None:
    """Read a claimed message, its recipient and its case; None if it is not pending any more."""
    with read_only() as session:
        row = session.get(Notification, notification_id)
        if row is None or row.status != NotificationStatus.PENDING:
            return None
        person = session.get(Stakeholder, row.recipient_id) if row.recipient_id else None
        case = session.get(RemediationCase, row.case_id) if row.case_id else None
    assert person is not None or row.receipt_id is not None
    ref = case.reference if case else None
    return Claimed(row=row, person=person, chain=ref or SYSTEM_CHAIN, case_ref=ref)


def prepare(claimed: Claimed, *, now: datetime) -> Prepared:
    """Render and address a claimed message (raises DeliveryFailedError if it cannot be)."""
    row, person = claimed.row, claimed.person
    if person is None:
        return _prepare_for_reporter(row, now=now)
    context = render_context(row, claimed.case_ref, now)
    if row.channel == NotificationChannel.EMAIL:
        settings = get_settings()
        if settings.smtp_url is None or not person.email:
            raise DeliveryFailedError("email: no SMTP server is configured (REMEDY_SMTP_URL)")
        fmt = message_format(row.channel, html=person.email_format == EmailFormat.HTML)
        url = email_url(
            settings.smtp_url.get_secret_value(), to=person.email, key=row.idempotency_key
        )
    else:
        if not (person.chat_kind and person.chat_secret_ref):
            raise DeliveryFailedError("chat: the recipient has no chat webhook")
        fmt = "md"
        url = chat_url(
            _secret(person.chat_secret_ref),
            kind=ChatKind(person.chat_kind),
            key=row.idempotency_key,
        )
    rendered = render(row.template, fmt=fmt, locale=row.locale, context=context)
    return Prepared(id=row.id, channel=row.channel, url=url, rendered=rendered)


def _prepare_for_reporter(row: Notification, *, now: datetime) -> Prepared:
    """Address a reporter at the contact their receipt keeps encrypted, read for this send only.

    Their message names no case: it is rendered without the case's reference or links.
    """
    from tasks.reporter.notices import reporter_address

    settings = get_settings()
    if settings.smtp_url is None:
        raise DeliveryFailedError("email: no SMTP server is configured (REMEDY_SMTP_URL)")
    if row.channel != NotificationChannel.EMAIL or row.receipt_id is None:
        raise DeliveryFailedError("a reporter is written to by e-mail only")
    to = reporter_address(row.receipt_id)
    if to is None:
        raise DeliveryFailedError("email: the reporter may not or cannot be written to")
    url = email_url(settings.smtp_url.get_secret_value(), to=to, key=row.idempotency_key)
    context = render_context(row, None, now)
    rendered = render(row.template, fmt="html", locale=row.locale, context=context)
    return Prepared(id=row.id, channel=row.channel, url=url, rendered=rendered)


def record(claimed: Claimed, *, now: datetime, error: str | None, suppressed: bool = False) -> str:
    """Record one attempt's outcome; return delivered / failed / gave_up / suppressed."""
    settings = get_settings()
    with unit_of_work() as session:
        row = session.exec(
            select(Notification).where(Notification.id == claimed.row.id).with_for_update()
        ).one()
        details = {
            "event": row.event,
            "channel": row.channel.value,
            "recipient": claimed.person.key if claimed.person else "reporter",
            "attempts": row.attempts,
        }
        row.claimed_until = None
        if suppressed:
            row.status, outcome = NotificationStatus.SUPPRESSED, "suppressed"
            row.context = {k: v for k, v in row.context.items() if k not in SENSITIVE}
            action = "notification.suppressed"
        elif error is None:
            row.status, row.delivered_at, outcome = NotificationStatus.DELIVERED, now, "delivered"
            row.last_error = None
            # what only the delivery needed (codes, narrative) leaves the store with it
            row.context = {k: v for k, v in row.context.items() if k not in SENSITIVE}
            action = "notification.sent"
        else:
            row.last_error = error[:500]
            if row.attempts >= settings.delivery_max_attempts:
                row.status, outcome, action = (
                    NotificationStatus.FAILED,
                    "gave_up",
                    "notification.failed",
                )
                details["error"] = row.last_error
            else:
                delay = timedelta(
                    seconds=settings.delivery_backoff_seconds * 2 ** (row.attempts - 1)
                )
                row.next_attempt_at = utcnow() + min(delay, MAX_BACKOFF)  # real time
                outcome, action = "failed", ""
        session.add(row)
        if action:
            append_audit(
                session,
                chain=claimed.chain,
                actor="system:delivery",
                action=action,
                at=now,
                subject_type="notification",
                subject_id=str(row.id),
                details=details,
            )
        return outcome


def deliver_one(notification_id: uuid.UUID, *, now: datetime) -> str:
    """Send one claimed message and record the attempt."""
    claimed = load(notification_id)
    if claimed is None:
        return "skipped"
    if _withdrawn(claimed.row.case_id, list(claimed.row.mentions)):
        return record(claimed, now=now, error=None, suppressed=True)
    try:
        prepared = prepare(claimed, now=now)
        send(
            prepared.url,
            channel=prepared.channel.value,
            subject=prepared.rendered.subject,
            body=prepared.rendered.body,
            fmt=prepared.rendered.format,
        )
    except DeliveryFailedError as exc:
        return record(claimed, now=now, error=str(exc))
    return record(claimed, now=now, error=None)


def deliver_due(*, now: datetime, limit: int = 200, case_ref: str | None = None) -> DeliveryReport:
    """Deliver what is due (of one case, or all), up to limit messages."""
    case_id = None
    if case_ref is not None:
        with read_only() as session:
            case = session.exec(
                select(RemediationCase).where(RemediationCase.reference == case_ref)
            ).first()
            if case is None:
                return DeliveryReport()
            case_id = case.id
    report = DeliveryReport()
    while report.claimed < limit:
        # small batches: a lease usually covers a batch's sending; keep() renews it if not
        leases = claim_due(limit=min(BATCH, limit - report.claimed), case_id=case_id)
        if not leases:
            break
        report.claimed += len(leases)
        for lease in leases:
            if not keep(lease):
                continue  # another drain has taken it over
            outcome = deliver_one(lease.id, now=now)
            if outcome in ("delivered", "failed", "gave_up", "suppressed"):
                setattr(report, outcome, getattr(report, outcome) + 1)
    return report
