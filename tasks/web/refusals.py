"""Why the approval page refuses a link, in the words the page shows, and the audit of it.

A refused link changes nothing but the audit chain: one event on its case's chain, naming the link
and the reason, never the token. A token we never issued is junk and is not audited here, one by
one: tasks/web/ratelimit.py counts it per client address and writes one event per address a minute
on the `web` chain.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from models.enums import LinkPurpose
from tasks.store.audit import SYSTEM_CHAIN, append_audit
from tasks.store.db import unit_of_work

log = logging.getLogger("remedy.approval_page")

ACTOR = "system:approval-page"


class LinkRefusedError(Exception):
    """A link may not be shown or used; the page says why with `status`, `title`, `message`."""

    def __init__(
        self, status: int, title: str, message: str, reason: str, hint: str | None = None
    ) -> None:
        super().__init__(f"{reason}: {title}")
        self.status, self.title, self.message = status, title, message
        self.reason, self.hint = reason, hint


@dataclass(frozen=True)
class Refusal:
    """What the page says for one kind of refused link (the audited reason is given per use)."""

    status: int
    title: str
    message: str

    def error(self, reason: str, hint: str | None = None) -> LinkRefusedError:
        """Return the error that refuses a link for this reason."""
        return LinkRefusedError(self.status, self.title, self.message, reason, hint)


TAMPERED = Refusal(
    400,
    "This link is not valid",
    "The address is incomplete or was changed on the way. Open the link from your message "
    "again; if it still fails, ask the case lead for a new one.",
)
EXPIRED = Refusal(
    410,
    "This link has expired",
    "Links to the approval page work for a limited time. Ask the case lead for a new one, or "
    "decide in the Prefect UI with the code from your message.",
)
USED = Refusal(
    410,
    "This link was used already",
    "Each link works once, and this one has been used. If that was not you, tell the case lead.",
)
NOT_APPROVER = Refusal(
    403,
    "This link was sent to someone who may not take this decision",
    "The person this link was made for is no longer a designated approver of this decision "
    "(roles or the directory changed). Ask the case lead.",
)
NOT_OWNER = Refusal(
    403,
    "This link was sent to someone who may not report on this milestone",
    "The person this link was made for no longer owns this milestone. Ask the case lead.",
)
SOMEONE_ELSE = Refusal(
    403,
    "This link was sent to someone else",
    "The stakeholder key you typed is not the one this link was made for. Only its recipient "
    "may use it; nothing was changed and the link still works for them.",
)
CSRF = Refusal(
    403,
    "This form could not be accepted",
    "The submission did not come from this page's own form. Open the link again and submit "
    "the form shown there; nothing was changed.",
)
NO_LONGER_NEEDED = Refusal(
    409,
    "This decision is no longer needed",
    "The case left the step that asked for it (it was put on hold, closed early or "
    "revised); nothing was changed. A new request reaches you if the step asks again.",
)


def audit_refusal(
    *,
    reason: str,
    now: datetime,
    case_ref: str | None = None,
    link_id: uuid.UUID | None = None,
    purpose: LinkPurpose | None = None,
) -> None:
    """Record a refused link on the case's chain (the system chain if no link is known)."""
    details: dict[str, Any] = {"reason": reason}
    if purpose is not None:
        details["purpose"] = purpose.value
    with unit_of_work() as session:
        append_audit(
            session,
            chain=case_ref or SYSTEM_CHAIN,
            actor=ACTOR,
            action="link.refused",
            at=now,
            subject_type="approval_link" if link_id else None,
            subject_id=str(link_id) if link_id else None,
            details=details,
        )
    log.info("link refused: case=%s link=%s reason=%s", case_ref or "-", link_id or "-", reason)
