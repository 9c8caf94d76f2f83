"""The directory of organisations and stakeholders: loading it and assigning people to cases."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from models.enums import OrganisationType, Role
from models.intake import DirectoryIn
from models.tables import CaseMember, Organisation, RemediationCase, Stakeholder
from tasks.store.audit import SYSTEM_CHAIN, append_audit
from tasks.store.db import unit_of_work


@dataclass(frozen=True)
class DirectoryResult:
    organisations_added: int
    organisations_updated: int
    stakeholders_added: int
    stakeholders_updated: int


def load_directory(directory: DirectoryIn, *, now: datetime, actor: str) -> DirectoryResult:
    """Insert or update organisations and stakeholders by key, in one transaction (idempotent)."""
    counts = {"org_add": 0, "org_upd": 0, "sh_add": 0, "sh_upd": 0}
    remapped: list[str] = []  # whose command-line accounts or leave to act for others changed
    with unit_of_work() as session:
        orgs: dict[str, Organisation] = {}
        for o in directory.organisations:
            org = session.exec(select(Organisation).where(Organisation.key == o.key)).first()
            fields: dict[str, Any] = {
                "name": o.name,
                "type": o.type,
                "country": o.country,
                "audit_status": o.audit_status,
                "external_ids": dict(o.external_ids),
            }
            if org is None:
                org = Organisation(key=o.key, created_at=now, **fields)
                counts["org_add"] += 1
            elif any(getattr(org, k) != v for k, v in fields.items()):
                for k, v in fields.items():
                    setattr(org, k, v)
                counts["org_upd"] += 1
            session.add(org)
            orgs[o.key] = org
        session.flush()
        for s in directory.stakeholders:
            org_id: uuid.UUID | None = None
            if s.organisation:
                org_id = (
                    orgs[s.organisation].id
                    if s.organisation in orgs
                    else _org_id(session, s.organisation)
                )
            fields = {
                "display_name": s.display_name,
                "organisation_id": org_id,
                "locale": s.locale,
                "email": s.email,
                "chat_kind": s.chat.kind if s.chat else None,
                "chat_address": s.chat.address if s.chat else None,
                "chat_secret_ref": s.chat.secret_ref if s.chat else None,
                "default_roles": [r.value for r in s.roles],
                "active": s.active,
                # who this person is on the command line, and whom they may name there
                "os_users": list(dict.fromkeys(s.os_users)),
                "acts_for": list(dict.fromkeys(s.acts_for)),
            }
            person = session.exec(select(Stakeholder).where(Stakeholder.key == s.key)).first()
            if _accounts_change(person, fields):
                remapped.append(s.key)
            if person is None:
                person = Stakeholder(key=s.key, created_at=now, **fields)
                counts["sh_add"] += 1
            elif any(getattr(person, k) != v for k, v in fields.items()):
                for k, v in fields.items():
                    setattr(person, k, v)
                counts["sh_upd"] += 1
            session.add(person)
        result = DirectoryResult(
            counts["org_add"], counts["org_upd"], counts["sh_add"], counts["sh_upd"]
        )
        if any(counts.values()):
            append_audit(
                session,
                chain=SYSTEM_CHAIN,
                actor=actor,
                action="directory.loaded",
                at=now,
                details=counts | ({"accounts_remapped": remapped} if remapped else {}),
            )
    return result


def _accounts_change(person: Stakeholder | None, fields: dict[str, Any]) -> bool:
    """Whether a load changes who a person is on the command line, or whom they may name."""
    if person is None:
        return bool(fields["os_users"] or fields["acts_for"])
    return person.os_users != fields["os_users"] or person.acts_for != fields["acts_for"]


def _org_id(session: Session, key: str) -> uuid.UUID:
    org = session.exec(select(Organisation).where(Organisation.key == key)).first()
    if org is None:
        raise LookupError(f"unknown organisation {key}")
    return org.id


def slug(name: str) -> str:
    """Return a directory key for a name that came without one."""
    return (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "organisation")[:64]


def find_or_create_organisation(
    session: Session,
    *,
    key: str | None,
    name: str,
    type: OrganisationType,
    country: str | None,
    now: datetime,
) -> Organisation:
    """Return the directory's organisation for a reported one, adding it if it is new."""
    key = key or slug(name)
    org = session.exec(select(Organisation).where(Organisation.key == key)).first()
    if org is None:
        org = Organisation(key=key, name=name, type=type, country=country, created_at=now)
        session.add(org)
        session.flush()
    return org


def assign_default_members(session: Session, *, case_id: uuid.UUID, now: datetime) -> list[str]:
    """Put every active stakeholder on the case in each of their default roles."""
    added = []
    people = session.exec(select(Stakeholder).where(Stakeholder.active == True)).all()  # noqa: E712
    for person in people:
        for role in person.default_roles:
            session.add(
                CaseMember(case_id=case_id, stakeholder_id=person.id, role=Role(role), added_at=now)
            )
            added.append(f"{person.key}:{role}")
    session.flush()
    return added


def members_of(session: Session, case_id: uuid.UUID, role: Role) -> list[Stakeholder]:
    """Return the stakeholders holding a role on a case."""
    rows = session.exec(
        select(Stakeholder)
        .join(CaseMember, CaseMember.stakeholder_id == Stakeholder.id)  # type: ignore[arg-type]
        .where(CaseMember.case_id == case_id, CaseMember.role == role)
        .order_by(Stakeholder.key)
    ).all()
    return list(rows)


class MembershipError(Exception):
    """A membership change names an unknown case or stakeholder."""


def _case_and_person(session: Session, reference: str, key: str) -> tuple[Any, Stakeholder]:
    from tasks.store.cases import CaseNotFoundError, get_case

    try:
        case = get_case(session, reference, lock=True)
    except CaseNotFoundError as exc:
        raise MembershipError(str(exc)) from None
    person = session.exec(select(Stakeholder).where(Stakeholder.key == key)).first()
    if person is None:
        raise MembershipError(f"no stakeholder {key} in the directory")
    return case, person


def _membership(
    session: Session, case_id: uuid.UUID, person_id: uuid.UUID, role: Role
) -> CaseMember | None:
    return session.exec(
        select(CaseMember).where(
            CaseMember.case_id == case_id,
            CaseMember.stakeholder_id == person_id,
            CaseMember.role == role,
        )
    ).first()


def add_member(reference: str, key: str, role: Role, *, actor: str, now: datetime) -> bool:
    """Give a stakeholder a role on a case; False if they hold it already."""
    with unit_of_work() as session:
        case, person = _case_and_person(session, reference, key)
        if _membership(session, case.id, person.id, role) is not None:
            return False
        session.add(CaseMember(case_id=case.id, stakeholder_id=person.id, role=role, added_at=now))
        append_audit(
            session,
            chain=reference,
            actor=actor,
            action="member.added",
            at=now,
            subject_type="stakeholder",
            subject_id=str(person.id),
            details={"stakeholder": key, "role": role.value},
        )
        return True


def remove_member(reference: str, key: str, role: Role, *, actor: str, now: datetime) -> bool:
    """Take a role on a case away from a stakeholder; False if they did not hold it."""
    with unit_of_work() as session:
        case, person = _case_and_person(session, reference, key)
        existing = _membership(session, case.id, person.id, role)
        if existing is None:
            return False
        session.delete(existing)
        append_audit(
            session,
            chain=reference,
            actor=actor,
            action="member.removed",
            at=now,
            subject_type="stakeholder",
            subject_id=str(person.id),
            details={"stakeholder": key, "role": role.value},
        )
        return True


def acting_member(
    session: Session,
    case: RemediationCase,
    key: str,
    roles: tuple[Role, ...],
    what: str,
    error: type[Exception],
) -> Stakeholder:
    """Return the active stakeholder `key` if they hold one of `roles` on the case; else raise
    `error` saying who may `what` (case controls, retention and a person's requests)."""
    person = session.exec(select(Stakeholder).where(Stakeholder.key == key)).first()
    if person is None or not person.active:
        raise error(f"there is no active stakeholder {key}")
    held = session.exec(
        select(CaseMember.id).where(
            CaseMember.case_id == case.id,
            CaseMember.stakeholder_id == person.id,
            col(CaseMember.role).in_(roles),
        )
    ).first()
    if held is None:
        names = " or ".join(r.value.replace("_", " ") for r in roles)
        raise error(
            f"only the case's {names} may {what}; {key} is not on {case.reference} in that role"
        )
    return person


def given_reason(reason: str, what: str, *, limit: int, error: type[Exception]) -> str:
    """Return a reason as given, stripped; raise `error` if it is empty or over `limit`."""
    text = reason.strip()
    if not text:
        raise error(f"{what} needs a reason (--reason)")
    if len(text) > limit:
        raise error(f"the reason is over the limit of {limit} characters")
    return text
