"""The outbox: notifications are rows written in the same transaction as the change they report.

`notify` asks the routing table who hears of an event and on which channels, and writes one row
per recipient and channel, keyed so that a repeated change never enqueues twice. A row holds
references and what the recipient's role may see; the narrative and one-time codes travel
encrypted (sealed by the caller), chat rows hold neither. A row is due as soon as it is written.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

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
