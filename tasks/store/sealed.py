"""Free text about persons and decisions, sealed with the case's data key (docs/security.md).

Reasons, notes, mitigations, the persons' views and unmet needs, waiver and extension reasons,
lesson summaries and the free-text values of a decision's payload are typed by people and may
name or describe affected persons. They are stored as `ck1:<case id>:<token>` (the case's data
key, `tasks/store/vault.py`), so destroying the key destroys them with the identities. Values
written before this (migration 0013) are clear text: `open_text` returns them as they are, and
`seal_legacy_free_text` (run by `remedy db upgrade`) seals them in place; it is idempotent, and
removes the clear text of a case whose data key was already destroyed.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlmodel import Session, col, select

from models.ledger import LedgerEntry
from models.tables import (
    ActionPlan,
    Allegation,
    ClosureRecord,
    Decision,
    Lesson,
    PlanAction,
    ProgressUpdate,
    SafetyAssessment,
)
from tasks.store.vault import CASE_PREFIX, DESTROYED, VaultError, get_vault

# the free-text fields of the decision forms (models/forms.py, the `_reason` fields)
PAYLOAD_FREE_TEXT: frozenset[str] = frozenset(
    {
        "reason",
        "mitigation",
        "involvement_evidence",
        "override_reason",
        "victim_impact_note",
        "referral_rationale",
        "victim_priorities",
        "comments",
        "victim_view",
        "unmet_needs",
        "summary",
        "changes",
    }
)
_BATCH = 200


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(CASE_PREFIX)


def seal_text(session: Session, case_id: uuid.UUID, text: str | None) -> str | None:
    """Seal a free text with the case's data key; None and blank stay None."""
    if text is None or not text.strip():
        return None
    if is_sealed(text):
        return text
    return get_vault().encrypt_for_case(session, case_id, {"t": text})


def open_text(session: Session, case_id: uuid.UUID, token: str | None) -> str | None:
    """Return the clear text of a sealed value (a value from before sealing as it is)."""
    if token is None or not is_sealed(token):
        return token
    return str(get_vault().decrypt_for_case(session, case_id, token)["t"])


def seal_payload(session: Session, case_id: uuid.UUID, payload: dict[str, Any]) -> dict[str, Any]:
    """Return the payload with each free-text value (or list of them) sealed."""
    sealed = dict(payload)
    for key in PAYLOAD_FREE_TEXT & payload.keys():
        value = payload[key]
        if isinstance(value, str):
            sealed[key] = seal_text(session, case_id, value) or ""
        elif isinstance(value, list):
            sealed[key] = [
                seal_text(session, case_id, v) or "" if isinstance(v, str) else v for v in value
            ]
    return sealed


def open_payload(session: Session, case_id: uuid.UUID, payload: dict[str, Any]) -> dict[str, Any]:
    """Return the payload with its sealed values opened (the inverse of `seal_payload`)."""
    opened = dict(payload)
    for key, value in payload.items():
        if is_sealed(value):
            opened[key] = open_text(session, case_id, value)
        elif isinstance(value, list):
            opened[key] = [open_text(session, case_id, v) if is_sealed(v) else v for v in value]
    return opened


def seal_legacy_free_text(session: Session) -> int:
    """Seal every free text still stored in clear; return how many rows changed (idempotent)."""
    changed = 0
    for model, fields in (
        (Allegation, ("screening_reason",)),
        (SafetyAssessment, ("mitigation",)),
        (Decision, ("reason",)),
        (ActionPlan, ("victim_priorities",)),
        (PlanAction, ("waived_reason", "extension_reason")),
        (ProgressUpdate, ("note",)),
        (ClosureRecord, ("victim_view", "unmet_needs")),
        (LedgerEntry, ("waived_reason",)),
        (Lesson, ("summary",)),
    ):
        for row in session.exec(select(model).order_by(col(model.id))).all():
            changed += _seal_row(session, row, fields)
    return changed


def _seal_row(session: Session, row: Any, fields: tuple[str, ...]) -> int:
    try:
        return _seal_values(session, row, fields)
    except VaultError as exc:
        if str(exc) != DESTROYED:
            raise  # a missing or wrong master key: nothing is changed
        # the case's data key was destroyed (retention, erasure): its clear text goes too
        for f in fields:
            setattr(row, f, None if not is_sealed(getattr(row, f)) else getattr(row, f))
        if isinstance(row, Decision):
            row.payload = {k: v for k, v in row.payload.items() if k not in PAYLOAD_FREE_TEXT}
        if isinstance(row, Lesson):
            row.changes = [{k: v for k, v in c.items() if k != "change"} for c in row.changes]
        session.add(row)
        return 1


def _seal_values(session: Session, row: Any, fields: tuple[str, ...]) -> int:
    case_id: uuid.UUID = row.case_id
    before = {f: getattr(row, f) for f in fields}
    for f in fields:
        setattr(row, f, seal_text(session, case_id, getattr(row, f)))
    changed = any(getattr(row, f) != before[f] for f in fields)
    if isinstance(row, Decision):
        payload = seal_payload(session, case_id, row.payload or {})
        if payload != (row.payload or {}):
            row.payload, changed = payload, True
    if isinstance(row, Lesson) and row.changes:
        changes = [
            {**c, "change": seal_text(session, case_id, c["change"]) or ""} if "change" in c else c
            for c in row.changes
        ]
        if changes != row.changes:
            row.changes, changed = changes, True
    if changed:
        session.add(row)
    return int(changed)
