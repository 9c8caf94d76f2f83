"""Migrations: upgrade an empty store to head, then the schema matches the models exactly."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import models.security
import models.tables  # noqa: F401
from tests.conftest import Store


def test_upgrade_from_empty_has_no_drift(store: Store) -> None:
    with store.engine().connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata
        )
    assert diff == []


def test_db_upgrade_command_on_a_fresh_sqlite_file(tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from models.settings import get_settings
    from tests.integration.test_intake import run_cli

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    monkeypatch.setenv("REMEDY_DATABASE_URL", url)
    get_settings.cache_clear()
    assert run_cli("db", "upgrade") == 0
    assert run_cli("db", "upgrade") == 0  # idempotent
    from tasks.store.db import engine_for

    with engine_for(url).connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata
        )
    assert diff == []


@pytest.mark.parametrize("table", ["remediation_case", "audit_event"])
def test_no_table_is_named_after_an_sql_keyword(table: str) -> None:
    assert "case" not in SQLModel.metadata.tables
    assert table in SQLModel.metadata.tables
