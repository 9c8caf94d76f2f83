"""Each affected person's view of the remedy: recorded, sealed, and read back for the closure.

Issue 12 asks that those who sign a closure see how each person judges the remedy, in their words
or in their representative's. A view is recorded by the case's victim representative or case lead
(as renewed consent is), given by the person themself or by their representative, and sealed with
the vault like an identity: the table holds ciphertext, the audit event holds the pseudonym and
who gave it, never the words. A newer view replaces the person's earlier ones for the signers;
the earlier ones stay on file.

The words are decrypted for the approval page only (`tasks.steps.close.closure_words`); the
Prefect form's description says who recorded each view and when, or that none was recorded.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Literal, cast, get_args

from pydantic import BaseModel
from sqlmodel import Session, col, select

from models.enums import Role
from models.tables import AffectedPerson, CaseMember, PersonRemedyView, Stakeholder
from tasks.store.audit import append_audit
from tasks.store.cases import get_case
from tasks.store.db import unit_of_work
from tasks.store.vault import get_vault

if TYPE_CHECKING:
    from tasks.actors import Operator

VIEW_MAX_CHARS = 4000
GivenBy = Literal["person", "representative"]
RECORDERS = (Role.VICTIM_REPRESENTATIVE, Role.CASE_LEAD)


class PersonViewError(Exception):
    """A view cannot be recorded (unknown person, not allowed, bad text); the message says why
    and never quotes the text."""


class RecordedView(BaseModel):
    """What recording a view did: for whom, and whether it replaced an earlier one."""

    case_ref: str
    pseudonym: str
    given_by: GivenBy
    replaced: bool


class PersonView(BaseModel):
    """A person's latest view: who recorded it, when, who gave it; the words only if asked."""

    pseudonym: str
    given_by: GivenBy
    recorded_by: str
    recorded_at: datetime
    text: str | None = None

    def __repr__(self) -> str:
        return f"PersonView(pseudonym={self.pseudonym!r})"


def _text(text: str) -> str:
    kept = text.strip()
    if not kept:
        raise PersonViewError("the view is empty; give the person's words (--text or --file)")
    if len(kept) > VIEW_MAX_CHARS:
        raise PersonViewError(f"the view is longer than {VIEW_MAX_CHARS} characters")
    return kept


def _recorder(session: Session, case_id: uuid.UUID, case_ref: str, key: str) -> Stakeholder:
    """Return the active stakeholder `key` if they are the case's victim representative or lead."""
    person = session.exec(select(Stakeholder).where(Stakeholder.key == key)).first()
    if person is None or not person.active:
        raise PersonViewError(f"there is no active stakeholder {key}")
    held = session.exec(
        select(CaseMember.id).where(
            CaseMember.case_id == case_id,
            CaseMember.stakeholder_id == person.id,
            col(CaseMember.role).in_(RECORDERS),
        )
    ).first()
    if held is None:
        raise PersonViewError(
            "only the case's victim representative or case lead may record a person's view; "
            f"{key} is not on {case_ref} in that role"
        )
    return person


def record_person_view(
    case_ref: str,
    pseudonym: str,
    text: str,
    *,
    by: str,
    given_by: str,
    now: datetime,
    operator: Operator | None = None,
) -> RecordedView:
    """Record a person's view of the remedy, sealed; it replaces their earlier view for the signers.

    `by` is the victim representative or case lead who records it; `given_by` says whether the
    person gave these words themself ("person") or their representative did ("representative").
    Audited as `person.view_recorded` on the case's chain, without the words.
    """
    if given_by not in get_args(GivenBy):
        raise PersonViewError(f"given by {given_by!r}: say person or representative")
    kept = _text(text)
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        person = session.exec(
            select(AffectedPerson).where(
                AffectedPerson.case_id == case.id, AffectedPerson.pseudonym == pseudonym
            )
        ).first()
        if person is None:
            raise PersonViewError(f"{case_ref} has no affected person {pseudonym}")
        recorder = _recorder(session, case.id, case_ref, by)
        earlier = session.exec(
            select(PersonRemedyView.id).where(PersonRemedyView.person_id == person.id)
        ).first()
        session.add(
            PersonRemedyView(
                case_id=case.id,
                person_id=person.id,
                given_by=given_by,
                recorded_by_id=recorder.id,
                recorded_at=now,
                text_ciphertext=get_vault().encrypt_for_case(session, case.id, {"text": kept}),
            )
        )
        append_audit(
            session,
            chain=case.reference,
            actor=f"stakeholder:{by}",
            action="person.view_recorded",
            at=now,
            subject_type="affected_person",
            subject_id=str(person.id),
            details={
                "person": pseudonym,
                "given_by": given_by,
                "replaced": earlier is not None,
                **(operator.audit_details() if operator else {}),
            },
        )
        return RecordedView(
            case_ref=case_ref,
            pseudonym=pseudonym,
            given_by=cast(GivenBy, given_by),  # checked against GivenBy above
            replaced=earlier is not None,
        )


def latest_views(
    session: Session, case_id: uuid.UUID, *, with_text: bool = False
) -> dict[str, PersonView]:
    """Return each person's latest view by pseudonym (persons without one are left out).

    The words are decrypted only `with_text`, for the approval page; otherwise they stay sealed.
    """
    found = session.exec(
        select(PersonRemedyView, AffectedPerson.pseudonym, Stakeholder.key)
        .join(AffectedPerson, col(AffectedPerson.id) == col(PersonRemedyView.person_id))
        .join(Stakeholder, col(Stakeholder.id) == col(PersonRemedyView.recorded_by_id))
        .where(PersonRemedyView.case_id == case_id)
        .order_by(col(PersonRemedyView.recorded_at), col(PersonRemedyView.id))
    ).all()
    vault = get_vault() if with_text and found else None
    latest: dict[str, PersonView] = {}
    for row, pseudonym, key in found:  # oldest first: a newer view replaces an earlier one
        latest[pseudonym] = PersonView(
            pseudonym=pseudonym,
            given_by=cast(GivenBy, row.given_by),  # written by record_person_view only
            recorded_by=key,
            recorded_at=row.recorded_at,
            text=str(vault.decrypt_for_case(session, case_id, row.text_ciphertext)["text"])
            if vault
            else None,
        )
    return latest
