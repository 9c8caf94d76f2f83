"""What operators act on, from the command line, on real stores: the outbox (`remedy
notifications list`), a case's plan, decisions and audit events (`remedy show plan|decisions|
audit`), identities only with `--reveal` (the case lead or the victims' representative, audited),
and one clear line pointing to `remedy db upgrade` on a store that is not migrated.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from models.enums import MilestoneStatus, NotificationChannel
from models.tables import AuditEvent, Notification
from tasks.steps.implement import activate_plan, update_milestone
from tasks.store.db import unit_of_work
from tests.conftest import PG_URL, Store, _clear_caches, _upgrade
from tests.integration.factories import (
    LEAD,
    OBSERVER,
    SUPPLIER,
    VERIFIER,
    Clock,
    milestones,
    rows,
    start_sample_case,
    to_implementing,
)
from tests.integration.test_cli_actor import map_me
from tests.integration.test_intake import run_cli

# what the sample report holds that identifies someone (encrypted at rest)
IDENTITIES = ("Jean-Baptiste", "Emmanuel N.", "CD-0000-FICTIONAL", "intake@safepassage")
SECRET = "hunter2-smtp-pass"
NASTY_ERROR = (
    f"email: mailtos://remedy:{SECRET}@smtp.example.org:465?to=lena.lead@acme.example failed; "
    "token xoxb-1234567890-abcdefghijklmnopqrstuv at 10.1.2.3"
)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run_cli(*argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_no_identity(text: str) -> None:
    for value in IDENTITIES:
        assert value not in text


# --- the outbox ----------------------------------------------------------------------------------


def test_the_outbox_lists_every_message_and_never_an_address_a_url_or_a_secret(
    store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.drain import deliver_due

    monkeypatch.setenv("REMEDY_SMTP_URL", "mailto://remedy:pw@127.0.0.1:9?mode=insecure")
    monkeypatch.setenv("REMEDY_DELIVERY_BACKOFF_SECONDS", "3600")
    monkeypatch.delenv("REMEDY_CHAT_OPS", raising=False)
    _clear_caches()
    clock = Clock()
    first = start_sample_case(clock)
    other = start_sample_case(clock, variant="(another)", directory=False)
    deliver_due(now=clock.tick(), case_ref=first.ref)  # refused: attempts 1, an error each
    with unit_of_work() as session:  # an error as a future channel might word it, with secrets
        query = sa.select(Notification).where(Notification.case_id == first.case().id)
        row = session.exec(query.limit(1)).scalars().one()
        row.last_error = NASTY_ERROR
        session.add(row)
        nasty_id = str(row.id)

    code, out, _ = cli(capsys, "notifications", "list", "--json")
    assert code == 0
    listed: list[dict[str, Any]] = json.loads(out)
    stored = rows(Notification)
    assert len(listed) == len(stored) > 0
    assert {m["case_ref"] for m in listed} == {first.ref, other.ref}
    for message in listed:
        assert set(message) >= {
            "case_ref",
            "event",
            "channel",
            "recipient",
            "status",
            "attempts",
            "next_attempt_at",
            "delivered_at",
            "last_error",
            "id",
        }
    by_case = [m for m in listed if m["case_ref"] == first.ref]
    assert {m["recipient"] for m in by_case} == {LEAD, VERIFIER}
    assert {m["event"] for m in by_case} == {"case_opened"}
    assert all(m["attempts"] == 1 and m["last_error"] for m in by_case)
    assert all(m["attempts"] == 0 and m["last_error"] is None for m in listed if m not in by_case)

    # filters: by case, status and channel
    code, out, _ = cli(capsys, "notifications", "list", "--case", other.ref, "--json")
    assert {m["case_ref"] for m in json.loads(out)} == {other.ref}
    code, out, _ = cli(capsys, "notifications", "list", "--channel", "chat", "--json")
    chats = json.loads(out)
    assert chats and {m["channel"] for m in chats} == {NotificationChannel.CHAT.value}
    assert len(chats) == len([n for n in stored if n.channel == NotificationChannel.CHAT])
    code, out, _ = cli(capsys, "notifications", "list", "--status", "delivered", "--json")
    assert json.loads(out) == []
    code, out, _ = cli(capsys, "notifications", "list", "--case", first.ref, "--status", "pending")
    assert code == 0 and first.ref in out and other.ref not in out and "case_opened" in out

    # the table and the JSON: no address, URL, secret or token, whatever the error held
    _, table, _ = cli(capsys, "notifications", "list")
    _, dumped, _ = cli(capsys, "notifications", "list", "--json")
    for text in (table, dumped):
        for leak in (SECRET, "@", "://", "smtp.example.org", "xoxb-", "10.1.2.3", "acme.example"):
            assert leak not in text
    [nasty] = [m for m in json.loads(dumped) if m["id"] == nasty_id]
    assert nasty["last_error"].startswith("email: ") and "failed" in nasty["last_error"]
    assert cli(capsys, "notifications", "list", "--case", "RC-1999-0001")[0] == 1


def test_an_unknown_status_or_channel_is_refused(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(capsys, "notifications", "list", "--status", "lost")[0] == 2
    assert cli(capsys, "notifications", "list", "--channel", "fax")[0] == 2


# --- a case's plan, decisions and audit ----------------------------------------------------------


def test_a_cases_plan_decisions_and_audit_show_without_identities(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    case = to_implementing(Clock())
    activate_plan(case.ref, now=case.clock.tick())
    key = next(k for k, o in milestones(case.ref) if o == SUPPLIER)
    update_milestone(
        case.ref,
        key,
        status=MilestoneStatus.DONE,
        by=SUPPLIER,
        evidence=["doc:a", "doc:b"],
        now=case.clock.tick(),
    )

    code, out, _ = cli(capsys, "show", "plan", case.ref, "--json")
    assert code == 0
    plan = json.loads(out)
    assert plan["case_ref"] == case.ref and plan["status"] == "approved" and plan["version"] == 1
    shown = {m["key"]: m for m in plan["milestones"]}
    assert set(shown) == {k for k, _ in milestones(case.ref)}
    assert shown[key]["owner"] == SUPPLIER and shown[key]["status"] == "done"
    assert shown[key]["evidence"] == 2 and shown[key]["title"]
    assert all(m["status"] == "active" for k, m in shown.items() if k != key)
    code, table, _ = cli(capsys, "show", "plan", case.ref)
    assert code == 0 and key in table and SUPPLIER in table

    code, out, _ = cli(capsys, "show", "decisions", case.ref, "--json")
    decisions = json.loads(out)
    kinds = [d["kind"] for d in decisions]
    assert kinds[:3] == ["screening", "safety", "verification"]
    assert "plan_budget" in kinds
    [verified] = [d for d in decisions if d["kind"] == "verification"]
    assert (verified["by"], verified["outcome"]) == (VERIFIER, "substantiated")
    assert verified["reason"].startswith("Consistent off-site interviews")
    assert all(d["decided_at"] and d["by"] for d in decisions)
    code, table, _ = cli(capsys, "show", "decisions", case.ref)
    assert code == 0 and "substantiated" in table

    code, out, _ = cli(capsys, "show", "audit", case.ref, "--json")
    events = json.loads(out)
    stored = rows(AuditEvent, AuditEvent.chain == case.ref)
    assert [e["seq"] for e in events] == sorted(e.seq for e in stored)
    assert events[0]["action"] == "case.opened"
    [updated] = [e for e in events if e["action"] == "milestone.updated"]
    assert updated["actor"] == f"stakeholder:{SUPPLIER}" and updated["details"]["milestone"] == key
    code, table, _ = cli(capsys, "show", "audit", case.ref)
    assert code == 0 and "milestone.updated" in table

    # nothing identifying anywhere, and the case summary still works as before
    code, summary, _ = cli(capsys, "show", case.ref)
    assert code == 0 and f"Case {case.ref}" in summary
    everything = "".join(
        cli(capsys, *argv)[1]
        for argv in (
            ("show", "plan", case.ref),
            ("show", "decisions", case.ref),
            ("show", "audit", case.ref),
            ("show", "plan", case.ref, "--json"),
            ("show", "decisions", case.ref, "--json"),
            ("show", "audit", case.ref, "--json"),
        )
    )
    assert_no_identity(everything + summary)
    assert cli(capsys, "show", "plan", "RC-1999-0001")[0] == 1


def test_reveal_needs_the_case_lead_or_the_representative_and_is_audited(
    store: Store, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    case = to_implementing(Clock())
    activate_plan(case.ref, now=case.clock.tick())
    reveal = ("show", "plan", case.ref, "--reveal", "--reason", "safety planning")

    def revealed_events() -> list[AuditEvent]:
        return [
            e
            for e in rows(AuditEvent, AuditEvent.chain == case.ref)
            if e.action == "identity.revealed"
        ]

    # an account the directory does not map, then an observer: refused, nothing read or audited
    code, out, err = cli(capsys, *reveal)
    assert code == 1 and "not a stakeholder" in err
    map_me(tmp_path, OBSERVER)
    code, out, err = cli(capsys, *reveal)
    assert code == 1 and "case_lead or victim_representative" in err
    assert_no_identity(out + err)
    assert revealed_events() == []
    map_me(tmp_path, LEAD)
    assert cli(capsys, "show", "plan", case.ref, "--reveal")[0] == 2  # a reason is needed
    assert cli(capsys, *reveal, "--json")[0] == 2  # identities are for a person to read
    assert revealed_events() == []

    code, out, _ = cli(capsys, *reveal)
    assert code == 0 and "Jean-Baptiste K. (fictional)" in out and "Emmanuel N." in out
    [event] = revealed_events()
    assert event.actor == f"stakeholder:{LEAD}"
    assert event.details["reason"] == "safety planning" and event.details["view"] == "plan"
    assert event.details["operator"] == f"stakeholder:{LEAD}"
    assert "Jean-Baptiste" not in json.dumps(event.details)
    code, out, _ = cli(
        capsys, "show", "decisions", case.ref, "--reveal", "--reason", "closure review"
    )
    assert code == 0 and "Jean-Baptiste K. (fictional)" in out
    assert [e.details["view"] for e in revealed_events()] == ["plan", "decisions"]
    assert case.chain().ok


# --- a store that is not migrated ----------------------------------------------------------------

READERS = (
    ("show", "RC-2026-0001"),
    ("show", "plan", "RC-2026-0001"),
    ("show", "decisions", "RC-2026-0001"),
    ("show", "audit", "RC-2026-0001"),
    ("cases",),
    ("notifications", "list"),
    ("audit", "verify", "RC-2026-0001"),
)


def _says_upgrade(capsys: pytest.CaptureFixture[str], *, may_work: tuple[str, ...] = ()) -> None:
    """Each reader prints one line pointing to `remedy db upgrade` (exit 1), never a traceback;
    on a store behind head, the readers named in `may_work` may find what they need and work."""
    for argv in READERS:
        code, out, err = cli(capsys, *argv)
        assert "Traceback" not in err + out and "sqlalchemy" not in (err + out).lower()
        if code == 0 and argv[0] in may_work:
            continue
        assert code == 1, argv
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "remedy db upgrade" in lines[0], (argv, err)


def _sqlite_at(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMEDY_DATABASE_URL", f"sqlite:///{path}")
    monkeypatch.delenv("REMEDY_DATABASE_SCHEMA", raising=False)
    _clear_caches()


def test_a_fresh_sqlite_file_says_to_upgrade(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "fresh.db"
    sqlite3.connect(path).close()  # an empty file, never migrated
    _sqlite_at(path, monkeypatch)
    started = time.monotonic()
    _says_upgrade(capsys)
    assert time.monotonic() - started < 20
    assert run_cli("db", "upgrade") == 0
    assert run_cli("cases") == 0


def test_a_store_behind_head_says_to_upgrade(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from alembic import command

    from migrations import alembic_config

    path = tmp_path / "behind.db"
    command.upgrade(alembic_config(f"sqlite:///{path}"), "0001")
    _sqlite_at(path, monkeypatch)
    _says_upgrade(capsys, may_work=("cases",))  # its columns are all there at 0001: no cases


def test_an_empty_postgresql_schema_says_to_upgrade(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if not PG_URL:
        pytest.skip("REMEDY_TEST_POSTGRES_URL is not set (PostgreSQL tests)")
    schema = f"remedy_fresh_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        monkeypatch.setenv("REMEDY_DATABASE_URL", PG_URL)
        monkeypatch.setenv("REMEDY_DATABASE_SCHEMA", schema)
        _clear_caches()
        _says_upgrade(capsys)
        _upgrade(PG_URL, schema)
        assert run_cli("cases") == 0
    finally:
        from tasks.store.db import engine_for

        engine_for(PG_URL, schema).dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()
