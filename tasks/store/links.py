"""Signed, expiring, single-use links to the approval page.

A link's token carries only the link's id and expiry, signed with a key derived from the
encryption key; what the link allows (decide a request, report progress on a milestone) and for
whom is in the `approval_link` row. Tokens are checked in constant time; a tampered, expired,
used or wrong-recipient link changes nothing.
"""

from __future__ import annotations

import base64
import hmac
import json
import uuid
from datetime import UTC, datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlmodel import Session

from models.enums import LinkPurpose
from models.settings import get_settings
from models.tables import ApprovalLink
from tasks.store.vault import get_vault

_SIGNING_INFO = b"remedy approval links v1"
_RUN_LINK_INFO = b"remedy run links v1"
_RUN_LINK_NONCE_INFO = b"remedy run links v1 nonce"
_NONCE_BYTES = 12
_RUN_TOKEN_BYTES = _NONCE_BYTES + 16 + 16  # nonce, the sealed request id, the GCM tag


class LinkInvalidError(Exception):
    """The token is malformed or its signature does not match: it was not issued by us."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(body: str) -> str:
    key = get_vault().derive(_SIGNING_INFO)
    return _b64(hmac.new(key, body.encode(), "sha256").digest())


def create_link(
    session: Session,
    *,
    purpose: LinkPurpose,
    case_id: uuid.UUID,
    stakeholder_id: uuid.UUID,
    now: datetime,
    expires_at: datetime,
    request_id: uuid.UUID | None = None,
    action_id: uuid.UUID | None = None,
    code: str | None = None,
) -> ApprovalLink:
    """Add a link row in the caller's transaction (the code, if any, is stored encrypted)."""
    link = ApprovalLink(
        purpose=purpose,
        case_id=case_id,
        stakeholder_id=stakeholder_id,
        request_id=request_id,
        action_id=action_id,
        code_ciphertext=get_vault().encrypt({"code": code}) if code else None,
        created_at=now,
        expires_at=expires_at,
    )
    session.add(link)
    session.flush()
    return link


def link_token(link_id: uuid.UUID, expires_at: datetime) -> str:
    """Return the signed token for a link."""
    body = _b64(json.dumps({"l": link_id.hex, "e": int(expires_at.timestamp())}).encode())
    return f"{body}.{_signature(body)}"


def read_token(token: str) -> tuple[uuid.UUID, datetime]:
    """Return the link id and expiry a token carries, or raise LinkInvalidError."""
    body, sep, signature = token.partition(".")
    if not sep or not body or len(token) > 400:
        raise LinkInvalidError("malformed link")
    if not hmac.compare_digest(signature, _signature(body)):
        raise LinkInvalidError("the link's signature does not match")
    try:
        data = json.loads(_unb64(body))
        return uuid.UUID(hex=data["l"]), datetime.fromtimestamp(int(data["e"]), UTC)
    except (ValueError, KeyError, TypeError):
        raise LinkInvalidError("malformed link") from None


def link_url(link_id: uuid.UUID, expires_at: datetime) -> str:
    """Return the address of a link on the approval page."""
    base = get_settings().approval_base_url.rstrip("/")
    return f"{base}/a/{link_token(link_id, expires_at)}"


# --- stable links to the run waiting on a decision ------------------------------------------------


def run_link_token(request_id: uuid.UUID) -> str:
    """Return the token of a request's run link: the same every time, opaque to its reader.

    Messages link a waiting decision's run through the approval page (`/r/{token}`), so a run
    replaced by a repair is found again. The token names the request sealed (AES-GCM, with keys
    derived from the encryption key): it cannot be made up, changed or read, not even as a
    request id. Its nonce is derived from the request id (a synthetic IV), so every message about
    one request carries one address, and sealing the same id twice reveals nothing but that.
    """
    vault = get_vault()
    nonce = hmac.new(vault.derive(_RUN_LINK_NONCE_INFO), request_id.bytes, "sha256").digest()
    nonce = nonce[:_NONCE_BYTES]
    sealed = AESGCM(vault.derive(_RUN_LINK_INFO)).encrypt(nonce, request_id.bytes, _RUN_LINK_INFO)
    return _b64(nonce + sealed)


def read_run_link_token(token: str) -> uuid.UUID:
    """Return the request a run link's token names, or raise LinkInvalidError."""
    try:
        raw = _unb64(token) if len(token) <= 80 else b""
    except ValueError:
        raise LinkInvalidError("malformed link") from None
    if len(raw) != _RUN_TOKEN_BYTES:
        raise LinkInvalidError("malformed link")
    nonce, sealed = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
    try:
        opened = AESGCM(get_vault().derive(_RUN_LINK_INFO)).decrypt(nonce, sealed, _RUN_LINK_INFO)
    except InvalidTag:
        raise LinkInvalidError("the link's seal does not match") from None
    request_id = uuid.UUID(bytes=opened)
    if not hmac.compare_digest(token, run_link_token(request_id)):
        raise LinkInvalidError("malformed link")  # ours, but not as we write it: one per request
    return request_id


def run_link_url(request_id: uuid.UUID) -> str:
    """Return the stable address of the run waiting on a decision request, for messages."""
    base = get_settings().approval_base_url.rstrip("/")
    return f"{base}/r/{run_link_token(request_id)}"
