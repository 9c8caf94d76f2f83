"""The outbox: notifications are rows written in the same transaction as the change they report."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlmodel import Session, select

from models.enums import Locale, NotificationChannel, NotificationStatus
from models.tables import Notification, Stakeholder


def enqueue(
    session: Session,
    *,
    key: str,
    event: str,
    recipient: Stakeholder,
    template: str,
    context: dict[str, Any],
    now: datetime,
    case_id: uuid.UUID | None = None,
    channel: NotificationChannel = NotificationChannel.EMAIL,
) -> Notification | None:
    """Add one message to the outbox unless its idempotency key is there already."""
    key = f"{key}:{recipient.key}:{channel.value}"
    existing = session.exec(select(Notification).where(Notification.idempotency_key == key)).first()
    if existing is not None:
        return None
    row = Notification(
        case_id=case_id,
        event=event,
        recipient_id=recipient.id,
        channel=channel,
        locale=Locale(recipient.locale),
        template=template,
        context=context,
        idempotency_key=key,
        status=NotificationStatus.PENDING,
        created_at=now,
        next_attempt_at=now,
    )
    session.add(row)
    return row
