"""Intake: turn a validated report into an allegation, a case and its affected persons."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from models.enums import (
    CaseState,
    CaseStatus,
    IloIndicator,
    Irremediability,
    NotificationEvent,
    Scale,
    Step,
)
from models.intake import ReportIn
from models.policy import SeverityInput, assess_severity, case_deadlines
from models.tables import (
    AffectedPerson,
    Allegation,
    AllegationOrganisation,
    CaseSequence,
    RemediationCase,
)
from notifications.outbox import notify
from tasks.context import current_policy, current_routing
from tasks.inputs import read_document, validate
from tasks.store.audit import append_audit
from tasks.store.db import unit_of_work
from tasks.store.directory import assign_default_members, find_or_create_organisation
from tasks.store.ledger import owe
from tasks.store.vault import get_vault


@dataclass(frozen=True)
class IntakeResult:
    """What intake did: the case reference, and whether the report was already known."""

    reference: str
    duplicate: bool


def read_report(path: Path, *, now: datetime) -> ReportIn:
    """Read and validate a report file; raise InputError naming each problem."""
    return validate(ReportIn, read_document(path), source=str(path), now=now)


def next_reference(session: Session, year: int) -> str:
    """Issue the next case reference of the year (RC-2026-0007), under a row lock."""
    seq = session.exec(
        select(CaseSequence).where(CaseSequence.year == year).with_for_update()
    ).one_or_none()
    if seq is None:
        seq = CaseSequence(year=year, last=0)
        session.add(seq)
    seq.last += 1
    session.flush()
    return f"RC-{year}-{seq.last:04d}"


def preliminary_severity_input(report: ReportIn) -> SeverityInput:
    """Rate a fresh report as serious until verification shows otherwise (do no harm)."""
    violent = IloIndicator.PHYSICAL_SEXUAL_VIOLENCE in report.indicators
    return SeverityInput(
        scale=Scale.EXTREME if violent else Scale.HIGH,
        persons_affected=report.persons_affected,
        irremediability=Irremediability.DIFFICULT,
        minors_involved=report.minors_involved,
    )


def open_case(report: ReportIn, *, now: datetime, actor: str) -> IntakeResult:
    """Store allegation, case and persons in one transaction; a known report returns its case."""
    vault = get_vault()
    content_hash = vault.keyed_hash(report.canonical_bytes())
    try:
        return _open_case(report, content_hash=content_hash, now=now, actor=actor)
    except IntegrityError:
        # Another intake of the same report committed first: answer with its case.
        existing = _known_reference(content_hash)
        if existing is None:
            raise
        return IntakeResult(existing, duplicate=True)


def _known_reference(content_hash: str) -> str | None:
    with unit_of_work() as session:
        return _find_duplicate(session, content_hash)


def _find_duplicate(session: Session, content_hash: str) -> str | None:
    row = session.exec(
        select(RemediationCase.reference)
        .join(Allegation, Allegation.case_id == RemediationCase.id)  # type: ignore[arg-type]
        .where(Allegation.content_hash == content_hash)
    ).first()
    return row


def _open_case(report: ReportIn, *, content_hash: str, now: datetime, actor: str) -> IntakeResult:
    vault = get_vault()
    policy = current_policy()
    with unit_of_work() as session:
        known = _find_duplicate(session, content_hash)
        if known is not None:
            return IntakeResult(known, duplicate=True)
        received_at = report.received_at or now
        severity = assess_severity(preliminary_severity_input(report), policy)
        deadlines = case_deadlines(severity, received_at, policy)
        reference = next_reference(session, received_at.year)
        case = RemediationCase(
            reference=reference,
            state=CaseState.INTAKE,
            step=int(Step.VERIFY),
            status=CaseStatus.ACTIVE,
            state_changed_at=now,
            severity=severity,
            opened_at=received_at,
            acknowledge_by=deadlines.acknowledge_by,
            verify_by=deadlines.verify_by,
            decide_by=deadlines.decide_by,
            plan_by=deadlines.plan_by,
        )
        session.add(case)
        session.flush()
        reporter = report.reporter.model_dump(exclude_none=True) if report.reporter else None
        allegation = Allegation(
            case_id=case.id,
            received_at=received_at,
            occurred_on=report.occurred_on,
            source_type=report.source_type,
            channel=report.channel,
            anonymous=report.anonymous,
            language=report.language,
            country=report.location.country,
            site=report.location.site,
            mineral=report.mineral,
            persons_reported=report.persons_affected,
            reported_indicators=[i.value for i in report.indicators],
            description_ciphertext=vault.encrypt_for_case(
                session, case.id, {"description": report.description}
            ),
            reporter_ciphertext=(
                vault.encrypt_for_case(session, case.id, reporter) if reporter else None
            ),
            content_hash=content_hash,
        )
        session.add(allegation)
        session.flush()
        for ref in report.organisations:
            org = find_or_create_organisation(
                session, key=ref.key, name=ref.name, type=ref.type, country=ref.country, now=now
            )
            session.add(
                AllegationOrganisation(
                    allegation_id=allegation.id,
                    organisation_id=org.id,
                    relation=ref.relation,
                    tier=ref.tier,
                )
            )
        pseudonyms = []
        for n, person in enumerate(report.affected_persons, start=1):
            identity = (
                person.identity.model_dump(mode="json", exclude_none=True)
                if person.identity
                else None
            )
            row = AffectedPerson(
                case_id=case.id,
                pseudonym=f"P-{n:02d}",
                age_band=person.age_band,
                is_minor=person.is_minor,
                age_uncertain=person.age_uncertain,
                sex=person.sex,
                nationality=person.nationality,
                languages=list(person.languages),
                identity_ciphertext=(
                    vault.encrypt_for_case(session, case.id, identity) if identity else None
                ),
                created_at=now,
            )
            session.add(row)
            pseudonyms.append(row.pseudonym)
        members = assign_default_members(session, case_id=case.id, now=now)
        persons = [
            {"pseudonym": f"P-{n:02d}", "age_band": p.age_band.value, "minor": p.is_minor}
            for n, p in enumerate(report.affected_persons, start=1)
        ]
        notify(
            session,
            routing=current_routing(),
            event=NotificationEvent.CASE_OPENED,
            case=case,
            key=f"case-opened:{case.id}",
            now=now,
            mentions=pseudonyms,
            sealed_narrative=vault.encrypt_for_case(
                session, case.id, {"description": report.description, "persons": persons}
            ),
            context={
                "case_ref": reference,
                "step": 1,
                "severity": severity.value,
                "country": report.location.country,
                "site": report.location.site,
                "mineral": report.mineral.value,
                "source_type": report.source_type.value,
                "persons_reported": report.persons_affected,
                "acknowledge_by": deadlines.acknowledge_by.isoformat(),
            },
        )
        append_audit(
            session,
            chain=reference,
            actor=actor,
            action="case.opened",
            at=now,
            subject_type="case",
            subject_id=str(case.id),
            details={
                "allegation": str(allegation.id),
                "source_type": report.source_type.value,
                "channel": report.channel.value,
                "country": report.location.country,
                "mineral": report.mineral.value,
                "severity": severity.value,
                "persons": pseudonyms,
                "organisations": len(report.organisations),
                "members": members,
            },
        )
        for owed in report.owed:  # checked against the persons by ReportIn
            owe(
                session,
                case,
                kind=owed.kind,
                currency=owed.currency,
                amount=owed.amount,
                pseudonyms=owed.pseudonyms,
                recorded_by=None,
                actor=actor,
                now=now,
                source="intake",
            )
    return IntakeResult(reference, duplicate=False)
