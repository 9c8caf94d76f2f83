"""Signed checkpoints of every audit chain's head, published outside the case store.

A checkpoint lists each chain's head (name, newest event's number and hash, and how many of its
first events were written before authentication), a Merkle root over them sorted by name, and
the number of chains, signed with an Ed25519 key kept in REMEDY_HOME. It is appended to
REMEDY_HOME/audit-checkpoints.jsonl and, inside a Prefect run, published as the
`audit-checkpoint` artifact. A chain later found shorter than a checkpoint recorded (truncated),
absent (deleted) or holding another chain's head (swapped) is named by `remedy audit verify`.
docs/security.md, "Audit that proves itself".
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)
from sqlmodel import Session, col, func, select

from models.settings import get_settings
from models.tables import AuditEvent, AuditHead
from tasks.store.audit import ChainReport, Head, Witness, audit_keys, verify_chain, when
from tasks.store.db import read_only

log = logging.getLogger(__name__)

CHECKPOINTS_FILE = "audit-checkpoints.jsonl"
SIGNING_KEY_FILE = "audit-signing.key"
ARTIFACT_KEY = "audit-checkpoint"
VERSION = 1


class CheckpointError(Exception):
    """The checkpoint signing key is unreadable or exposed."""


@dataclass(frozen=True)
class Checkpoint:
    """One signed statement of every chain's head at a moment."""

    at: datetime
    chains: int
    events: int
    root: str
    public_key: str
    signature: str
    heads: tuple[Head, ...] = field(repr=False)

    def statement(self) -> bytes:
        """Return the bytes the signature covers (the root covers the heads)."""
        return _statement(self.at, self.chains, self.events, self.root)

    def to_json(self) -> str:
        """Return the checkpoint as one line of the checkpoints file."""
        return json.dumps(
            {
                "v": VERSION,
                "at": _iso(self.at),
                "chains": self.chains,
                "events": self.events,
                "root": self.root,
                "public_key": self.public_key,
                "signature": self.signature,
                "heads": [
                    {"chain": h.chain, "seq": h.seq, "hash": h.hash, "untagged": h.untagged}
                    for h in self.heads
                ],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str) -> Checkpoint:
        """Read a line of the checkpoints file (ValueError, KeyError or TypeError if not one)."""
        data: dict[str, Any] = json.loads(raw)
        if data["v"] != VERSION:
            raise ValueError(f"unknown checkpoint version {data['v']!r}")
        return cls(
            at=datetime.fromisoformat(data["at"]).astimezone(UTC),
            chains=int(data["chains"]),
            events=int(data["events"]),
            root=str(data["root"]),
            public_key=str(data["public_key"]),
            signature=str(data["signature"]),
            heads=tuple(
                Head(str(h["chain"]), int(h["seq"]), str(h["hash"]), int(h["untagged"]))
                for h in data["heads"]
            ),
        )


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def _statement(at: datetime, chains: int, events: int, root: str) -> bytes:
    body = {"v": VERSION, "at": _iso(at), "chains": chains, "events": events, "root": root}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def merkle_root(heads: Sequence[Head]) -> str:
    """Return the Merkle root (RFC 6962's tree hash) over the heads sorted by chain name."""
    leaves = [
        hashlib.sha256(
            b"\x00"
            + json.dumps([h.chain, h.seq, h.hash, h.untagged], separators=(",", ":")).encode()
        ).digest()
        for h in sorted(heads, key=lambda h: h.chain)
    ]
    return _tree(leaves).hex()


def _tree(leaves: list[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    split = 1 << ((len(leaves) - 1).bit_length() - 1)  # the largest power of two below n
    return hashlib.sha256(b"\x01" + _tree(leaves[:split]) + _tree(leaves[split:])).digest()


# --- the signing key (REMEDY_HOME, never the store) ----------------------------------------------


def _key_path() -> Path:
    return get_settings().home / SIGNING_KEY_FILE


def checkpoints_path() -> Path:
    """Return the file checkpoints are appended to."""
    return get_settings().home / CHECKPOINTS_FILE


def signing_key() -> Ed25519PrivateKey:
    """Return the checkpoint signing key, creating it (mode 0600) on first use."""
    path = _key_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CheckpointError(
                f"the audit signing key {path} is readable by other users; run `chmod 600 {path}`"
            ) from None
        key = load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise CheckpointError(f"{path} does not hold an Ed25519 key") from None
        return key
    key = Ed25519PrivateKey.generate()
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return key


def public_key_hex(key: Ed25519PrivateKey | None = None) -> str:
    """Return the checkpoints' public key (hex of its 32 bytes), the one to give an auditor."""
    public = (key or signing_key()).public_key()
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


# --- taking a checkpoint -------------------------------------------------------------------------


def current_heads(session: Session) -> list[Head]:
    """Return every chain's head and untagged beginning, in one statement (one snapshot)."""
    untagged = (
        select(func.count())
        .select_from(AuditEvent)
        .where(AuditEvent.chain == AuditHead.chain, col(AuditEvent.tag).is_(None))
        .scalar_subquery()
    )
    rows = session.exec(
        select(col(AuditHead.chain), col(AuditHead.seq), col(AuditHead.hash), untagged).order_by(
            col(AuditHead.chain)
        )
    ).all()
    return [Head(chain, seq, digest, int(n)) for chain, seq, digest, n in rows]


def checkpoint(now: datetime) -> Checkpoint:
    """Sign every chain's head as of now and publish it outside the store (file, artifact)."""
    with read_only() as session:
        heads = tuple(current_heads(session))
    key = signing_key()
    root = merkle_root(heads)
    events = sum(h.seq for h in heads)
    signature = key.sign(_statement(now, len(heads), events, root)).hex()
    taken = Checkpoint(now, len(heads), events, root, public_key_hex(key), signature, heads)
    _append(checkpoints_path(), taken.to_json())
    _publish_artifact(taken)
    return taken


def _append(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # two checkpoints at once never interleave their lines
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _publish_artifact(taken: Checkpoint) -> None:
    """Publish the signed root as a Prefect artifact when inside a run; never fail for it."""
    try:
        from prefect.artifacts import create_markdown_artifact
        from prefect.context import FlowRunContext, TaskRunContext

        if FlowRunContext.get() is None and TaskRunContext.get() is None:
            return
        create_markdown_artifact(
            key=ARTIFACT_KEY,
            markdown="\n".join(
                [
                    f"**Audit checkpoint of {when(taken.at)}**",
                    "",
                    "| chains | events | Merkle root | Ed25519 public key | signature |",
                    "|---|---|---|---|---|",
                    f"| {taken.chains} | {taken.events} | `{taken.root}` | "
                    f"`{taken.public_key}` | `{taken.signature}` |",
                    "",
                    "The same line is in REMEDY_HOME/audit-checkpoints.jsonl; "
                    "`remedy audit verify` checks the store against it.",
                ]
            ),
            description=f"Audit checkpoint: {taken.chains} chains, {taken.events} events.",
        )
    except Exception:  # the file holds the checkpoint; the artifact is a second copy
        log.warning("the audit checkpoint's artifact could not be published", exc_info=True)


def _last_at(path: Path) -> datetime | None:
    """Return the moment of the file's last checkpoint (read from its end)."""
    if not path.exists():
        return None
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        end = fh.tell()
        tail, pos = b"", end
        while pos > 0 and tail.rstrip(b"\n").count(b"\n") < 1:
            step = min(65536, pos)
            pos -= step
            fh.seek(pos)
            tail = fh.read(step) + tail
    lines = tail.rstrip(b"\n").split(b"\n")
    try:
        return Checkpoint.from_json(lines[-1].decode()).at if lines[-1] else None
    except (ValueError, KeyError, TypeError):
        return None


def checkpoint_if_due(now: datetime) -> bool:
    """Take a checkpoint if the last one is older than the interval; tell whether one was taken."""
    last = _last_at(checkpoints_path())
    interval = timedelta(hours=get_settings().audit_checkpoint_hours)
    if last is not None and last <= now < last + interval:
        return False
    checkpoint(now)
    return True


def checkpoint_after_commit(
    session: Session, now: datetime, *, case_ref: str | None = None
) -> None:
    """Take a checkpoint once the session has committed (a case's closure), and send it to the
    case's observers to keep outside the store (`audit_checkpoint`); never fail the closure."""

    taken = False

    def take(committed: Session) -> None:
        nonlocal taken
        # a savepoint's release is a "commit" too: wait for the outermost transaction's
        if taken or committed.get_nested_transaction() is not None:
            return
        taken = True
        try:
            signed = checkpoint(now)
            if case_ref is not None:
                send_checkpoint(signed, case_ref, now=now)
        except Exception:  # the next sweep's checkpoint covers the closure too
            log.exception("the audit checkpoint after a case closure failed")

    sa.event.listen(session, "after_commit", take)


def send_checkpoint(signed: Checkpoint, case_ref: str, *, now: datetime) -> None:
    """Queue the signed checkpoint for the case's observers: its root, signature and key, and the
    case chain's head it covers (hashes and counts only: no personal data)."""
    from models.enums import NotificationEvent
    from notifications.outbox import notify
    from tasks.context import current_routing
    from tasks.store.cases import get_case
    from tasks.store.db import unit_of_work

    head = next((h for h in signed.heads if h.chain == case_ref), None)
    with unit_of_work() as session:
        notify(
            session,
            routing=current_routing(),
            event=NotificationEvent.AUDIT_CHECKPOINT,
            case=get_case(session, case_ref),
            key=f"audit-checkpoint:{case_ref}:{signed.root[:32]}",
            now=now,
            context={
                "case_ref": case_ref,
                "step": 5,
                "checkpoint_at": when(signed.at),
                "head_seq": head.seq if head else 0,
                "head_hash": head.hash if head else "-",
                "chains": signed.chains,
                "root": signed.root,
                "public_key": signed.public_key,
                "signature": signed.signature,
            },
        )


# --- verifying -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditVerdict:
    """The chains checked, what is wrong with the checkpoints, the newest valid checkpoint."""

    reports: list[ChainReport]
    checkpoint_problems: list[str]
    last_checkpoint: datetime | None

    @property
    def ok(self) -> bool:
        return not self.checkpoint_problems and all(r.ok for r in self.reports)


def _witnesses(path: Path, trusted: set[str]) -> tuple[list[Witness], list[str]]:
    """Read the checkpoints file: the checkpoints whose signature holds, and what is wrong."""
    if not path.exists():
        return [], []
    witnesses, problems = [], []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            taken = Checkpoint.from_json(raw)
        except (ValueError, KeyError, TypeError):
            problems.append(f"line {number} of {path} is not a checkpoint")
            continue
        of = f"the checkpoint of {when(taken.at)} (line {number} of {path})"
        if taken.public_key not in trusted:
            problems.append(f"{of} is signed by an unknown key ({taken.public_key[:16]}…)")
            continue
        try:
            Ed25519PublicKey.from_public_bytes(bytes.fromhex(taken.public_key)).verify(
                bytes.fromhex(taken.signature), taken.statement()
            )
        except (InvalidSignature, ValueError):
            problems.append(f"{of} has an invalid signature: it was altered")
            continue
        consistent = (
            merkle_root(taken.heads) == taken.root
            and len(taken.heads) == taken.chains
            and sum(h.seq for h in taken.heads) == taken.events
        )
        if not consistent:
            problems.append(f"{of} does not match its signature: its list of heads was altered")
            continue
        witnesses.append(Witness(taken.at, {h.chain: h for h in taken.heads}))
    return witnesses, problems


def verify_audit(
    chain: str | None = None,
    *,
    checkpoints_file: Path | None = None,
    public_keys: Sequence[str] = (),
) -> AuditVerdict:
    """Check one chain (or every chain, and every chain a checkpoint knows) against the
    checkpoints; trust the given public keys, else the signing key in REMEDY_HOME."""
    path = checkpoints_file or checkpoints_path()
    trusted = {k.strip().lower() for k in public_keys}
    if not trusted and _key_path().exists():
        trusted = {public_key_hex()}
    witnesses, problems = _witnesses(path, trusted)
    if not trusted and (witnesses or problems):
        problems = [f"no public key to check {path} with: give --public-key"]
    with read_only() as session:
        names = set(session.exec(select(AuditHead.chain)).all())
        names |= set(session.exec(select(AuditEvent.chain).distinct()).all())
        names |= {name for w in witnesses for name in w.heads}
        keys = audit_keys()
        others = sorted(names)
        reports = [
            verify_chain(session, name, keys=keys, witnesses=witnesses, chains=others)
            for name in ([chain] if chain else others)
        ]
    last = max((w.at for w in witnesses), default=None)
    return AuditVerdict(reports, problems, last)
