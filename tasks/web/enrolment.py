"""Enrolling approvers' passkeys: invitations, the case lead's confirmation, the list, revoking.

An invitation is a single-use enrolment link sent by e-mail (its private part) and, where the
person has a second channel (chat), a one-time code sent there: whoever holds only a forwarded
e-mail, or only the chat, cannot enrol a passkey in that person's name. A person with no second
channel waits for a case lead of the invitation's case to confirm, who should do so only while
speaking with them. A new invitation withdraws the person's earlier one.

Passkeys belong to a person, not to a case: every change is audited on the system chain (where
directory changes go), naming stakeholder keys and row ids, never codes. Commands act as the
operator the directory maps their operating-system account to (tasks/actors.py).
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from models.enums import LinkPurpose, NotificationChannel, NotificationEvent, Role
from models.security import PasskeyEnrolment
from models.tables import ApprovalLink, CaseMember, RemediationCase, Stakeholder
from notifications.outbox import notify
from notifications.routing import APPROVERS, Routing
from tasks.actors import Operator
from tasks.context import current_policy, current_routing
from tasks.store.audit import SYSTEM_CHAIN, append_audit
from tasks.store.db import read_only, unit_of_work
from tasks.store.links import create_link
from tasks.store.vault import Vault, get_vault
from tasks.web.passkeys import active_credentials

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I to misread
CODE_LENGTH = 8
BY_CODE, BY_CASE_LEAD = "code-by-chat", "case-lead"


class EnrolmentError(Exception):
    """A passkey command cannot be carried out; the message says why and what would do."""


@dataclass(frozen=True)
class Invitation:
    """What an invitation sent (references only)."""

    key: str
    case_ref: str
    enrolment_id: uuid.UUID
    expires_at: datetime
    proof: str  # BY_CODE or BY_CASE_LEAD


@dataclass(frozen=True)
class PasskeyHolder:
    """One person's passkeys and open invitation, for `remedy passkey list`."""

    key: str
    passkeys: int
    enrolled_via: str | None
    last_used_at: datetime | None
    invitation_until: datetime | None
    invitation_proof: str | None


def new_enrol_code() -> str:
    """Return a fresh one-time enrolment code."""
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def enrol_code_hash(vault: Vault, stakeholder_id: uuid.UUID, code: str) -> str:
    """Hash an enrolment code for one person (keyed, and apart from approval codes' hashes)."""
    normalised = code.strip().upper().replace("-", "").replace(" ", "")
    return vault.keyed_hash(f"passkey-enrol:{stakeholder_id}:{normalised}".encode())


def code_matches(enrolment: PasskeyEnrolment, code: str) -> bool:
    """Tell whether a typed code is the enrolment's (in constant time)."""
    if enrolment.code_hash is None or not code.strip():
        return False
    typed = enrol_code_hash(get_vault(), enrolment.stakeholder_id, code)
    return hmac.compare_digest(typed, enrolment.code_hash)


# --- looking things up ---------------------------------------------------------------------------


def _person(session: Session, key: str) -> Stakeholder:
    person = session.exec(select(Stakeholder).where(Stakeholder.key == key)).one_or_none()
    if person is None:
        raise EnrolmentError(f"no stakeholder with key {key} in the directory")
    if not person.active:
        raise EnrolmentError(f"{key} is not active in the directory")
    return person


def _case_for(session: Session, person: Stakeholder, case_ref: str | None) -> RemediationCase:
    """Return the case an invitation goes out under: the one named, else the person's newest."""
    query = (
        select(RemediationCase)
        .join(CaseMember, col(CaseMember.case_id) == col(RemediationCase.id))
        .where(CaseMember.stakeholder_id == person.id)
        .order_by(col(RemediationCase.opened_at).desc())
    )
    if case_ref is not None:
        query = query.where(RemediationCase.reference == case_ref)
    case = session.exec(query).first()
    if case is None:
        where = f"case {case_ref}" if case_ref else "any case"
        raise EnrolmentError(
            f"{person.key} holds no role on {where}: messages go out under a case the person "
            "is a member of (`remedy members add`)"
        )
    return case


def _has_chat(person: Stakeholder) -> bool:
    return bool(person.active and person.chat_kind and person.chat_secret_ref)


def _check_code_route(routing: Routing) -> None:
    """Refuse a routing that would send an enrolment code to anyone but the person, or by e-mail
    (where the link goes: one forwarded e-mail would then be enough)."""
    routes = routing.events[NotificationEvent.PASSKEY_CODE]
    if any(r != APPROVERS or NotificationChannel.EMAIL in c for r, c in routes.items()):
        raise EnrolmentError(
            'the routing file must send passkey_code to `approvers = ["chat"]` only: the code '
            "goes to the invited person alone, over the channel the link does not use"
        )


def open_enrolments(
    session: Session, stakeholder_id: uuid.UUID, now: datetime
) -> list[PasskeyEnrolment]:
    """Return a person's invitations that are neither completed nor expired, newest first."""
    return list(
        session.exec(
            select(PasskeyEnrolment)
            .where(
                PasskeyEnrolment.stakeholder_id == stakeholder_id,
                col(PasskeyEnrolment.completed_at).is_(None),
                col(PasskeyEnrolment.expires_at) > now,
            )
            .order_by(col(PasskeyEnrolment.created_at).desc())
        ).all()
    )


def _audit(
    session: Session,
    *,
    action: str,
    operator: Operator,
    now: datetime,
    subject: tuple[str, uuid.UUID],
    **details: object,
) -> None:
    append_audit(
        session,
        chain=SYSTEM_CHAIN,
        actor=f"stakeholder:{operator.key}",
        action=action,
        at=now,
        subject_type=subject[0],
        subject_id=str(subject[1]),
        details={**details, **operator.audit_details()},
    )


# --- the commands --------------------------------------------------------------------------------


def invite(key: str, *, case_ref: str | None, now: datetime, operator: Operator) -> Invitation:
    """Invite a person to enrol a passkey: the link by e-mail, the code by chat if they have it
    (else a case lead confirms); withdraws their earlier invitation."""
    routing = current_routing()
    with unit_of_work() as session:
        person = _person(session, key)
        if not person.email:
            raise EnrolmentError(f"{key} has no e-mail address: the enrolment link goes by e-mail")
        case = _case_for(session, person, case_ref)
        by_code = _has_chat(person)
        if by_code:
            _check_code_route(routing)
        for earlier in open_enrolments(session, person.id, now):
            earlier.expires_at = now  # its link stops working
            session.add(earlier)
        expires = now + timedelta(hours=current_policy().approvals.enrolment_ttl_hours)
        link = create_link(
            session,
            purpose=LinkPurpose.ENROL,
            case_id=case.id,
            stakeholder_id=person.id,
            now=now,
            expires_at=expires,
        )
        vault = get_vault()
        code = new_enrol_code() if by_code else None
        enrolment = PasskeyEnrolment(
            stakeholder_id=person.id,
            link_id=link.id,
            code_hash=enrol_code_hash(vault, person.id, code) if code else None,
            created_at=now,
            expires_at=expires,
        )
        session.add(enrolment)
        session.flush()
        proof = BY_CODE if code else BY_CASE_LEAD
        common = {"case_ref": case.reference, "step": case.step, "expires_at": expires.isoformat()}
        notify(
            session,
            routing=routing,
            event=NotificationEvent.PASSKEY_INVITED,
            case=case,
            key=f"passkey-invited:{enrolment.id}",
            now=now,
            approvers=[person],
            private={person.id: {"link_id": str(link.id)}},
            context={**common, "code_by": "chat" if code else "case_lead"},
        )
        if code:
            # the code is this message's whole point: it is routed to the person's chat alone
            notify(
                session,
                routing=routing,
                event=NotificationEvent.PASSKEY_CODE,
                case=case,
                key=f"passkey-code:{enrolment.id}",
                now=now,
                approvers=[person],
                context={**common, "code_ciphertext": vault.encrypt({"code": code})},
            )
        _audit(
            session,
            action="passkey.invited",
            operator=operator,
            now=now,
            subject=("passkey_enrolment", enrolment.id),
            stakeholder=person.key,
            case=case.reference,
            proof=proof,
        )
        return Invitation(person.key, case.reference, enrolment.id, expires, proof)


def confirm(key: str, *, now: datetime, operator: Operator) -> Invitation:
    """Confirm, as a case lead of its case, that a person's open invitation is theirs (for
    someone without a second channel, or whose code did not arrive)."""
    with unit_of_work() as session:
        person = _person(session, key)
        if operator.key == person.key:
            raise EnrolmentError("nobody may confirm their own passkey enrolment")
        enrolment = next(iter(open_enrolments(session, person.id, now)), None)
        if enrolment is None or enrolment.link_id is None:
            raise EnrolmentError(
                f"{key} has no invitation in progress: invite first (`remedy passkey invite {key}`)"
            )
        case = _invitation_case(session, enrolment)
        lead = session.exec(
            select(CaseMember)
            .join(Stakeholder, col(Stakeholder.id) == col(CaseMember.stakeholder_id))
            .where(
                CaseMember.case_id == case.id,
                CaseMember.role == Role.CASE_LEAD,
                Stakeholder.key == operator.key,
            )
        ).first()
        if lead is None:
            raise EnrolmentError(
                f"only a case lead of {case.reference} (the invitation's case) may confirm it; "
                f"you are {operator.key}"
            )
        enrolment.confirmed_by = operator.key
        enrolment.failures = 0  # the case lead's word replaces the code
        session.add(enrolment)
        _audit(
            session,
            action="passkey.enrolment_confirmed",
            operator=operator,
            now=now,
            subject=("passkey_enrolment", enrolment.id),
            stakeholder=person.key,
            case=case.reference,
        )
        return Invitation(person.key, case.reference, enrolment.id, enrolment.expires_at, "")


def _invitation_case(session: Session, enrolment: PasskeyEnrolment) -> RemediationCase:
    link = session.get(ApprovalLink, enrolment.link_id)
    assert link is not None
    case = session.get(RemediationCase, link.case_id)
    assert case is not None
    return case


def revoke(key: str, *, now: datetime, operator: Operator) -> int:
    """Revoke all of a person's passkeys and withdraw their open invitation; return how many
    passkeys were revoked (a lost or shared device: invite them again)."""
    with unit_of_work() as session:
        person = session.exec(select(Stakeholder).where(Stakeholder.key == key)).one_or_none()
        if person is None:
            raise EnrolmentError(f"no stakeholder with key {key} in the directory")
        revoked = active_credentials(session, person.id)
        for credential in revoked:
            credential.revoked_at = now
            session.add(credential)
        withdrawn = open_enrolments(session, person.id, now)
        for enrolment in withdrawn:
            enrolment.expires_at = now
            session.add(enrolment)
        _audit(
            session,
            action="passkey.revoked",
            operator=operator,
            now=now,
            subject=("stakeholder", person.id),
            stakeholder=person.key,
            passkeys=[str(c.id) for c in revoked],
            invitations_withdrawn=len(withdrawn),
        )
        return len(revoked)


def holders(*, now: datetime) -> list[PasskeyHolder]:
    """Return, for every active person, their passkeys and open invitation (keys only)."""
    with read_only() as session:
        people = session.exec(
            select(Stakeholder).where(col(Stakeholder.active).is_(True)).order_by(Stakeholder.key)
        ).all()
        result = []
        for person in people:
            keys = active_credentials(session, person.id)
            invitation = next(iter(open_enrolments(session, person.id, now)), None)
            proof = None
            if invitation is not None:
                proof = (
                    f"confirmed by {invitation.confirmed_by}"
                    if invitation.confirmed_by
                    else (BY_CODE if invitation.code_hash else f"waits for a {BY_CASE_LEAD}")
                )
            result.append(
                PasskeyHolder(
                    key=person.key,
                    passkeys=len(keys),
                    enrolled_via=keys[-1].enrolled_via if keys else None,
                    last_used_at=max(
                        (k.last_used_at for k in keys if k.last_used_at), default=None
                    ),
                    invitation_until=invitation.expires_at if invitation else None,
                    invitation_proof=proof,
                )
            )
        return result
