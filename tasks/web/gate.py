"""Whether a decision on the approval page needs the approver's passkey, and proving it.

The policy (`approvals.needs_passkey(kind)`, default every kind) decides which decisions need
it. For those, a person with a passkey confirms the submission with it: the page fetches a
challenge that only their passkeys can answer, and posts the browser's answer with the form. A
person without one meets the policy's `without_passkey`: "tell_case_lead" (the page says how to
get one and takes nothing; the case lead was told when the request was issued) or
"link_decides" (the link alone decides, as before passkeys; for trial installations). Milestone
progress reports are not decisions: their links decide alone.
"""

from __future__ import annotations

import hmac
import uuid
from datetime import datetime
from typing import Literal

from models.tables import ApprovalLink
from tasks.context import current_policy
from tasks.store.db import read_only
from tasks.web.forms import CSRF_FIELD, FormData, first
from tasks.web.guard import csrf_token, same_origin
from tasks.web.passkeys import (
    PasskeyRefusedError,
    PasskeyUnavailableError,
    authentication_options,
    has_passkey,
    verify_passkey,
)
from tasks.web.refusals import CSRF, LinkRefusedError, Refusal
from tasks.web.resolve import LinkView

Gate = Literal["passkey", "no-passkey", "link"]
PASSKEY_FIELD = "passkey"  # the authenticator's answer, as JSON (the page's script fills it in)
CHANNEL_LINK, CHANNEL_PASSKEY = "approval-page", "approval-page+passkey"

NEEDS_PASSKEY = Refusal(
    403,
    "This decision needs your passkey",
    "You have no passkey for Remedy yet, so this page cannot take your decision; nothing was "
    "changed and the link still works once you have one. The case lead has been told: ask them "
    "for an invitation to add a passkey on the device you decide from.",
)
# the sentence of a request's description that names its approvers' keys: the page asks for the
# key, so it must not print it (tasks/decisions/requests.py describe)


def stakeholder_of(link_id: uuid.UUID) -> uuid.UUID:
    """Return the person a link was made out to."""
    with read_only() as session:
        link = session.get(ApprovalLink, link_id)
        assert link is not None
        return link.stakeholder_id


def decision_gate(view: LinkView) -> Gate:
    """Say what the page needs from this link's recipient to take its decision."""
    rules = current_policy().approvals
    if view.kind is None or not rules.needs_passkey(view.kind):
        return "link"
    if has_passkey(stakeholder_of(view.link_id)):
        return "passkey"
    return "link" if rules.without_passkey == "link_decides" else "no-passkey"


def from_the_page(
    link_id: uuid.UUID, form: FormData, *, origin: str | None, fetch_site: str | None
) -> bool:
    """Tell whether a POST carries this link's CSRF token and comes from the page itself."""
    given = first(form, CSRF_FIELD)
    token_ok = hmac.compare_digest(given.encode(), csrf_token(link_id).encode())
    return token_ok and same_origin(origin, fetch_site)


def unavailable(exc: PasskeyUnavailableError) -> LinkRefusedError:
    """Return the page's answer when its address cannot carry passkeys (an operator's setting)."""
    return LinkRefusedError(
        503, "Passkeys cannot be used at this address", str(exc), "passkey-unavailable"
    )


def decision_options(
    view: LinkView,
    form: FormData,
    *,
    origin: str | None,
    fetch_site: str | None,
    now: datetime,
) -> str:
    """Hand out a passkey challenge for this link's decision (options JSON); refusals audited."""
    if not from_the_page(view.link_id, form, origin=origin, fetch_site=fetch_site):
        raise view.refused(CSRF, "csrf", now=now)
    if decision_gate(view) != "passkey":
        raise view.refused(NEEDS_PASSKEY, "no-passkey", now=now)
    try:
        return authentication_options(
            stakeholder_id=stakeholder_of(view.link_id), link_id=view.link_id, now=now
        )
    except PasskeyUnavailableError as exc:
        raise unavailable(exc) from None


def prove_decider(view: LinkView, form: FormData, *, now: datetime) -> str:
    """Check that the recipient proved themselves as the policy asks; return how (the channel a
    submission ticket records), or raise LinkRefusedError (audited; nothing is used up)."""
    gate = decision_gate(view)
    if gate == "link":
        return CHANNEL_LINK
    if gate == "no-passkey":
        raise view.refused(NEEDS_PASSKEY, "no-passkey", now=now)
    try:
        verify_passkey(
            stakeholder_id=stakeholder_of(view.link_id),
            link_id=view.link_id,
            answer=first(form, PASSKEY_FIELD),
            now=now,
            chain=view.case_ref,
        )
    except PasskeyUnavailableError as exc:
        raise unavailable(exc) from None
    except PasskeyRefusedError as exc:
        refusal = Refusal(
            403,
            "Your passkey was not accepted",
            f"{exc.message} Nothing was submitted and the link still works.",
        )
        raise view.refused(refusal, exc.reason, now=now) from None
    return CHANNEL_PASSKEY
