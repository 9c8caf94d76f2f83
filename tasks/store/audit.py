"""The audit chain: every change appends an event whose hash covers the previous event's hash."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, col, select

from models.tables import AuditEvent, AuditHead

GENESIS = "0" * 64
SYSTEM_CHAIN = "system"
# the approval page's own chain: junk tokens belong to no case (tasks/web/ratelimit.py)
WEB_CHAIN = "web"


def _digest(
    *,
    chain: str,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    subject_type: str | None,
    subject_id: str | None,
    details: dict[str, Any],
    prev_hash: str,
) -> str:
    body = {
        "chain": chain,
        "seq": seq,
        "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": actor,
        "action": action,
        "subject_type": subject_type,
        "subject_id": subject_id,
        "details": details,
        "prev_hash": prev_hash,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def append_audit(
    session: Session,
    *,
    chain: str,
    actor: str,
    action: str,
    at: datetime,
    subject_type: str | None = None,
    subject_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to a chain inside the caller's transaction (details: references only)."""
    details = json.loads(json.dumps(details or {}, default=str))
    head = session.exec(
        select(AuditHead).where(AuditHead.chain == chain).with_for_update()
    ).one_or_none()
    seq = head.seq + 1 if head else 1
    prev_hash = head.hash if head else GENESIS
    digest = _digest(
        chain=chain,
        seq=seq,
        at=at,
        actor=actor,
        action=action,
        subject_type=subject_type,
        subject_id=subject_id,
        details=details,
        prev_hash=prev_hash,
    )
    event = AuditEvent(
        chain=chain,
        seq=seq,
        at=at,
        actor=actor,
        action=action,
        subject_type=subject_type,
        subject_id=subject_id,
        details=details,
        prev_hash=prev_hash,
        hash=digest,
    )
    session.add(event)
    if head is None:
        session.add(AuditHead(chain=chain, seq=seq, hash=digest))
    else:
        head.seq, head.hash = seq, digest
        session.add(head)
    session.flush()
    return event


@dataclass(frozen=True)
class ChainReport:
    """The outcome of checking one chain."""

    chain: str
    events: int
    broken_at: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def verify_chain(session: Session, chain: str) -> ChainReport:
    """Recompute a chain and report the first link that does not hold."""
    events = session.exec(
        select(AuditEvent).where(AuditEvent.chain == chain).order_by(col(AuditEvent.seq))
    ).all()
    head = session.get(AuditHead, chain)
    prev_hash, expected_seq = GENESIS, 1
    for event in events:
        where = f"event #{event.seq} ({event.action})"
        if event.seq != expected_seq:
            return ChainReport(
                chain, len(events), expected_seq, f"event #{expected_seq} is missing"
            )
        if event.prev_hash != prev_hash:
            return ChainReport(
                chain, len(events), event.seq, f"{where} does not link to the event before it"
            )
        recomputed = _digest(
            chain=event.chain,
            seq=event.seq,
            at=event.at,
            actor=event.actor,
            action=event.action,
            subject_type=event.subject_type,
            subject_id=event.subject_id,
            details=event.details,
            prev_hash=event.prev_hash,
        )
        if recomputed != event.hash:
            return ChainReport(
                chain, len(events), event.seq, f"{where} was altered after it was written"
            )
        prev_hash, expected_seq = event.hash, expected_seq + 1
    if head is None:
        if events:
            return ChainReport(chain, len(events), 1, "the chain's head record is missing")
        return ChainReport(chain, 0)
    if head.seq != expected_seq - 1 or head.hash != prev_hash:
        return ChainReport(
            chain,
            len(events),
            expected_seq,
            f"events after #{expected_seq - 1} were removed (the head records #{head.seq})",
        )
    return ChainReport(chain, len(events))
