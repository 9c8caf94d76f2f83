"""Master-key rotation: a new key first, every case key re-wrapped and every master-sealed value
sealed again, in batches, each its own transaction (docs/security.md, Keys: per-case data keys and
rotation).

What a case's data key sealed is not touched: only the wrapped data key changes. Approval codes,
link signatures and audit tags derive from the derivation secret, which rotation leaves alone, so
every pending code and link keeps working. A rotation cut short is finished by running it again;
once `key_status` counts nothing under an older key, the older keys can leave the key file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.fernet import Fernet
from pydantic import BaseModel
from sqlmodel import Session, SQLModel, col, select

from models.keys import CaseKey
from models.ledger import Payment
from models.settings import get_settings
from models.tables import (
    AffectedPerson,
    Allegation,
    ApprovalLink,
    Notification,
    PersonRemedyView,
    ReporterMessage,
    ReporterReceipt,
)
from tasks.store.audit import SYSTEM_CHAIN, append_audit
from tasks.store.db import is_postgres, read_only, unit_of_work
from tasks.store.vault import CASE_PREFIX, Vault, VaultError, get_vault, write_key_file

# every column that holds a sealed value (a `*_ciphertext`), and whether it is a case's personal
# data: such a value sealed by the master key (written before per-case keys) moves under its
# case's data key on rotation; the others (a code on its way) are sealed again by the new key
SEALED_COLUMNS: tuple[tuple[type[SQLModel], str, bool], ...] = (
    (Allegation, "description_ciphertext", True),
    (Allegation, "reporter_ciphertext", True),
    (AffectedPerson, "identity_ciphertext", True),
    (PersonRemedyView, "text_ciphertext", True),
    (ReporterReceipt, "contact_ciphertext", True),
    (ReporterReceipt, "reason_note_ciphertext", True),
    (ReporterMessage, "text_ciphertext", True),
    (ApprovalLink, "code_ciphertext", False),
    (Payment, "reference_ciphertext", True),
)
SEALED_CONTEXT = ("code_ciphertext", "sealed")  # Notification.context (notifications/outbox.py)
BATCH = 200


class RotationError(Exception):
    """The keys cannot be rotated as asked (the message says what to do)."""


class KeyStatus(BaseModel):
    """How many values each master key holds: counts only, never data."""

    keys: int
    case_keys: list[int]  # data keys wrapped by each master key, the first (current) first
    case_keys_destroyed: int
    values: list[int]  # values sealed directly by each master key
    case_sealed: int  # values sealed by a case's data key (untouched by rotation)
    unreadable: int  # opened by no configured key

    @property
    def under_current(self) -> int:
        return self.case_keys[0] + self.values[0]

    @property
    def under_old(self) -> int:
        return sum(self.case_keys[1:]) + sum(self.values[1:])


@dataclass(frozen=True)
class RotationResult:
    """What one `rotate_keys` did."""

    added_key: bool
    rewrapped: int
    resealed: int
    finished: bool
    status: KeyStatus


def _batches(
    model: type[SQLModel], present: Any, *, size: int, lock: bool
) -> Iterator[tuple[Session, list[Any]]]:
    """Yield rows of a table in primary-key order, one transaction per batch."""
    key = col(model.id)  # type: ignore[attr-defined]  # every sealed table has an `id`
    last: Any = None
    while True:
        with unit_of_work() as session:
            query = select(model).where(present).order_by(key).limit(size)
            if last is not None:
                query = query.where(key > last)
            if lock and is_postgres(session):
                query = query.with_for_update()
            rows: list[Any] = list(session.exec(query).all())
            if not rows:
                return
            last = rows[-1].id
            yield session, rows


def _reseal_row(vault: Vault, session: Session, row: Any, attr: str, per_case: bool) -> bool:
    token = getattr(row, attr)
    if not token or token.startswith(CASE_PREFIX):
        return False
    if per_case:
        try:
            sealed = vault.encrypt_for_case(session, row.case_id, vault.decrypt(token))
        except VaultError:  # its case key was destroyed, or no key opens it: left to the master
            sealed = None
        if sealed is not None:
            setattr(row, attr, sealed)
            return True
    if vault.key_index(token) in (0, None):
        return False
    setattr(row, attr, vault.reseal(token))
    return True


def _reseal_context(vault: Vault, row: Notification) -> bool:
    context = dict(row.context)
    changed = False
    for name in SEALED_CONTEXT:
        token = context.get(name)
        if not isinstance(token, str) or token.startswith(CASE_PREFIX):
            continue
        if vault.key_index(token) not in (0, None):
            context[name] = vault.reseal(token)
            changed = True
    if changed:
        row.context = context  # a new dict: the JSON column is written
    return changed


def reseal_all(
    *, now: datetime, batch_size: int = BATCH, max_batches: int | None = None
) -> tuple[int, int, bool]:
    """Re-wrap every case key and re-seal every master-sealed value under the first key.

    Returns (re-wrapped, re-sealed, finished); with `max_batches` it stops early (tests of an
    interrupted rotation). Rows already under the first key are skipped, so it resumes.
    """
    vault = get_vault()
    rewrapped = resealed = batches = 0

    def more() -> bool:
        return max_batches is None or batches < max_batches

    # a batch is committed when the next one is asked for: stop only before starting one
    for session, keys in _batches(
        CaseKey, col(CaseKey.wrapped_key).is_not(None), size=batch_size, lock=True
    ):
        if not more():
            return rewrapped, resealed, False
        for row in keys:
            if row.wrapped_key and vault.key_index(row.wrapped_key) != 0:
                row.wrapped_key = vault.wrap(vault.unwrap(row.wrapped_key))
                row.rotated_at = now
                session.add(row)
                rewrapped += 1
        batches += 1
    for model, attr, per_case in SEALED_COLUMNS:
        present = col(getattr(model, attr)).is_not(None)
        for session, rows in _batches(model, present, size=batch_size, lock=True):
            if not more():
                return rewrapped, resealed, False
            for row in rows:
                if _reseal_row(vault, session, row, attr, per_case):
                    session.add(row)
                    resealed += 1
            batches += 1
    everything = col(Notification.id).is_not(None)
    for session, rows in _batches(Notification, everything, size=batch_size, lock=True):
        if not more():
            return rewrapped, resealed, False
        for note in rows:
            if _reseal_context(vault, note):
                session.add(note)
                resealed += 1
        batches += 1
    return rewrapped, resealed, True


def key_status() -> KeyStatus:
    """Count what each configured master key holds (no data is shown or decrypted for it)."""
    vault = get_vault()
    case_keys = [0] * vault.key_count
    values = [0] * vault.key_count
    destroyed = case_sealed = unreadable = 0

    def count(token: str | None, tally: list[int]) -> None:
        nonlocal case_sealed, unreadable
        if not token:
            return
        if token.startswith(CASE_PREFIX):
            case_sealed += 1
            return
        index = vault.key_index(token)
        if index is None:
            unreadable += 1
        else:
            tally[index] += 1

    with read_only() as session:
        for row in session.exec(select(CaseKey)).all():
            if row.wrapped_key is None:
                destroyed += 1
            count(row.wrapped_key, case_keys)
        for model, attr, _ in SEALED_COLUMNS:
            column = col(getattr(model, attr))
            for token in session.exec(select(column).where(column.is_not(None))).all():
                count(token, values)
        for context in session.exec(select(Notification.context)).all():
            for name in SEALED_CONTEXT:
                token = context.get(name)
                count(token if isinstance(token, str) else None, values)
    return KeyStatus(
        keys=vault.key_count,
        case_keys=case_keys,
        case_keys_destroyed=destroyed,
        values=values,
        case_sealed=case_sealed,
        unreadable=unreadable,
    )


def rotate_keys(
    *,
    now: datetime,
    new_key: str | None = None,
    actor: str = "system",
    batch_size: int = BATCH,
    max_batches: int | None = None,
) -> RotationResult:
    """Put a new master key first (the one given, or a new one) and re-seal under it.

    Without a key given, a rotation left unfinished (values still under an older key) is
    finished instead of starting another. With the keys in REMEDY_ENCRYPTION_KEY the list
    cannot be rewritten here: the new key must already stand first there.
    """
    settings = get_settings()
    vault = get_vault()  # pins the derivation secret before the first key changes
    current = list(vault.master_keys)
    if new_key is not None:
        try:
            Fernet(new_key.encode())
        except (ValueError, TypeError):
            raise RotationError("the new key is not a valid Fernet key") from None
    added = False
    if settings.encryption_key is not None:
        if (new_key is not None and current[0] != new_key) or len(current) < 2:
            raise RotationError(
                "the keys come from REMEDY_ENCRYPTION_KEY: put the new key first there, the old "
                "one after it (comma-separated), restart Remedy, then run `remedy key rotate` "
                "again to re-encrypt under it"
            )
    elif new_key is not None:
        if current[0] != new_key:
            write_key_file(settings.resolved_key_file(), [new_key, *current])
            added = True
    elif len(current) == 1 or key_status().under_old == 0:
        write_key_file(settings.resolved_key_file(), [Fernet.generate_key().decode(), *current])
        added = True
    rewrapped, resealed, finished = reseal_all(
        now=now, batch_size=batch_size, max_batches=max_batches
    )
    status = key_status()
    with unit_of_work() as session:
        append_audit(
            session,
            chain=SYSTEM_CHAIN,
            actor=actor,
            action="key.rotated" if finished else "key.rotation_interrupted",
            at=now,
            subject_type="key",
            subject_id=None,
            details={
                "new_key": added,
                "rewrapped": rewrapped,
                "resealed": resealed,
                "under_old_keys": status.under_old,
            },
        )
    return RotationResult(
        added_key=added,
        rewrapped=rewrapped,
        resealed=resealed,
        finished=finished and status.under_old == 0,
        status=status,
    )
