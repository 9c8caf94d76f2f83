"""Reading cases: summaries without identifying data, and the one audited way to reveal it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session, col, func, select

from models.enums import CaseState, CaseStatus, Step
from models.tables import (
    AffectedPerson,
    Allegation,
    AllegationOrganisation,
    AuditEvent,
    CaseMember,
    Organisation,
    RemediationCase,
    Stakeholder,
)
from tasks.store.audit import append_audit
from tasks.store.db import read_only, unit_of_work
from tasks.store.vault import get_vault


class CaseNotFoundError(LookupError):
    """No case has that reference."""

    def __init__(self, reference: str) -> None:
        super().__init__(f"no case with reference {reference}")
        self.reference = reference


class CaseRow(BaseModel):
    reference: str
    state: CaseState
    step: int
    status: CaseStatus
    severity: str | None
    opened_at: datetime


class PersonView(BaseModel):
    pseudonym: str
    age_band: str
    is_minor: bool
    age_uncertain: bool
    sex: str
    nationality: str | None
    languages: list[str]
    identity_on_file: bool


class CaseSummary(BaseModel):
    """What any case worker may see: references, pseudonyms and facts, never identities."""

    reference: str
    state: CaseState
    step: int
    step_title: str
    status: CaseStatus
    severity: str | None
    involvement: str | None
    response_level: str | None
    opened_at: datetime
    closed_at: datetime | None
    deadlines: dict[str, datetime | None]
    source_type: str
    channel: str
    anonymous: bool
    received_at: datetime
    occurred_on: str | None
    country: str
    site: str | None
    mineral: str
    reported_indicators: list[str]
    organisations: list[dict[str, Any]]
    persons: list[PersonView]
    members: list[dict[str, str]]
    audit_events: int


def get_case(session: Session, reference: str, *, lock: bool = False) -> RemediationCase:
    """Load a case by reference (optionally locking its row), or raise CaseNotFoundError."""
    query = select(RemediationCase).where(RemediationCase.reference == reference)
    if lock:
        query = query.with_for_update()
    case = session.exec(query).one_or_none()
    if case is None:
        raise CaseNotFoundError(reference)
    return case


def list_cases(*, status: CaseStatus | None = None) -> list[CaseRow]:
    """List cases, newest first."""
    with read_only() as session:
        query = select(RemediationCase).order_by(col(RemediationCase.opened_at).desc())
        if status is not None:
            query = query.where(RemediationCase.status == status)
        return [CaseRow.model_validate(c, from_attributes=True) for c in session.exec(query)]


def case_summary(reference: str) -> CaseSummary:
    """Summarise a case for display, with no identifying data."""
    with read_only() as session:
        case = get_case(session, reference)
        allegation = session.exec(
            select(Allegation)
            .where(Allegation.case_id == case.id)
            .order_by(col(Allegation.received_at))
        ).first()
        if allegation is None:
            raise CaseNotFoundError(reference)
        orgs = session.exec(
            select(Organisation, AllegationOrganisation)
            .join(AllegationOrganisation, AllegationOrganisation.organisation_id == Organisation.id)  # type: ignore[arg-type]
            .where(AllegationOrganisation.allegation_id == allegation.id)
            .order_by(col(Organisation.name))
        ).all()
        persons = session.exec(
            select(AffectedPerson)
            .where(AffectedPerson.case_id == case.id)
            .order_by(col(AffectedPerson.pseudonym))
        ).all()
        members = session.exec(
            select(CaseMember, Stakeholder)
            .join(Stakeholder, CaseMember.stakeholder_id == Stakeholder.id)  # type: ignore[arg-type]
            .where(CaseMember.case_id == case.id)
            .order_by(col(CaseMember.role), col(Stakeholder.key))
        ).all()
        audit_count = session.exec(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.chain == reference)
        ).one()
        return CaseSummary(
            reference=case.reference,
            state=case.state,
            step=case.step,
            step_title=Step(case.step).title,
            status=case.status,
            severity=case.severity,
            involvement=case.involvement,
            response_level=case.response_level,
            opened_at=case.opened_at,
            closed_at=case.closed_at,
            deadlines={
                "acknowledge_by": case.acknowledge_by,
                "verify_by": case.verify_by,
                "decide_by": case.decide_by,
                "plan_by": case.plan_by,
            },
            source_type=allegation.source_type,
            channel=allegation.channel,
            anonymous=allegation.anonymous,
            received_at=allegation.received_at,
            occurred_on=allegation.occurred_on.isoformat() if allegation.occurred_on else None,
            country=allegation.country,
            site=allegation.site,
            mineral=allegation.mineral,
            reported_indicators=list(allegation.reported_indicators),
            organisations=[
                {
                    "name": o.name,
                    "type": o.type.value,
                    "relation": link.relation,
                    "country": o.country,
                }
                for o, link in orgs
            ],
            persons=[
                PersonView(
                    pseudonym=p.pseudonym,
                    age_band=p.age_band,
                    is_minor=p.is_minor,
                    age_uncertain=p.age_uncertain,
                    sex=p.sex,
                    nationality=p.nationality,
                    languages=list(p.languages),
                    identity_on_file=p.identity_ciphertext is not None,
                )
                for p in persons
            ],
            members=[{"role": m.role.value, "stakeholder": s.key} for m, s in members],
            audit_events=audit_count,
        )


class Revealed(BaseModel):
    """Identifying data of a case, decrypted for one authorised reader."""

    description: str
    reporter: dict[str, Any] | None
    identities: dict[str, dict[str, Any]]

    def __repr__(self) -> str:
        return "Revealed(<hidden>)"

    __str__ = __repr__


def reveal_identifying_data(reference: str, *, actor: str, reason: str, now: datetime) -> Revealed:
    """Decrypt a case's identifying data for one reader; the read is audited first."""
    vault = get_vault()
    with unit_of_work() as session:
        case = get_case(session, reference, lock=True)
        allegation = session.exec(select(Allegation).where(Allegation.case_id == case.id)).first()
        persons = session.exec(
            select(AffectedPerson)
            .where(AffectedPerson.case_id == case.id)
            .order_by(col(AffectedPerson.pseudonym))
        ).all()
        append_audit(
            session,
            chain=reference,
            actor=actor,
            action="identity.revealed",
            at=now,
            subject_type="case",
            subject_id=str(case.id),
            details={"reason": reason, "persons": [p.pseudonym for p in persons]},
        )
        description = ""
        reporter = None
        if allegation is not None:
            sealed = allegation.description_ciphertext
            description = vault.decrypt_for_case(session, case.id, sealed)["description"]
            if allegation.reporter_ciphertext:
                reporter = vault.decrypt_for_case(session, case.id, allegation.reporter_ciphertext)
        identities = {
            p.pseudonym: vault.decrypt_for_case(session, case.id, p.identity_ciphertext)
            for p in persons
            if p.identity_ciphertext
        }
    return Revealed(description=description, reporter=reporter, identities=identities)
