"""Whose consent stands withdrawn: one rule for the lifecycle's guards and for delivery.

A withdrawal stamps `withdrawn_at` on every record then active for that person and purpose; a
renewal adds a new record. So a person's consent for a purpose is withdrawn while they have a
withdrawn record and no active one for it (the history stays on file either way).

Consent is each person's own: one person's withdrawal holds their actions, and the whole case
holds only when nobody's case-handling consent stands, or the policy says any withdrawal holds it
(`models.policy.case_handling_active`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlmodel import Session, col, func, select

from models.enums import ConsentPurpose
from models.policy import ConsentRules, case_handling_active
from models.tables import AffectedPerson, ConsentRecord


def withdrawn_people(
    session: Session, case_id: uuid.UUID, purposes: Iterable[ConsentPurpose]
) -> set[str]:
    """Return the pseudonyms whose consent for any of the purposes stands withdrawn."""
    rows = session.exec(
        select(AffectedPerson.pseudonym, ConsentRecord.purpose, ConsentRecord.withdrawn_at)
        .join(AffectedPerson, col(AffectedPerson.id) == col(ConsentRecord.person_id))
        .where(
            ConsentRecord.case_id == case_id,
            col(ConsentRecord.purpose).in_(list(purposes)),
        )
    ).all()
    withdrawn: set[tuple[str, str]] = set()
    active: set[tuple[str, str]] = set()
    for pseudonym, purpose, withdrawn_at in rows:
        (active if withdrawn_at is None else withdrawn).add((pseudonym, purpose))
    return {pseudonym for pseudonym, purpose in withdrawn - active}


def case_may_work(session: Session, case_id: uuid.UUID, rules: ConsentRules) -> bool:
    """Tell whether consent lets the case work (False: the whole case holds)."""
    persons = session.exec(
        select(func.count()).select_from(AffectedPerson).where(AffectedPerson.case_id == case_id)
    ).one()
    withdrawn = withdrawn_people(session, case_id, [ConsentPurpose.CASE_HANDLING])
    return case_handling_active(int(persons), len(withdrawn), rules)
