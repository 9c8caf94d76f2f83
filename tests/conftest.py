"""Shared fixtures: settings through the environment; real case stores (SQLite, PostgreSQL)."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_URL = os.environ.get("REMEDY_TEST_POSTGRES_URL")


def require(condition: bool, reason: str) -> None:
    """Skip outside CI, fail inside it: CI must run every test."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def _clear_caches() -> None:
    from models.settings import get_settings
    from tasks.context import _policy_at, _routing_at, _templates_at
    from tasks.store.vault import _vault_for

    get_settings.cache_clear()
    _policy_at.cache_clear()
    _templates_at.cache_clear()
    _routing_at.cache_clear()
    _vault_for.cache_clear()


@pytest.fixture(scope="session")
def session_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture(autouse=True)
def remedy_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, session_key: str) -> Iterator[Path]:
    """Point every test at its own home directory and a throw-away key, via the environment."""
    home = tmp_path / "var"
    monkeypatch.setenv("REMEDY_HOME", str(home))
    monkeypatch.setenv("REMEDY_ENCRYPTION_KEY", session_key)
    for name in ("REMEDY_DATABASE_URL", "REMEDY_DATABASE_SCHEMA", "REMEDY_POLICY_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    _clear_caches()
    yield home
    _clear_caches()


def _upgrade(url: str, schema: str | None = None) -> None:
    from alembic import command

    from migrations import alembic_config

    command.upgrade(alembic_config(url, schema), "head")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite case store, copied for each test."""
    path = tmp_path_factory.mktemp("template") / "remedy.db"
    _upgrade(f"sqlite:///{path}")
    from tasks.store.db import engine_for

    engine_for(f"sqlite:///{path}").dispose()
    return path


@pytest.fixture(scope="session")
def pg_schema() -> Iterator[str | None]:
    """A migrated PostgreSQL schema of this test session's own, dropped at the end."""
    if not PG_URL:
        yield None
        return
    schema = f"remedy_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        _upgrade(PG_URL, schema)
        # Each test empties the tables with DELETE (_empty). Left to autovacuum, the space of the
        # deleted rows would be reused by the next test's rows, and a query without ORDER BY would
        # no longer return them in the order they were written, as it did on the fresh files
        # TRUNCATE made (tests that read an audit chain or a mailbox in order rely on it).
        with admin.begin() as conn:
            for table in _tables():
                conn.exec_driver_sql(
                    f'ALTER TABLE "{schema}"."{table.name}" SET (autovacuum_enabled = false)'
                )
        yield schema
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


@dataclass
class Store:
    """The case store a test runs against."""

    backend: str
    url: str
    schema: str | None
    path: Path | None

    def engine(self) -> sa.Engine:
        from tasks.store.db import engine_for

        return engine_for(self.url, self.schema)

    def row_counts(self) -> dict[str, int]:
        from sqlmodel import SQLModel

        counts = {}
        with self.engine().connect() as conn:
            for name, table in SQLModel.metadata.tables.items():
                counts[name] = conn.execute(
                    sa.select(sa.func.count()).select_from(table)
                ).scalar_one()
            conn.rollback()
        return counts


def _tables() -> list[sa.Table]:
    """Return the case store's tables, parents before children."""
    from sqlmodel import SQLModel

    import models.security  # noqa: F401  (imports models.tables too)

    return list(SQLModel.metadata.sorted_tables)


def _empty(url: str, schema: str) -> None:
    """Delete every row of the schema's tables, children first. DELETE, not TRUNCATE: on tables
    this small it takes a tenth of the time (TRUNCATE makes new files for each table and its
    indexes: about 1 s a test on this suite's machine)."""
    from tasks.store.db import engine_for

    with engine_for(url, schema).begin() as conn:
        for table in reversed(_tables()):
            conn.exec_driver_sql(f'DELETE FROM "{schema}"."{table.name}"')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    sqlite_template: Path,
    pg_schema: str | None,
) -> Iterator[Store]:
    """A migrated, empty case store: every store test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "remedy.db"
        # the backup API copies what the WAL holds too (a plain file copy would not)
        with sqlite3.connect(sqlite_template) as src, sqlite3.connect(path) as dst:
            src.backup(dst)
        url = f"sqlite:///{path}"
        monkeypatch.setenv("REMEDY_DATABASE_URL", url)
        _clear_caches()
        st = Store("sqlite", url, None, path)
        yield st
        st.engine().dispose()
        return
    require(PG_URL is not None, "REMEDY_TEST_POSTGRES_URL is not set (PostgreSQL tests)")
    assert PG_URL is not None and pg_schema is not None
    _empty(PG_URL, pg_schema)
    monkeypatch.setenv("REMEDY_DATABASE_URL", PG_URL)
    monkeypatch.setenv("REMEDY_DATABASE_SCHEMA", pg_schema)
    _clear_caches()
    yield Store("postgresql", PG_URL, pg_schema, None)


@pytest.fixture
def examples() -> Path:
    return ROOT / "examples"


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups into the node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `make test` (pytest-xdist, two workers, `--dist loadgroup`), keep together what
    shares a Prefect server: the tests on the session's server (the `e2e` fixture) run on one
    worker, so the session starts one server; an end-to-end module that starts a stack of its own
    stays on one worker (its module fixtures are made once); everything else goes to whichever
    worker is free.

    Then order the work as xdist hands it out (`make test` turns its own ordering off): the
    test marked `longest` first, so it starts at once on a worker of its own while the other
    worker takes the session's server and everything else comes to whichever is free; then the
    groups, largest first; then the single tests, as collected. Started last, the longest test
    would be the suite's tail (tests/unit/test_xdist.py)."""
    e2e = ROOT / "tests" / "e2e"
    group: dict[str, str] = {}
    for item in items:
        if "e2e" in getattr(item, "fixturenames", ()):
            group[item.nodeid] = "prefect-session"
        elif item.path.is_relative_to(e2e):
            group[item.nodeid] = f"own-stack-{item.path.stem}"
        else:
            continue
        item.add_marker(pytest.mark.xdist_group(group[item.nodeid]))
    sizes = Counter(group.values())
    longest = {group.get(i.nodeid, i.nodeid) for i in items if i.get_closest_marker("longest")}

    def order(item: pytest.Item) -> tuple[int, int]:
        scope = group.get(item.nodeid, item.nodeid)
        if scope in longest:
            return (0, 0)
        return (1, -sizes[scope]) if scope in sizes else (2, 0)

    items.sort(key=order)  # stable: a group's tests, and the single tests, keep their order
