"""The case store's security tables: who proved what, and when (docs/security.md).

Submission tickets stand in for a person's code in what Prefect stores; failed attempts are
counted per request and person; passkeys and their enrolment; the store's own settings (a
simulation store lets an operator move the clock). Secrets are kept only as keyed hashes.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from models.tables import _fk, _id, _json, _when


class SubmissionTicket(SQLModel, table=True):
    """A single-use reference that resumes a run in a person's name, bound to one request and
    one approver. Issued after the person proved themselves (code, link, passkey); consumed by
    the step whether the decision is then accepted or refused."""

    __tablename__ = "submission_ticket"
    id: uuid.UUID = _id()
    request_id: uuid.UUID = _fk("decision_request.id")
    stakeholder_id: uuid.UUID = _fk("stakeholder.id")
    token_hash: str = Field(max_length=128, unique=True)
    # how the person proved themselves: approval-page, approval-page+passkey, command-line
    channel: str = Field(max_length=40)
    os_user: str | None = Field(default=None, max_length=64)
    created_at: datetime = _when()
    expires_at: datetime = _when()
    consumed_at: datetime | None = _when(nullable=True)


class ApprovalAttempt(SQLModel, table=True):
    """Failed attempts to decide one request in one name (wrong code, replayed or unknown
    reference); locked after the policy's limit, with one audit event per lock."""

    __tablename__ = "approval_attempt"
    __table_args__ = (sa.UniqueConstraint("request_id", "submitter"),)
    id: uuid.UUID = _id()
    request_id: uuid.UUID = _fk("decision_request.id")
    submitter: str = Field(max_length=64)
    failures: int = 0
    last_failed_at: datetime = _when()
    locked_at: datetime | None = _when(nullable=True)


class PasskeyCredential(SQLModel, table=True):
    """A stakeholder's WebAuthn credential (public key only)."""

    __tablename__ = "passkey_credential"
    id: uuid.UUID = _id()
    stakeholder_id: uuid.UUID = _fk("stakeholder.id")
    credential_id: str = Field(max_length=1400, unique=True)  # base64url
    public_key: str = Field(sa_type=sa.Text)  # base64url COSE key
    sign_count: int = 0
    transports: list[str] = _json()
    # how enrolment was proven: other-channel code, or the case lead's confirmation
    enrolled_via: str = Field(max_length=80)
    created_at: datetime = _when()
    last_used_at: datetime | None = _when(nullable=True)
    revoked_at: datetime | None = _when(nullable=True)


class PasskeyEnrolment(SQLModel, table=True):
    """An invitation to enrol a passkey: a link, proven by a one-time code sent over the
    person's other channel (kept as a keyed hash) or confirmed by a case lead."""

    __tablename__ = "passkey_enrolment"
    id: uuid.UUID = _id()
    stakeholder_id: uuid.UUID = _fk("stakeholder.id")
    link_id: uuid.UUID | None = _fk("approval_link.id", nullable=True)
    code_hash: str | None = Field(default=None, max_length=128)
    confirmed_by: str | None = Field(default=None, max_length=64)
    failures: int = 0
    created_at: datetime = _when()
    expires_at: datetime = _when()
    completed_at: datetime | None = _when(nullable=True)


class WebAuthnChallenge(SQLModel, table=True):
    """A WebAuthn challenge handed to a browser, single-use and short-lived."""

    __tablename__ = "webauthn_challenge"
    id: uuid.UUID = _id()
    stakeholder_id: uuid.UUID = _fk("stakeholder.id")
    # registration (enrolment) or authentication (a decision)
    purpose: str = Field(max_length=20)
    link_id: uuid.UUID | None = _fk("approval_link.id", nullable=True)
    challenge: str = Field(max_length=200)  # base64url
    created_at: datetime = _when()
    expires_at: datetime = _when()
    used_at: datetime | None = _when(nullable=True)


class StoreSetting(SQLModel, table=True):
    """A setting the case store itself carries (e.g. that it is a simulation)."""

    __tablename__ = "store_setting"
    key: str = Field(max_length=60, primary_key=True)
    value: dict[str, Any] = _json(default_factory=dict)
    set_at: datetime = _when()
    set_by: str = Field(max_length=80)
