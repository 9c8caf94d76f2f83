"""The audit chain: every change appends an event whose hash covers the previous event's hash.

Each event also carries an HMAC tag of the same content under a key derived from the key file,
which the case store never holds: someone who can write the store can recompute the hashes but
not the tags. Signed checkpoints of every chain's head (tasks/store/checkpoints.py) catch a
truncated or deleted chain. docs/security.md, "Audit that proves itself".
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, col, select

from models.tables import AuditEvent, AuditHead

GENESIS = "0" * 64
SYSTEM_CHAIN = "system"
# the approval page's own chain: junk tokens belong to no case (tasks/web/ratelimit.py)
WEB_CHAIN = "web"
# the derivation label of the audit's HMAC key (tasks/store/vault.py derives it from the key file)
AUDIT_KEY_PURPOSE = b"remedy audit hmac v1"


def _canonical(
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
) -> bytes:
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
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _content(event: AuditEvent, chain: str | None = None) -> bytes:
    """Return an event's canonical content (as if written on `chain`, when one is given)."""
    return _canonical(
        chain=chain or event.chain,
        seq=event.seq,
        at=event.at,
        actor=event.actor,
        action=event.action,
        subject_type=event.subject_type,
        subject_id=event.subject_id,
        details=event.details,
        prev_hash=event.prev_hash,
    )


def _tag(key: bytes, content: bytes) -> str:
    return hmac.new(key, content, hashlib.sha256).hexdigest()


def audit_keys() -> list[bytes]:
    """Return the audit HMAC keys, derived from the key file (the current key's first)."""
    from tasks.store.vault import derived_keys

    return derived_keys(AUDIT_KEY_PURPOSE)


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
    content = _canonical(
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
    digest = hashlib.sha256(content).hexdigest()
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
        tag=_tag(audit_keys()[0], content),
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
class Head:
    """A chain's newest link as a checkpoint recorded it."""

    chain: str
    seq: int
    hash: str
    untagged: int = 0  # its first events, written before authentication (migration 0010)


@dataclass(frozen=True)
class Witness:
    """What one checkpoint, its signature checked, says of every chain's head."""

    at: datetime
    heads: Mapping[str, Head]


@dataclass(frozen=True)
class ChainReport:
    """The outcome of checking one chain: its first problem, if any."""

    chain: str
    events: int
    broken_at: int | None = None  # the first event that does not hold (None: the whole chain)
    problem: str | None = None
    unauthenticated: int = 0  # events from before authentication, at the chain's start
    # when authentication began on the chain (its first tagged event), else its last untagged one
    unauthenticated_until: datetime | None = None
    checkpoint_at: datetime | None = None  # the newest checkpoint that covers the chain

    @property
    def ok(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        """Describe an intact chain: its events, what is unauthenticated, the checkpoint."""
        said = [f"{self.events} events"]
        if self.unauthenticated and self.unauthenticated_until is not None:
            bound = "before" if self.unauthenticated < self.events else "up to"
            said.append(
                f"{self.unauthenticated} unauthenticated {bound} {when(self.unauthenticated_until)}"
            )
        if self.checkpoint_at is not None:
            said.append(f"checkpoint of {when(self.checkpoint_at)} matches")
            return f"intact ({', '.join(said)})"
        return f"intact ({', '.join(said)}) - no checkpoint covers it yet"


def when(at: datetime) -> str:
    """Format a moment as verification reports show it (UTC, to the second)."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _tag_ok(keys: Sequence[bytes], content: bytes, tag: str) -> bool:
    return any(hmac.compare_digest(_tag(key, content), tag) for key in keys)


def _untagged_allowed(chain: str, witnesses: Sequence[Witness]) -> int | None:
    """How many untagged events may open the chain (None: any, no checkpoint says otherwise).

    The first checkpoint after migration 0010 records each chain's untagged beginning; a chain
    no checkpoint knows was begun after it, so all its events must carry a tag.
    """
    if not witnesses:
        return None
    known = [w for w in sorted(witnesses, key=lambda w: w.at) if chain in w.heads]
    return known[0].heads[chain].untagged if known else 0


def verify_chain(
    session: Session,
    chain: str,
    *,
    keys: Sequence[bytes] | None = None,
    witnesses: Sequence[Witness] = (),
    chains: Iterable[str] = (),
) -> ChainReport:
    """Check a chain's tags, links, hashes and head, then the checkpoints; name the first problem.

    `chains` are the other chains' names, tried when a tag fails, to tell a swap from a forgery.
    """
    keys = audit_keys() if keys is None else keys
    events = session.exec(
        select(AuditEvent).where(AuditEvent.chain == chain).order_by(col(AuditEvent.seq))
    ).all()
    head = session.get(AuditHead, chain)
    allowed = _untagged_allowed(chain, witnesses)
    prev_hash, expected_seq = GENESIS, 1
    untagged, untagged_until, tagged_seen = 0, None, False

    def broken(seq: int, problem: str) -> ChainReport:
        return ChainReport(chain, len(events), seq, problem)

    for event in events:
        where = f"event #{event.seq} ({event.action})"
        if event.seq != expected_seq:
            return broken(expected_seq, f"event #{expected_seq} is missing")
        if event.prev_hash != prev_hash:
            return broken(event.seq, f"{where} does not link to the event before it")
        content = _content(event)
        if event.tag is None:
            if tagged_seen or (allowed is not None and event.seq > allowed):
                return broken(
                    event.seq,
                    f"{where} is forged: it has no authentication tag but was written after "
                    "authentication began",
                )
            untagged, untagged_until = untagged + 1, event.at
        elif _tag_ok(keys, content, event.tag):
            if not tagged_seen and untagged:
                untagged_until = event.at
            tagged_seen = True
        else:
            owner = next(
                (c for c in chains if c != chain and _tag_ok(keys, _content(event, c), event.tag)),
                None,
            )
            if owner is not None:
                return broken(
                    event.seq, f"{where} was written on {owner}'s chain: the chains were swapped"
                )
            return broken(
                event.seq,
                f"{where} is forged: altered after it was written (its authentication tag "
                "does not match)",
            )
        if hashlib.sha256(content).hexdigest() != event.hash:
            return broken(event.seq, f"{where} was altered after it was written")
        prev_hash, expected_seq = event.hash, expected_seq + 1
    if head is None and events:
        return broken(1, "the chain's head record is missing")
    if head is not None and (head.seq != expected_seq - 1 or head.hash != prev_hash):
        return broken(
            expected_seq,
            f"events after #{expected_seq - 1} were removed (the head records #{head.seq})",
        )
    hashes = {e.seq: e.hash for e in events}
    checkpoint_at = None
    for witness in sorted(witnesses, key=lambda w: w.at, reverse=True):
        recorded = witness.heads.get(chain)
        if recorded is None:
            continue
        of = f"the checkpoint of {when(witness.at)}"
        if not events:
            return ChainReport(
                chain,
                0,
                None,
                f"deleted: the store holds none of the {recorded.seq} events {of} recorded",
            )
        if len(events) < recorded.seq:
            return ChainReport(
                chain,
                len(events),
                None,
                f"truncated: the store holds {len(events)} events, {of} recorded {recorded.seq}",
            )
        if hashes[recorded.seq] != recorded.hash:
            other = next(
                (h.chain for h in witness.heads.values() if h.hash == hashes[recorded.seq]), None
            )
            if other is not None and other != chain:
                return ChainReport(
                    chain,
                    len(events),
                    None,
                    f"holds {other}'s events as {of} recorded them: the chains were swapped",
                )
            return ChainReport(
                chain,
                len(events),
                recorded.seq,
                f"rewritten: event #{recorded.seq} is not the one {of} recorded",
            )
        checkpoint_at = checkpoint_at or witness.at
    return ChainReport(
        chain,
        len(events),
        unauthenticated=untagged,
        unauthenticated_until=untagged_until,
        checkpoint_at=checkpoint_at,
    )
