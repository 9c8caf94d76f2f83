"""The outbox: notifications are rows written in the same transaction as the change they report.

`notify` asks the routing table who hears of an event and on which channels, and writes one row
per recipient and channel, keyed so that a repeated change never enqueues twice. A row holds
references and what the recipient's role may see; the narrative and one-time codes travel
encrypted (sealed by the caller), chat rows hold neither. A row is due as soon as it is written.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session, col, select

from models.enums import (
    Locale,
    NotificationChannel,
    NotificationEvent,
    NotificationStatus,
    Role,
    Visibility,
)
from models.tables import CaseMember, Notification, RemediationCase, Stakeholder
from notifications.routing import APPROVERS, OWNER, Routing

# Context keys that only the recipient's own e-mail may carry (never a chat channel).
PRIVATE_KEYS = frozenset({"code_ciphertext", "link_id", "sealed"})


def _roles_of(session: Session, case_id: uuid.UUID) -> dict[uuid.UUID, set[Role]]:
    roles: dict[uuid.UUID, set[Role]] = {}
    for member in session.exec(select(CaseMember).where(CaseMember.case_id == case_id)).all():
        roles.setdefault(member.stakeholder_id, set()).add(member.role)
    return roles


def _usable(person: Stakeholder, channel: NotificationChannel) -> bool:
    if not person.active:
        return False
    if channel == NotificationChannel.EMAIL:
        return bool(person.email)
    return bool(person.chat_kind and person.chat_secret_ref)


def notify(
    session: Session,
    *,
    routing: Routing,
    event: NotificationEvent,
    case: RemediationCase,
    key: str,
    now: datetime,
    context: dict[str, Any],
    sealed_narrative: str | None = None,
    approvers: Iterable[Stakeholder] = (),
    owner: Stakeholder | None = None,
    private: dict[uuid.UUID, dict[str, Any]] | None = None,
    mentions: Iterable[str] = (),
) -> list[Notification]:
    """Enqueue an event's messages for everyone the routing names (idempotent by key)."""
    roles = _roles_of(session, case.id)
    members: dict[uuid.UUID, Stakeholder] = {}
    ids = list(roles)
    if ids:
        for person in session.exec(select(Stakeholder).where(col(Stakeholder.id).in_(ids))):
            members[person.id] = person
    written = []
    seen: set[tuple[uuid.UUID, NotificationChannel]] = set()
    for recipient, channels in routing.events[event].items():
        if recipient == APPROVERS:
            people = list(approvers)
        elif recipient == OWNER:
            people = [owner] if owner is not None else []
        else:
            people = sorted(
                (members[i] for i, r in roles.items() if recipient in r and i in members),
                key=lambda p: p.key,
            )
        for person in people:
            visibility = routing.widest(roles.get(person.id, set()))
            for channel in channels:
                if (person.id, channel) in seen or not _usable(person, channel):
                    continue
                seen.add((person.id, channel))
                row_context = {**context, "visibility": visibility.value}
                if channel == NotificationChannel.EMAIL:
                    row_context.update((private or {}).get(person.id, {}))
                    if sealed_narrative and visibility == Visibility.NARRATIVE:
                        row_context["sealed"] = sealed_narrative
                row = _enqueue(
                    session,
                    key=f"{key}:{person.key}:{channel.value}",
                    event=event,
                    recipient=person,
                    channel=channel,
                    case_id=case.id,
                    now=now,
                    context=row_context,
                    mentions=list(mentions),
                )
                if row is not None:
                    written.append(row)
    return written


def _enqueue(
    session: Session,
    *,
    key: str,
    event: NotificationEvent,
    recipient: Stakeholder,
    channel: NotificationChannel,
    case_id: uuid.UUID | None,
    now: datetime,
    context: dict[str, Any],
    mentions: list[str],
) -> Notification | None:
    existing = session.exec(select(Notification).where(Notification.idempotency_key == key)).first()
    if existing is not None:
        return None
    row = Notification(
        case_id=case_id,
        event=event.value,
        recipient_id=recipient.id,
        channel=channel,
        locale=Locale(recipient.locale),
        template=event.value,
        context=context,
        idempotency_key=key,
        status=NotificationStatus.PENDING,
        mentions=mentions,
        created_at=now,
        # due at once by the wall clock too: a change recorded as of a later moment (a simulated
        # sweep) is sent now, and leases and retries then run on the wall clock (tasks/drain.py)
        next_attempt_at=min(now, datetime.now(UTC)),
    )
    session.add(row)
    return row


# --- what an operator sees of the outbox (`remedy notifications list`) ---------------------------

# An error is stored in words that hold no secret (notifications/send.py); whatever a channel
# might one day word otherwise, an address, a URL or a token-like string is never shown.
_ADDRESSES = (
    re.compile(r"\b[a-z][a-z0-9+.\-]*://\S*", re.I),  # URLs (apprise's hold credentials)
    re.compile(r"[^\s@:/]+@[^\s@]+"),  # e-mail addresses
    re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"),  # IP addresses
)
_TOKEN = re.compile(r"\b(?=[\w-]*\d)[\w-]{20,}\b")


def without_addresses(text: str) -> str:
    """Return a text with every URL, e-mail address and IP address in it replaced."""
    for pattern in _ADDRESSES:
        text = pattern.sub("[address]", text)
    return text


def shown_error(error: str | None) -> str | None:
    """Return a stored delivery error as an operator may see it: no address, URL or secret."""
    return None if error is None else _TOKEN.sub("[redacted]", without_addresses(error))


class OutboxEntry(BaseModel):
    """One outbox message as an operator sees it: references, states and counts only."""

    id: uuid.UUID
    case_ref: str | None
    event: str
    channel: NotificationChannel
    recipient: str  # a stakeholder key, or "reporter" (never their address)
    status: NotificationStatus
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    last_error: str | None


def outbox_entries(
    session: Session,
    *,
    case_id: uuid.UUID | None = None,
    status: NotificationStatus | None = None,
    channel: NotificationChannel | None = None,
    limit: int = 500,
) -> list[OutboxEntry]:
    """List outbox messages, newest first (of one case, status or channel if given)."""
    query = (
        select(Notification, RemediationCase.reference, Stakeholder.key)
        .join(RemediationCase, col(RemediationCase.id) == col(Notification.case_id), isouter=True)
        .join(Stakeholder, col(Stakeholder.id) == col(Notification.recipient_id), isouter=True)
        .order_by(col(Notification.created_at).desc(), col(Notification.idempotency_key))
        .limit(limit)
    )
    if case_id is not None:
        query = query.where(Notification.case_id == case_id)
    if status is not None:
        query = query.where(Notification.status == status)
    if channel is not None:
        query = query.where(Notification.channel == channel)
    return [
        OutboxEntry(
            id=row.id,
            case_ref=reference,
            event=row.event,
            channel=row.channel,
            recipient=key or "reporter",
            status=row.status,
            attempts=row.attempts,
            created_at=row.created_at,
            next_attempt_at=row.next_attempt_at
            if row.status == NotificationStatus.PENDING
            else None,
            delivered_at=row.delivered_at,
            last_error=shown_error(row.last_error),
        )
        for row, reference, key in session.exec(query).all()
    ]
