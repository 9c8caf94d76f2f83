"""An affected person's access and erasure requests, through the case lead or the victims'
representative (docs/security.md, Retention and erasure): `export_person` gives their own data
decrypted, `erase_person` overwrites their identity, views and payment references; both audited
without the data, erasure refused under a legal hold (tasks/store/retention.py).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlmodel import Session, col, select

from models.keys import CaseKey
from models.ledger import LedgerEntry, Payment
from models.tables import (
    AffectedPerson,
    ConsentRecord,
    PersonRemedyView,
    PlanAction,
    RemediationCase,
)
from tasks.store.audit import append_audit
from tasks.store.cases import get_case
from tasks.store.db import unit_of_work
from tasks.store.retention import (
    ERASED,
    ERASED_ON_REQUEST,
    REPRESENTATIVES,
    PersonErased,
    RetentionError,
    active_hold,
    check_member,
    checked_reason,
    seal_marker,
    who_details,
)
from tasks.store.vault import Vault, get_vault

if TYPE_CHECKING:
    from tasks.actors import Operator


def _person(session: Session, case: RemediationCase, pseudonym: str) -> AffectedPerson:
    person = session.exec(
        select(AffectedPerson).where(
            AffectedPerson.case_id == case.id, AffectedPerson.pseudonym == pseudonym
        )
    ).first()
    if person is None:
        raise RetentionError(f"{case.reference} has no affected person {pseudonym}")
    return person


def _open(
    session: Session, vault: Vault, case_id: uuid.UUID, token: str | None, shredded: bool
) -> dict[str, Any] | None:
    if token is None or shredded:
        return None
    return vault.decrypt_for_case(session, case_id, token)


def export_person(
    case_ref: str, pseudonym: str, *, by: str, now: datetime, operator: Operator | None = None
) -> dict[str, Any]:
    """Return one affected person's own data, decrypted, for their access request; audited as
    `person.exported` (without the data). What retention or erasure removed reads None."""
    vault = get_vault()
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        check_member(session, case, by, REPRESENTATIVES, "export a person's data")
        person = _person(session, case, pseudonym)
        key = session.exec(select(CaseKey).where(CaseKey.case_id == case.id)).first()
        shredded = key is not None and key.destroyed_at is not None
        views = session.exec(
            select(PersonRemedyView)
            .where(PersonRemedyView.person_id == person.id)
            .order_by(col(PersonRemedyView.recorded_at), col(PersonRemedyView.id))
        ).all()
        consents = session.exec(
            select(ConsentRecord)
            .where(ConsentRecord.person_id == person.id)
            .order_by(col(ConsentRecord.given_at))
        ).all()
        entries = session.exec(
            select(LedgerEntry)
            .where(LedgerEntry.person_id == person.id)
            .order_by(col(LedgerEntry.kind), col(LedgerEntry.currency))
        ).all()
        payments = session.exec(
            select(Payment).where(Payment.person_id == person.id).order_by(col(Payment.paid_on))
        ).all()
        actions = session.exec(
            select(PlanAction)
            .where(PlanAction.person_id == person.id)
            .order_by(col(PlanAction.due_on), col(PlanAction.key))
        ).all()
        identity = _open(session, vault, case.id, person.identity_ciphertext, shredded)

        def view_text(token: str) -> str | None:
            text = (_open(session, vault, case.id, token, shredded) or {}).get("text")
            return None if text in (None, ERASED, ERASED_ON_REQUEST) else str(text)

        data: dict[str, Any] = {
            "case": case.reference,
            "exported_at": now.isoformat(),
            "person": {
                "pseudonym": person.pseudonym,
                "age_band": person.age_band.value,
                "is_minor": person.is_minor,
                "sex": person.sex.value,
                "nationality": person.nationality,
                "languages": list(person.languages),
                "identity": identity,
            },
            "views": [
                {
                    "recorded_at": v.recorded_at.isoformat(),
                    "given_by": v.given_by,
                    "text": view_text(v.text_ciphertext),
                }
                for v in views
            ],
            "consent": [
                {
                    "purpose": c.purpose.value,
                    "recipients": list(c.recipients),
                    "method": c.method.value,
                    "given_at": c.given_at.isoformat(),
                    "expires_at": c.expires_at.isoformat() if c.expires_at else None,
                    "withdrawn_at": c.withdrawn_at.isoformat() if c.withdrawn_at else None,
                }
                for c in consents
            ],
            "ledger": [
                {
                    "kind": e.kind.value,
                    "currency": e.currency,
                    "amount": str(e.amount),
                    "waived": e.waived_at is not None,
                    "payments": [
                        {
                            "amount": str(p.amount),
                            "paid_on": p.paid_on.isoformat(),
                            "method": p.method.value,
                            "reference": (
                                _open(session, vault, case.id, p.reference_ciphertext, shredded)
                                or {}
                            ).get("reference"),
                            "confirmed_at": p.confirmed_at.isoformat() if p.confirmed_at else None,
                        }
                        for p in payments
                        if p.entry_id == e.id
                    ],
                }
                for e in entries
            ],
            "milestones": [
                {
                    "key": a.key,
                    "title": a.title,
                    "category": a.category,
                    "status": a.status.value,
                    "due_on": a.due_on.isoformat(),
                }
                for a in actions
            ],
        }
        append_audit(
            session,
            chain=case.reference,
            actor=f"stakeholder:{by}",
            action="person.exported",
            at=now,
            subject_type="affected_person",
            subject_id=str(person.id),
            details={"person": pseudonym, **who_details(by, operator)},
        )
        return data


def erase_person(
    case_ref: str,
    pseudonym: str,
    *,
    reason: str,
    by: str,
    now: datetime,
    operator: Operator | None = None,
) -> PersonErased:
    """Erase one person's identity, views of the remedy and payment references at their request
    (the pseudonym and figures stay); refused under a legal hold; audited as `person.erased`."""
    text = checked_reason(reason, "erasing a person's data")
    vault = get_vault()
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        check_member(session, case, by, REPRESENTATIVES, "erase a person's data")
        person = _person(session, case, pseudonym)
        if active_hold(session, case.id) is not None:
            raise RetentionError(f"{case_ref} is under a legal hold: its data cannot be erased")
        had_identity = person.identity_ciphertext is not None
        person.identity_ciphertext = None
        session.add(person)
        views = session.exec(
            select(PersonRemedyView).where(PersonRemedyView.person_id == person.id)
        ).all()
        key = session.exec(select(CaseKey).where(CaseKey.case_id == case.id)).first()
        for v in views:  # sealed marker while the key lives, so readers show it was erased
            v.text_ciphertext = (
                ERASED_ON_REQUEST
                if key is not None and key.destroyed_at is not None
                else seal_marker(vault, session, case.id, "text", ERASED_ON_REQUEST)
            )
            session.add(v)
        references = 0
        for p in session.exec(select(Payment).where(Payment.person_id == person.id)).all():
            if p.reference_ciphertext is not None:
                p.reference_ciphertext, references = None, references + 1
                session.add(p)
        append_audit(
            session,
            chain=case.reference,
            actor=f"stakeholder:{by}",
            action="person.erased",
            at=now,
            subject_type="affected_person",
            subject_id=str(person.id),
            details={
                "person": pseudonym,
                "reason": text,
                "identity": had_identity,
                "views": len(views),
                "payment_references": references,
                **who_details(by, operator),
            },
        )
        return PersonErased(identity=had_identity, views=len(views), payment_references=references)
