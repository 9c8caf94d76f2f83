"""An audit that proves itself (docs/security.md): attacks by someone who can write the case store.

The attacker here holds the database and knows the unkeyed SHA-256 chain's format, so they rewrite
events and recompute every hash and the head, as the issue's auditor did. They do not hold the
key file: the HMAC tags and the signed checkpoints in REMEDY_HOME are what catch them.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import col, select

from models.enums import DecisionKind, Locale, NotificationEvent
from models.tables import AuditEvent, AuditHead, Notification
from notifications.render import render
from tests.conftest import Store
from tests.integration.factories import (
    OBSERVER,
    SENIOR,
    Clock,
    SampleCase,
    rows,
    stakeholder_id,
    start_sample_case,
    to_closing,
)
from tests.integration.test_intake import run_cli

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


# --- the attacker's tools: plain SQL access and the public hash format ---------------------------


def _sha256(event: AuditEvent) -> str:
    body = {
        "chain": event.chain,
        "seq": event.seq,
        "at": event.at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": event.actor,
        "action": event.action,
        "subject_type": event.subject_type,
        "subject_id": event.subject_id,
        "details": event.details,
        "prev_hash": event.prev_hash,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _events(session: Any, chain: str) -> list[AuditEvent]:
    return list(
        session.exec(
            select(AuditEvent).where(AuditEvent.chain == chain).order_by(col(AuditEvent.seq))
        ).all()
    )


def _rehash(session: Any, chain: str, *, strip_tags: bool = False) -> None:
    """Recompute a chain's links and hashes and set its head, as an attacker with DB access can."""
    prev = "0" * 64
    events = _events(session, chain)
    for event in events:
        if strip_tags:
            event.tag = None
        event.prev_hash = prev
        event.hash = _sha256(event)
        prev = event.hash
        session.add(event)
    head = session.get(AuditHead, chain)
    if events:
        assert head is not None
        head.seq, head.hash = events[-1].seq, prev
        session.add(head)
    session.flush()


def _forge_decision(ref: str) -> int:
    """The issue's attack: the decision becomes sofia.senior's rejection; hashes recomputed."""
    from tasks.store.db import unit_of_work

    with unit_of_work() as session:
        [taken] = [e for e in _events(session, ref) if e.action == "decision.taken"][:1]
        taken.actor = f"stakeholder:{SENIOR}"
        taken.details = {**taken.details, "outcome": "rejected"}
        session.add(taken)
        session.flush()
        _rehash(session, ref)
        return taken.seq


def _two_cases() -> tuple[SampleCase, SampleCase]:
    clock = Clock()
    first = start_sample_case(clock)
    first.decide(DecisionKind.SCREENING)
    second = start_sample_case(clock, variant="(a second report)", directory=False)
    assert first.ref != second.ref
    return first, second


def _verify(chain: str | None = None):  # type: ignore[no-untyped-def]
    from tasks.store.checkpoints import verify_audit

    return verify_audit(chain)


def _problems(chain: str | None = None) -> dict[str, str]:
    verdict = _verify(chain)
    return {r.chain: r.problem or "" for r in verdict.reports if not r.ok}


def _checkpoint(at: datetime = NOW):  # type: ignore[no-untyped-def]
    from tasks.store.checkpoints import checkpoint

    return checkpoint(at)


# --- the untouched store -------------------------------------------------------------------------


def test_an_untouched_store_is_intact_and_matches_its_signed_checkpoint(
    store: Store, remedy_env, capsys
) -> None:  # type: ignore[no-untyped-def]
    first, second = _two_cases()
    taken = _checkpoint()
    assert taken.chains >= 3  # both cases and the directory's system chain

    verdict = _verify()
    assert verdict.ok and not verdict.checkpoint_problems
    assert {first.ref, second.ref} <= {r.chain for r in verdict.reports}
    assert all(r.checkpoint_at == NOW for r in verdict.reports)

    assert run_cli("audit", "verify") == 0
    said = capsys.readouterr().out
    assert "intact" in said and "checkpoint of 2026-12-01 09:00" in said
    assert run_cli("audit", "verify", first.ref) == 0
    events = len(first.audit())
    assert f"intact ({events} events, checkpoint of 2026-12-01 09:00" in capsys.readouterr().out

    # the checkpoint is published outside the store, signed with a key the auditor can be given
    line = json.loads((remedy_env / "audit-checkpoints.jsonl").read_text().splitlines()[-1])
    assert line["root"] == taken.root and line["chains"] == taken.chains
    assert run_cli("audit", "public-key") == 0
    assert capsys.readouterr().out.strip() == line["public_key"]
    key_file = remedy_env / "audit-signing.key"
    assert key_file.stat().st_mode & 0o077 == 0


# --- the attacks ---------------------------------------------------------------------------------


def test_a_forged_event_with_recomputed_hashes_is_named(store: Store, capsys) -> None:  # type: ignore[no-untyped-def]
    """No checkpoint yet: the event's HMAC tag alone gives the forgery away."""
    first, second = _two_cases()
    assert _verify().ok
    seq = _forge_decision(first.ref)

    problems = _problems()
    assert set(problems) == {first.ref}
    assert f"event #{seq}" in problems[first.ref] and "forged" in problems[first.ref]

    assert run_cli("audit", "verify") == 1
    err = " ".join(capsys.readouterr().err.split())
    assert first.ref in err and f"event #{seq}" in err and "forged" in err
    assert second.ref not in err


def test_stripping_the_tags_after_a_checkpoint_is_named(store: Store) -> None:
    first, _ = _two_cases()
    _checkpoint()
    from tasks.store.db import unit_of_work

    with unit_of_work() as session:
        _rehash(session, first.ref, strip_tags=True)
    problems = _problems(first.ref)
    assert "event #1" in problems[first.ref] and "forged" in problems[first.ref]


def test_a_truncated_chain_is_named(store: Store, capsys) -> None:  # type: ignore[no-untyped-def]
    first, _ = _two_cases()
    _checkpoint()
    from tasks.store.db import unit_of_work

    with unit_of_work() as session:
        events = _events(session, first.ref)
        for event in events[-2:]:
            session.delete(event)
        head = session.get(AuditHead, first.ref)
        assert head is not None
        head.seq, head.hash = events[-3].seq, events[-3].hash
        session.add(head)
    kept = len(events) - 2

    problems = _problems()
    assert set(problems) == {first.ref}
    assert "truncated" in problems[first.ref]
    assert f"{kept} events" in problems[first.ref] and f"{len(events)}" in problems[first.ref]
    assert run_cli("audit", "verify", first.ref) == 1
    assert "truncated" in capsys.readouterr().err


def test_a_deleted_chain_is_named(store: Store, capsys) -> None:  # type: ignore[no-untyped-def]
    _, second = _two_cases()
    _checkpoint()
    from tasks.store.db import unit_of_work

    with unit_of_work() as session:
        for event in _events(session, second.ref):
            session.delete(event)
        head = session.get(AuditHead, second.ref)
        assert head is not None
        session.delete(head)

    problems = _problems()
    assert set(problems) == {second.ref}
    assert "deleted" in problems[second.ref]
    assert run_cli("audit", "verify") == 1
    err = " ".join(capsys.readouterr().err.split())
    assert second.ref in err and "deleted" in err
    assert run_cli("audit", "verify", second.ref) == 1
    assert f"{second.ref}: audit chain deleted" in " ".join(capsys.readouterr().err.split())


def test_two_swapped_chains_are_named(store: Store) -> None:
    first, second = _two_cases()
    _checkpoint()
    from tasks.store.db import unit_of_work

    with unit_of_work() as session:
        for chain, to in ((first.ref, "tmp"), (second.ref, first.ref), ("tmp", second.ref)):
            for event in _events(session, chain):
                event.chain = to
                session.add(event)
            session.flush()
        heads = [session.get(AuditHead, first.ref), session.get(AuditHead, second.ref)]
        assert heads[0] is not None and heads[1] is not None
        (heads[0].seq, heads[0].hash), (heads[1].seq, heads[1].hash) = (
            (heads[1].seq, heads[1].hash),
            (heads[0].seq, heads[0].hash),
        )
        session.add_all(heads)
        session.flush()
        _rehash(session, first.ref)
        _rehash(session, second.ref)

    problems = _problems()
    assert set(problems) == {first.ref, second.ref}
    assert "swapped" in problems[first.ref] and second.ref in problems[first.ref]
    assert "swapped" in problems[second.ref] and first.ref in problems[second.ref]


@pytest.mark.parametrize("field", ["chains", "heads"])
def test_a_tampered_checkpoint_file_fails_its_signature(
    store: Store, remedy_env, capsys, field: str
) -> None:  # type: ignore[no-untyped-def]
    first, _ = _two_cases()
    _checkpoint()
    path = remedy_env / "audit-checkpoints.jsonl"
    line = json.loads(path.read_text())
    if field == "chains":
        line["chains"] -= 1
    else:  # hide a chain from the checkpoint, so that deleting it would go unseen
        line["heads"] = [h for h in line["heads"] if h["chain"] != first.ref]
    path.write_text(json.dumps(line) + "\n")

    verdict = _verify()
    assert not verdict.ok
    [problem] = verdict.checkpoint_problems
    assert "checkpoint of 2026-12-01 09:00" in problem and "signature" in problem
    assert run_cli("audit", "verify") == 1
    assert "signature" in capsys.readouterr().err


def test_another_signing_key_is_not_trusted(store: Store, remedy_env, capsys) -> None:  # type: ignore[no-untyped-def]
    """An auditor checks with the public key they were given, not the one beside the file."""
    _two_cases()
    _checkpoint()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    other = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert run_cli("audit", "verify", "--public-key", other.hex()) == 1
    assert "unknown key" in capsys.readouterr().err


# --- before authentication, at closure, at the interval ------------------------------------------


def test_events_from_before_the_migration_verify_as_unauthenticated(store: Store) -> None:
    first, _ = _two_cases()
    from tasks.store.audit import append_audit
    from tasks.store.db import unit_of_work

    with unit_of_work() as session:  # what the store held before migration 0010
        for event in _events(session, first.ref):
            event.tag = None
            session.add(event)
    before = len(first.audit())
    [report] = _verify(first.ref).reports
    assert report.ok and report.unauthenticated == before

    _checkpoint()  # the first checkpoint after the migration records the old events as such
    with unit_of_work() as session:
        append_audit(session, chain=first.ref, actor="test", action="note.added", at=NOW)
    [report] = _verify(first.ref).reports
    assert report.ok and report.unauthenticated == before and report.events == before + 1
    assert f"{before} unauthenticated before 2026-12-01 09:00:00 UTC" in report.summary()

    with unit_of_work() as session:  # a new event stripped of its tag is no old event
        _rehash(session, first.ref, strip_tags=True)
    [report] = _verify(first.ref).reports
    assert not report.ok and f"event #{before + 1}" in (report.problem or "")


def test_a_case_closure_publishes_a_checkpoint(store: Store, remedy_env) -> None:
    case = to_closing(Clock())
    proposal = case.decide(DecisionKind.CLOSURE, closure_type="no_basis")
    path = remedy_env / "audit-checkpoints.jsonl"
    assert not path.exists()
    case.decide(
        DecisionKind.CLOSURE_CONFIRMATION,
        scope=case.confirmation_scope(proposal),
        exclude=[proposal.approver_id],
    )
    [line] = [json.loads(raw) for raw in path.read_text().splitlines()]
    [head] = [h for h in line["heads"] if h["chain"] == case.ref]
    assert head["seq"] == len(case.audit())  # the closure's own events included
    assert _verify(case.ref).ok
    # a copy outside the store: the case's observers are sent the signed root to keep
    sent = rows(Notification, Notification.event == NotificationEvent.AUDIT_CHECKPOINT)
    assert [n.recipient_id for n in sent] == [stakeholder_id(OBSERVER)]
    [message] = sent
    assert (
        message.context["root"] == line["root"]
        and message.context["signature"] == (line["signature"])
    )
    assert (message.context["head_seq"], message.context["head_hash"]) == (
        head["seq"],
        head["hash"],
    )
    rendered = render(
        "audit_checkpoint", fmt="text", locale=Locale.EN, context=message.context
    ).body
    assert line["root"] in rendered and "remedy audit verify" in rendered


def test_the_sweep_checkpoints_once_per_interval(store: Store, remedy_env, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from tasks.store.checkpoints import checkpoint_if_due

    _two_cases()
    path = remedy_env / "audit-checkpoints.jsonl"
    assert checkpoint_if_due(NOW) is True
    assert checkpoint_if_due(NOW + timedelta(hours=23)) is False
    assert checkpoint_if_due(NOW + timedelta(hours=24)) is True
    assert len(path.read_text().splitlines()) == 2

    monkeypatch.setenv("REMEDY_AUDIT_CHECKPOINT_HOURS", "1")
    from models.settings import get_settings

    get_settings.cache_clear()
    assert checkpoint_if_due(NOW + timedelta(hours=25)) is True
    assert _verify().ok
