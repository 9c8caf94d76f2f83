"""What the reporter's thread tells whom: the case team that the reporter wrote, the reporter
that there is news. Neither message carries a message's text; the reporter's names no case.

The reporter is no stakeholder: their row in the outbox names the receipt, not an address, and
the delivery decrypts the receipt's contact when it sends (`reporter_address`), so the contact is
never copied into the outbox in clear.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from sqlmodel import Session, select

from models.enums import (
    Locale,
    NotificationChannel,
    NotificationEvent,
    NotificationStatus,
)
from models.settings import get_settings
from models.tables import Notification, RemediationCase, ReporterReceipt
from notifications.outbox import notify
from notifications.routing import REPORTER
from tasks.context import current_routing
from tasks.store.db import read_only
from tasks.store.vault import Vault, get_vault

# Good enough to tell an e-mail address from a phone number or "via the NGO"; the SMTP server
# judges the rest.
EMAIL = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$")


def is_email(contact: str | None) -> bool:
    """Tell whether a contact is an e-mail address the reporter may be written to."""
    return bool(contact and EMAIL.match(contact.strip()))


def seal_contact(
    vault: Vault, session: Session, case_id: uuid.UUID, contact: str | None
) -> str | None:
    """Encrypt a reporter's contact for the receipt with the case's key (None when none given)."""
    if not contact or not contact.strip():
        return None
    return vault.encrypt_for_case(session, case_id, {"contact": contact.strip()})


def tell_case_team(
    session: Session, *, case: RemediationCase, receipt: ReporterReceipt, key: str, now: datetime
) -> int:
    """Tell the case team that the reporter wrote on a case (no content); return rows written."""
    rows = notify(
        session,
        routing=current_routing(),
        event=NotificationEvent.REPORTER_MESSAGE,
        case=case,
        key=key,
        now=now,
        context={"case_ref": case.reference, "receipt_ref": receipt.receipt_ref, "step": case.step},
    )
    return len(rows)


def tell_reporter(session: Session, *, receipt: ReporterReceipt, key: str, now: datetime) -> bool:
    """Tell a reporter who agreed to it that there is news (no content, no case reference).

    Nothing is written unless the routing sends reporter_news to the reporter by e-mail, the
    reporter agreed to be contacted and their contact is an e-mail address. Returns whether a
    message was enqueued (once per key).
    """
    routes = current_routing().events[NotificationEvent.REPORTER_NEWS]
    if NotificationChannel.EMAIL not in routes.get("reporter", ()):  # routing.REPORTER
        return False
    if not receipt.contact_ok or not is_email(_contact(get_vault(), session, receipt)):
        return False
    full_key = f"{key}:{REPORTER}:{NotificationChannel.EMAIL.value}"
    taken = select(Notification.id).where(Notification.idempotency_key == full_key)
    if session.exec(taken).first() is not None:
        return False
    session.add(
        Notification(
            case_id=receipt.case_id,
            event=NotificationEvent.REPORTER_NEWS.value,
            recipient_id=None,
            receipt_id=receipt.id,
            channel=NotificationChannel.EMAIL,
            locale=Locale(receipt.locale),
            template=NotificationEvent.REPORTER_NEWS.value,
            context={"receipt_ref": receipt.receipt_ref, "follow_up_link": follow_up_link()},
            idempotency_key=full_key,
            status=NotificationStatus.PENDING,
            mentions=[],
            created_at=now,
            next_attempt_at=min(now, datetime.now(UTC)),  # due on the wall clock too (outbox)
        )
    )
    return True


def tell_status(session: Session, *, receipt: ReporterReceipt, now: datetime) -> bool:
    """Tell a reporter who agreed to it that their report's status changed (never to what).

    The monitoring sweep calls it when the status it last told differs, and records the new one
    in the same transaction (tasks/monitoring/reporter_deadlines.py): that makes it once per
    change. The key names the moment, not the status: it travels with the e-mail (X-Remedy-Key).
    """
    key = f"reporter-news:status:{receipt.id}:{now:%Y%m%dT%H%M%S%f}"
    return tell_reporter(session, receipt=receipt, key=key, now=now)


def follow_up_link() -> str:
    """Return the public follow-up page's address (the approval page's app serves it)."""
    return f"{get_settings().approval_base_url.rstrip('/')}/follow-up"


def _contact(vault: Vault, session: Session, receipt: ReporterReceipt) -> str | None:
    if receipt.contact_ciphertext is None:
        return None
    sealed = receipt.contact_ciphertext
    contact = vault.decrypt_for_case(session, receipt.case_id, sealed).get("contact")
    return str(contact).strip() if contact else None


def reporter_address(receipt_id: uuid.UUID) -> str | None:
    """Return the e-mail address to tell a receipt's reporter at, decrypted for one delivery.

    None when the reporter may not or cannot be written to (any more): the delivery then fails
    the message without naming anyone.
    """
    with read_only() as session:
        receipt = session.get(ReporterReceipt, receipt_id)
        if receipt is None or not receipt.contact_ok:
            return None
        contact = _contact(get_vault(), session, receipt)
    return contact if is_email(contact) else None
