"""Passkeys (WebAuthn) for approvers: the relying party, single-use challenges, and checking what
a browser's authenticator answered, for an enrolment (registration) or a decision (assertion).

A passkey is a key pair kept by the person's device or security key; the case store keeps only
the public key. The relying party is the approval page as stakeholders reach it
(REMEDY_APPROVAL_BASE_URL): its host name is the RP ID, its scheme, host and port the origin a
browser must report. A challenge is handed out bound to one person and one link, lives a few
minutes and is taken once, whatever the answer; so a replayed, foreign or stale answer is refused.

webauthn (with its ASN.1, CBOR and OpenSSL parts) is imported by the functions that need it: the
decision engine reads `active_credentials` from every step's flow process, fresh at each pickup.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlmodel import Session, col, select

from models.security import PasskeyCredential, WebAuthnChallenge
from models.settings import get_settings
from tasks.store.audit import append_audit
from tasks.store.db import read_only, unit_of_work

if TYPE_CHECKING:
    from webauthn.helpers.structs import (
        AuthenticationCredential,
        PublicKeyCredentialDescriptor,
        RegistrationCredential,
    )

RP_NAME = "Remedy"
CHALLENGE_TTL = timedelta(minutes=5)
CEREMONY_TIMEOUT_MS = 120_000  # how long the browser waits for the person at the authenticator
MAX_ANSWER_CHARS = 16_000  # an authenticator's answer, as JSON; real ones are a few KB
Purpose = Literal["registration", "authentication"]
REGISTRATION: Purpose = "registration"
AUTHENTICATION: Purpose = "authentication"


class PasskeyUnavailableError(Exception):
    """The approval page's address cannot carry passkeys (an IP address, or plain http off this
    machine); the message says what the operator sets instead."""


class PasskeyRefusedError(Exception):
    """An authenticator's answer is not accepted; `reason` is what the audit records."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason, self.message = reason, message


# --- the relying party ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RelyingParty:
    """Who a passkey is for: the page's host name (RP ID) and origin, as browsers see them."""

    rp_id: str
    origin: str


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def relying_party() -> RelyingParty:
    """Return the relying party the approval base URL names, or raise PasskeyUnavailableError."""
    url = get_settings().approval_base_url
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    scheme = parts.scheme.lower()
    if not host or _is_ip(host):
        # WebAuthn binds a passkey to a domain; browsers refuse an IP address as RP ID
        raise PasskeyUnavailableError(
            "Passkeys need the approval page addressed by a name, not an IP address: set "
            "REMEDY_APPROVAL_BASE_URL to https://<host name> (or http://localhost:<port> on "
            "this machine)."
        )
    if scheme != "https" and host != "localhost":
        raise PasskeyUnavailableError(
            "Passkeys need the approval page on https (browsers allow plain http only for "
            "localhost): set REMEDY_APPROVAL_BASE_URL to https://<host name>."
        )
    port = parts.port
    default = {"http": 80, "https": 443}[scheme]
    origin = f"{scheme}://{host}" + (f":{port}" if port and port != default else "")
    return RelyingParty(rp_id=host, origin=origin)


# --- credentials ---------------------------------------------------------------------------------


def active_credentials(session: Session, stakeholder_id: uuid.UUID) -> list[PasskeyCredential]:
    """Return a person's passkeys that are not revoked, oldest first."""
    return list(
        session.exec(
            select(PasskeyCredential)
            .where(
                PasskeyCredential.stakeholder_id == stakeholder_id,
                col(PasskeyCredential.revoked_at).is_(None),
            )
            .order_by(col(PasskeyCredential.created_at))
        ).all()
    )


def has_passkey(stakeholder_id: uuid.UUID) -> bool:
    """Tell whether a person has a passkey they can decide with."""
    with read_only() as session:
        return bool(active_credentials(session, stakeholder_id))


def _descriptor(credential: PasskeyCredential) -> PublicKeyCredentialDescriptor:
    from webauthn.helpers import base64url_to_bytes
    from webauthn.helpers.structs import AuthenticatorTransport, PublicKeyCredentialDescriptor

    known = {t.value for t in AuthenticatorTransport}
    transports = [AuthenticatorTransport(t) for t in credential.transports if t in known]
    return PublicKeyCredentialDescriptor(
        id=base64url_to_bytes(credential.credential_id), transports=transports or None
    )


# --- challenges ----------------------------------------------------------------------------------


def _new_challenge(
    session: Session,
    *,
    stakeholder_id: uuid.UUID,
    purpose: Purpose,
    link_id: uuid.UUID,
    now: datetime,
) -> bytes:
    from webauthn.helpers import bytes_to_base64url

    challenge = secrets.token_bytes(32)
    session.add(
        WebAuthnChallenge(
            stakeholder_id=stakeholder_id,
            purpose=purpose,
            link_id=link_id,
            challenge=bytes_to_base64url(challenge),
            created_at=now,
            expires_at=now + CHALLENGE_TTL,
        )
    )
    return challenge


def take_challenge(
    challenge: bytes,
    *,
    stakeholder_id: uuid.UUID,
    purpose: Purpose,
    link_id: uuid.UUID,
    now: datetime,
) -> bool:
    """Use up a challenge handed to this person for this link, once; False if there is none
    (never handed out, to someone else or for another link, used already, or expired)."""
    from webauthn.helpers import bytes_to_base64url

    with unit_of_work() as session:
        result = session.connection().execute(
            sa.update(WebAuthnChallenge)
            .where(
                col(WebAuthnChallenge.challenge) == bytes_to_base64url(challenge),
                col(WebAuthnChallenge.stakeholder_id) == stakeholder_id,
                col(WebAuthnChallenge.purpose) == purpose,
                col(WebAuthnChallenge.link_id) == link_id,
                col(WebAuthnChallenge.used_at).is_(None),
                col(WebAuthnChallenge.expires_at) > now,
            )
            .values(used_at=now)
        )
        return result.rowcount == 1


def _client_challenge(client_data_json: bytes) -> bytes:
    from webauthn.helpers import parse_client_data_json
    from webauthn.helpers.exceptions import WebAuthnException

    try:
        return parse_client_data_json(client_data_json).challenge
    except (WebAuthnException, ValueError, TypeError, KeyError):
        raise _malformed() from None


def _malformed() -> PasskeyRefusedError:
    return PasskeyRefusedError(
        "passkey-malformed", "The answer from your passkey could not be read. Try again."
    )


def _parse(answer: str, parser: Any) -> Any:
    from webauthn.helpers.exceptions import WebAuthnException

    if not answer or len(answer) > MAX_ANSWER_CHARS:
        raise PasskeyRefusedError(
            "passkey-missing",
            "This decision needs your passkey, and none was used. Submit the form again and "
            "confirm with your passkey when your browser asks.",
        )
    try:
        return parser(answer)
    except (WebAuthnException, ValueError, TypeError, KeyError, json.JSONDecodeError):
        raise _malformed() from None


# --- registration (enrolment) --------------------------------------------------------------------


def registration_options(
    *, stakeholder_id: uuid.UUID, stakeholder_key: str, link_id: uuid.UUID, now: datetime
) -> str:
    """Hand out a registration challenge for a person's enrolment link; return the options JSON.

    The person is named on their authenticator by their directory key, never their name.
    """
    from webauthn import generate_registration_options, options_to_json
    from webauthn.helpers.structs import (
        AuthenticatorSelectionCriteria,
        ResidentKeyRequirement,
        UserVerificationRequirement,
    )

    rp = relying_party()
    with unit_of_work() as session:
        existing = [_descriptor(c) for c in active_credentials(session, stakeholder_id)]
        challenge = _new_challenge(
            session, stakeholder_id=stakeholder_id, purpose=REGISTRATION, link_id=link_id, now=now
        )
    options = generate_registration_options(
        rp_id=rp.rp_id,
        rp_name=RP_NAME,
        user_id=stakeholder_id.bytes,
        user_name=stakeholder_key,
        user_display_name=stakeholder_key,
        challenge=challenge,
        timeout=CEREMONY_TIMEOUT_MS,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=existing,
    )
    return str(options_to_json(options))


@dataclass(frozen=True)
class NewPasskey:
    """A passkey whose registration was verified, ready to be stored (public parts only)."""

    credential_id: str  # base64url
    public_key: str  # base64url COSE key
    sign_count: int
    transports: list[str]


def verify_registration(
    *, stakeholder_id: uuid.UUID, link_id: uuid.UUID, answer: str, now: datetime
) -> NewPasskey:
    """Check a browser's answer to a registration challenge for this person and link; return the
    new passkey, or raise PasskeyRefusedError (the challenge is used up either way)."""
    from webauthn import verify_registration_response
    from webauthn.helpers import bytes_to_base64url, parse_registration_credential_json
    from webauthn.helpers.exceptions import WebAuthnException

    rp = relying_party()
    credential: RegistrationCredential = _parse(answer, parse_registration_credential_json)
    challenge = _client_challenge(credential.response.client_data_json)
    if not take_challenge(
        challenge, stakeholder_id=stakeholder_id, purpose=REGISTRATION, link_id=link_id, now=now
    ):
        raise PasskeyRefusedError(
            "passkey-challenge",
            "This attempt took too long or was answered already. Start again from the button.",
        )
    try:
        verified = verify_registration_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=rp.rp_id,
            expected_origin=rp.origin,
            require_user_verification=True,
        )
    except (WebAuthnException, ValueError, TypeError, KeyError):
        raise PasskeyRefusedError(
            "passkey-invalid", "Your authenticator's answer could not be verified. Try again."
        ) from None
    return NewPasskey(
        credential_id=bytes_to_base64url(verified.credential_id),
        public_key=bytes_to_base64url(verified.credential_public_key),
        sign_count=verified.sign_count,
        transports=[t.value for t in credential.response.transports or []],
    )


def store_passkey(
    session: Session,
    new: NewPasskey,
    *,
    stakeholder_id: uuid.UUID,
    enrolled_via: str,
    now: datetime,
) -> PasskeyCredential:
    """Store a verified passkey in the caller's transaction (refused if it is known already)."""
    known = session.exec(
        select(PasskeyCredential).where(PasskeyCredential.credential_id == new.credential_id)
    ).first()
    if known is not None:
        raise PasskeyRefusedError(
            "passkey-known", "This passkey is registered already; nothing was changed."
        )
    row = PasskeyCredential(
        stakeholder_id=stakeholder_id,
        credential_id=new.credential_id,
        public_key=new.public_key,
        sign_count=new.sign_count,
        transports=new.transports,
        enrolled_via=enrolled_via[:80],
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row


# --- authentication (a decision) -----------------------------------------------------------------


def authentication_options(*, stakeholder_id: uuid.UUID, link_id: uuid.UUID, now: datetime) -> str:
    """Hand out a challenge that only this person's passkeys can answer; return options JSON."""
    from webauthn import generate_authentication_options, options_to_json
    from webauthn.helpers.structs import UserVerificationRequirement

    rp = relying_party()
    with unit_of_work() as session:
        allowed = [_descriptor(c) for c in active_credentials(session, stakeholder_id)]
        if not allowed:
            raise PasskeyRefusedError(
                "no-passkey", "You have no passkey yet; ask the case lead for an invitation."
            )
        challenge = _new_challenge(
            session, stakeholder_id=stakeholder_id, purpose=AUTHENTICATION, link_id=link_id, now=now
        )
    options = generate_authentication_options(
        rp_id=rp.rp_id,
        challenge=challenge,
        timeout=CEREMONY_TIMEOUT_MS,
        allow_credentials=allowed,
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    return str(options_to_json(options))


def verify_passkey(
    *,
    stakeholder_id: uuid.UUID,
    link_id: uuid.UUID,
    answer: str,
    now: datetime,
    chain: str,
) -> uuid.UUID:
    """Check a browser's answer to an authentication challenge for this person and link; return
    the passkey's id, or raise PasskeyRefusedError (the challenge is used up either way)."""
    from webauthn import verify_authentication_response
    from webauthn.helpers import base64url_to_bytes, parse_authentication_credential_json
    from webauthn.helpers.exceptions import WebAuthnException

    rp = relying_party()
    credential: AuthenticationCredential = _parse(answer, parse_authentication_credential_json)
    challenge = _client_challenge(credential.response.client_data_json)
    if not take_challenge(
        challenge, stakeholder_id=stakeholder_id, purpose=AUTHENTICATION, link_id=link_id, now=now
    ):
        raise PasskeyRefusedError(
            "passkey-challenge",
            "This confirmation took too long or was used already. Submit the form again.",
        )
    with read_only() as session:
        stored = session.exec(
            select(PasskeyCredential).where(PasskeyCredential.credential_id == credential.id)
        ).first()
    if stored is None or stored.revoked_at is not None:
        raise PasskeyRefusedError(
            "passkey-unknown", "This passkey is not registered (or was revoked) for Remedy."
        )
    if stored.stakeholder_id != stakeholder_id:
        raise PasskeyRefusedError(
            "passkey-someone-else", "This passkey belongs to someone else than this link's owner."
        )
    try:
        verified = verify_authentication_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=rp.rp_id,
            expected_origin=rp.origin,
            credential_public_key=base64url_to_bytes(stored.public_key),
            credential_current_sign_count=stored.sign_count,
            require_user_verification=True,
        )
    except (WebAuthnException, ValueError, TypeError, KeyError):
        raise PasskeyRefusedError(
            "passkey-invalid", "Your passkey's answer could not be verified. Try again."
        ) from None
    with unit_of_work() as session:
        row = session.get(PasskeyCredential, stored.id, with_for_update=True)
        assert row is not None
        row.sign_count = max(row.sign_count, verified.new_sign_count)
        row.last_used_at = now
        session.add(row)
        append_audit(
            session,
            chain=chain,
            actor=f"passkey:{stored.id}",
            action="passkey.verified",
            at=now,
            subject_type="approval_link",
            subject_id=str(link_id),
            details={"credential": str(stored.id)},
        )
    return stored.id
