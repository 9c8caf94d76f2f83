"""An enrolment link on the approval page: what it shows, the one-time code checked before a
registration challenge is handed out, and the new passkey stored, once.

The page shows an enrolment link (GET changes nothing) and asks for the code sent over the
person's other channel, unless a case lead confirmed the invitation. A challenge is handed out
only after that proof, bound to the person and the link, so the final POST that carries the
authenticator's answer needs no code again. Wrong codes are counted on the invitation; at the
policy's `max_failed_attempts` it is locked (audited once) until a case lead confirms it or a new
invitation replaces it. Refusals are audited like other links' (tasks/web/refusals.py).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel
from sqlmodel import select

from models.enums import LinkPurpose
from models.security import PasskeyEnrolment
from models.tables import ApprovalLink, RemediationCase, Stakeholder
from tasks.context import current_policy
from tasks.store.audit import SYSTEM_CHAIN, append_audit
from tasks.store.db import read_only, unit_of_work
from tasks.store.links import LinkInvalidError, read_token
from tasks.web.enrolment import BY_CODE, code_matches
from tasks.web.forms import FormData, first
from tasks.web.gate import PASSKEY_FIELD, from_the_page, unavailable
from tasks.web.passkeys import (
    PasskeyRefusedError,
    PasskeyUnavailableError,
    registration_options,
    store_passkey,
    verify_registration,
)
from tasks.web.ratelimit import count_junk
from tasks.web.refusals import (
    ACTOR,
    CSRF,
    TAMPERED,
    LinkRefusedError,
    Refusal,
    audit_refusal,
)
from tasks.web.resolve import claim_link, release_link

CODE_FIELD = "code"

WITHDRAWN = Refusal(
    410,
    "This invitation has expired",
    "Invitations to add a passkey work for a limited time, and a newer one replaces the last. "
    "Use the link in your latest invitation, or ask the case lead for a new one.",
)
DONE = Refusal(
    410,
    "This invitation was used already",
    "A passkey was added with this invitation. If that was not you, tell the case lead at once: "
    "they can revoke it (`remedy passkey revoke`).",
)
NOT_YOURS = Refusal(
    403,
    "This invitation is for someone who may not use it",
    "The person it was made for is no longer active in the directory. Ask the case lead.",
)
WRONG_CODE = Refusal(
    403,
    "The code is not right",
    "Type the one-time code sent to you by chat with this invitation (8 letters and digits). "
    "Nothing was changed.",
)
LOCKED = Refusal(
    403,
    "Too many wrong codes",
    "This invitation is locked after too many wrong codes. Ask the case lead to confirm it is "
    "you, or for a new invitation.",
)
NOT_CONFIRMED = Refusal(
    409,
    "The case lead has not confirmed yet",
    "You have no second channel for a code, so the case lead confirms that this invitation is "
    "yours. Ask them to, then open this link again.",
)


class EnrolView(BaseModel):
    """What a valid enrolment link allows, and for whom (references only)."""

    link_id: uuid.UUID
    enrolment_id: uuid.UUID
    stakeholder_id: uuid.UUID
    stakeholder_key: str
    case_ref: str
    expires_at: datetime
    needs_code: bool
    waits_for_lead: bool
    confirmed_by: str | None = None

    def refused(self, refusal: Refusal, reason: str, *, now: datetime) -> LinkRefusedError:
        """Audit that this enrolment link was refused for a reason; return the error."""
        audit_refusal(
            reason=reason,
            now=now,
            case_ref=self.case_ref,
            link_id=self.link_id,
            purpose=LinkPurpose.ENROL,
        )
        return refusal.error(reason)


def _read(token: str) -> tuple[uuid.UUID, datetime] | None:
    if not token.isascii():
        return None
    try:
        return read_token(token)
    except LinkInvalidError:
        return None


def is_enrolment_link(token: str) -> bool:
    """Tell whether a token is a valid signature over an enrolment link (reads only)."""
    read = _read(token)
    if read is None:
        return False
    with read_only() as session:
        link = session.get(ApprovalLink, read[0])
        return link is not None and link.purpose == LinkPurpose.ENROL


def _why_not(
    link: ApprovalLink,
    enrolment: PasskeyEnrolment | None,
    person: Stakeholder | None,
    token_expiry: datetime,
    now: datetime,
) -> LinkRefusedError | None:
    if enrolment is None:
        return TAMPERED.error("no-enrolment")
    if enrolment.completed_at is not None or link.used_at is not None:
        return DONE.error("replayed")
    if min(link.expires_at, token_expiry, enrolment.expires_at) <= now:
        return WITHDRAWN.error("expired")
    if person is None or not person.active:
        return NOT_YOURS.error("wrong-recipient")
    if enrolment.failures >= current_policy().approvals.max_failed_attempts:
        return LOCKED.error("enrol-locked")
    return None


def resolve_enrolment(token: str, *, now: datetime) -> EnrolView:
    """Return what an enrolment link allows, or raise LinkRefusedError (audited)."""
    read = _read(token)
    if read is None:
        count_junk("tampered", now=now)  # junk is counted per address, audited in bulk
        raise TAMPERED.error("tampered")
    link_id, token_expiry = read
    with read_only() as session:
        link = session.get(ApprovalLink, link_id)
        if link is None or link.purpose != LinkPurpose.ENROL:
            count_junk("unknown-link", now=now)
            raise TAMPERED.error("unknown-link")
        case = session.get(RemediationCase, link.case_id)
        assert case is not None
        person = session.get(Stakeholder, link.stakeholder_id)
        enrolment = session.exec(
            select(PasskeyEnrolment).where(PasskeyEnrolment.link_id == link.id)
        ).one_or_none()
    refused = _why_not(link, enrolment, person, token_expiry, now)
    if refused is not None:
        audit_refusal(
            reason=refused.reason,
            now=now,
            case_ref=case.reference,
            link_id=link.id,
            purpose=LinkPurpose.ENROL,
        )
        raise refused
    assert enrolment is not None and person is not None
    return EnrolView(
        link_id=link.id,
        enrolment_id=enrolment.id,
        stakeholder_id=person.id,
        stakeholder_key=person.key,
        case_ref=case.reference,
        expires_at=min(link.expires_at, enrolment.expires_at),
        needs_code=enrolment.code_hash is not None and enrolment.confirmed_by is None,
        waits_for_lead=enrolment.code_hash is None and enrolment.confirmed_by is None,
        confirmed_by=enrolment.confirmed_by,
    )


def check_enrol_post(
    view: EnrolView, form: FormData, *, origin: str | None, fetch_site: str | None, now: datetime
) -> None:
    """Refuse (audited) a POST without the page's CSRF token or from elsewhere."""
    if not from_the_page(view.link_id, form, origin=origin, fetch_site=fetch_site):
        raise view.refused(CSRF, "csrf", now=now)


def _check_code(view: EnrolView, code: str, *, now: datetime) -> None:
    """Accept the invitation's code, or count a wrong one (and lock at the limit, audited once)."""
    limit = current_policy().approvals.max_failed_attempts
    with unit_of_work() as session:
        enrolment = session.get(PasskeyEnrolment, view.enrolment_id, with_for_update=True)
        assert enrolment is not None
        if enrolment.failures < limit and code_matches(enrolment, code):
            return
        already_locked = enrolment.failures >= limit
        if not already_locked:
            enrolment.failures += 1
            session.add(enrolment)
            if enrolment.failures >= limit:
                append_audit(
                    session,
                    chain=SYSTEM_CHAIN,
                    actor=ACTOR,
                    action="passkey.enrolment_locked",
                    at=now,
                    subject_type="passkey_enrolment",
                    subject_id=str(enrolment.id),
                    details={"stakeholder": view.stakeholder_key, "failures": enrolment.failures},
                )
        locked = enrolment.failures >= limit
    # each wrong code is counted, not audited: the lock is (one event, not one per try)
    raise (LOCKED if locked else WRONG_CODE).error("enrol-locked" if locked else "wrong-code")


def enrolment_options(view: EnrolView, form: FormData, *, now: datetime) -> str:
    """Hand out a registration challenge once the person proved the invitation is theirs."""
    if view.waits_for_lead:
        raise NOT_CONFIRMED.error("not-confirmed")
    if view.needs_code:
        _check_code(view, first(form, CODE_FIELD), now=now)
    try:
        return registration_options(
            stakeholder_id=view.stakeholder_id,
            stakeholder_key=view.stakeholder_key,
            link_id=view.link_id,
            now=now,
        )
    except PasskeyUnavailableError as exc:
        raise unavailable(exc) from None


def complete_enrolment(view: EnrolView, form: FormData, *, now: datetime) -> uuid.UUID:
    """Store the passkey the browser created for this invitation, once; return its id.

    The link is used up first and given back if the passkey is not stored, whatever stopped it.
    """
    if view.waits_for_lead:
        raise NOT_CONFIRMED.error("not-confirmed")
    if not claim_link(view.link_id, now=now):
        raise view.refused(DONE, "replayed", now=now)
    try:
        new = verify_registration(
            stakeholder_id=view.stakeholder_id,
            link_id=view.link_id,
            answer=first(form, PASSKEY_FIELD),
            now=now,
        )
        via = f"confirmed-by:{view.confirmed_by}" if view.confirmed_by else BY_CODE
        with unit_of_work() as session:
            enrolment = session.get(PasskeyEnrolment, view.enrolment_id, with_for_update=True)
            assert enrolment is not None
            if enrolment.completed_at is not None or enrolment.expires_at <= now:
                raise PasskeyRefusedError("expired", "This invitation is no longer open.")
            row = store_passkey(
                session, new, stakeholder_id=view.stakeholder_id, enrolled_via=via, now=now
            )
            enrolment.completed_at = now
            session.add(enrolment)
            append_audit(
                session,
                chain=SYSTEM_CHAIN,
                actor=f"stakeholder:{view.stakeholder_key}",
                action="passkey.enrolled",
                at=now,
                subject_type="passkey_credential",
                subject_id=str(row.id),
                details={
                    "stakeholder": view.stakeholder_key,
                    "enrolment": str(view.enrolment_id),
                    "via": via,
                    "case": view.case_ref,
                },
            )
            return row.id
    except PasskeyUnavailableError as exc:
        release_link(view.link_id)
        raise unavailable(exc) from None
    except PasskeyRefusedError as exc:
        release_link(view.link_id)
        refusal = Refusal(403, "The passkey was not added", exc.message)
        raise view.refused(refusal, exc.reason, now=now) from None
    except BaseException:
        release_link(view.link_id)
        raise
