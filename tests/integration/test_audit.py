"""The audit chain on real stores: intact chains verify, any tampering is found and located."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from tests.conftest import Store
from tests.integration.test_intake import run_cli

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


def _chain(n: int, chain: str = "RC-2026-0001") -> None:
    from tasks.store.audit import append_audit
    from tasks.store.db import unit_of_work

    for i in range(n):
        with unit_of_work() as session:
            append_audit(
                session,
                chain=chain,
                actor="test",
                action=f"step.{i}",
                at=T0 + timedelta(minutes=i),
                details={"i": i, "nested": {"b": [1, 2], "a": "x"}},
            )


def _verify(chain: str = "RC-2026-0001"):  # type: ignore[no-untyped-def]
    from tasks.store.audit import verify_chain
    from tasks.store.db import read_only

    with read_only() as session:
        return verify_chain(session, chain)


def test_intact_chain_verifies(store: Store) -> None:
    _chain(5)
    report = _verify()
    assert report.ok and report.events == 5


@pytest.mark.parametrize(
    ("statement", "broken_at", "problem"),
    [
        ("UPDATE audit_event SET actor = 'mallory' WHERE seq = 3", 3, "altered"),
        ("UPDATE audit_event SET details = '{\"i\": 99}' WHERE seq = 2", 2, "altered"),
        ("DELETE FROM audit_event WHERE seq = 3", 3, "missing"),
        ("DELETE FROM audit_event WHERE seq = 5", 5, "removed"),
        ("UPDATE audit_event SET prev_hash = hash WHERE seq = 4", 4, "does not link"),
    ],
)
def test_tampering_is_found_at_the_first_broken_link(
    store: Store, statement: str, broken_at: int, problem: str
) -> None:
    _chain(5)
    _chain(2, chain="RC-2026-0002")
    with store.engine().begin() as conn:
        conn.execute(sa.text(statement + " AND chain = 'RC-2026-0001'"))
    report = _verify()
    assert not report.ok
    assert report.broken_at == broken_at
    assert problem in (report.problem or "")
    assert _verify("RC-2026-0002").ok


def test_audit_verify_command(store: Store, examples, capsys) -> None:  # type: ignore[no-untyped-def]
    assert run_cli("intake", str(examples / "reports" / "tin-kivu.yaml")) == 0
    reference = capsys.readouterr().out.strip()
    assert run_cli("audit", "verify", reference) == 0
    assert "intact" in capsys.readouterr().out
    with store.engine().begin() as conn:
        conn.execute(sa.text("UPDATE audit_event SET action = 'nothing.happened' WHERE seq = 1"))
    assert run_cli("audit", "verify", reference) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "broken at event #1" in err
    assert run_cli("audit", "verify", "RC-1999-0001") == 1


def test_concurrent_appends_keep_one_chain(store: Store) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from tasks.store.audit import append_audit
    from tasks.store.db import unit_of_work

    _chain(1)

    def add(i: int) -> None:
        with unit_of_work() as session:
            append_audit(session, chain="RC-2026-0001", actor="t", action=f"c.{i}", at=T0)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(add, range(12)))
    report = _verify()
    assert report.ok and report.events == 13


def test_the_approval_pages_own_chain_verifies_by_name(store: Store, capsys) -> None:  # type: ignore[no-untyped-def]
    from tasks.store.audit import WEB_CHAIN, append_audit
    from tasks.store.db import unit_of_work

    with unit_of_work() as session:
        append_audit(
            session,
            chain=WEB_CHAIN,
            actor="system:approval-page",
            action="link.junk",
            at=datetime(2026, 11, 30, tzinfo=UTC),
            details={"count": 3},
        )
    assert run_cli("audit", "verify", "web") == 0
    assert "web: audit chain intact (1 events)" in capsys.readouterr().out
