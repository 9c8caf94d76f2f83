"""Engines and the unit of work: one session, one transaction, one explicit commit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from models.settings import get_settings

_READ_ONLY = "remedy_read_only"


def _configure_sqlite(engine: Engine) -> None:
    """Make SQLite safe for several processes: WAL, FK checks, and write locks taken up front."""

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let SQLAlchemy's begin below control transactions
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # BEGIN IMMEDIATE: a transaction that will write takes the lock at its start, so two
        # writers queue instead of failing with "database is locked" when they upgrade.
        if conn.get_execution_options().get(_READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def _private_sqlite_file(path: str) -> None:
    """Make the SQLite file owner-only before SQLite opens it: its -wal and -shm files take the
    database file's mode. In REMEDY_HOME the home is kept private too (tasks/store/home.py)."""
    from pathlib import Path

    from tasks.store.home import create_private_file, private_parent, tighten_file

    db = Path(path)
    private_parent(db, get_settings().home)
    create_private_file(db)
    for suffix in ("-wal", "-shm", "-journal"):
        tighten_file(db.with_name(db.name + suffix))


@lru_cache(maxsize=8)
def engine_for(url: str, schema: str | None = None) -> Engine:
    """Return the (cached) engine for a case-store URL."""
    # hide_parameters: a database error's message never carries the values (free text, names)
    # into logs, Prefect task states or terminals
    kwargs: dict[str, Any] = {"pool_pre_ping": True, "hide_parameters": True}
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            _private_sqlite_file(path)
        kwargs["connect_args"] = {"timeout": 30}
        engine = sa.create_engine(url, **kwargs)
        _configure_sqlite(engine)
        return engine
    if schema:
        kwargs["connect_args"] = {"options": f"-csearch_path={schema}"}
    return sa.create_engine(url, **kwargs)


def get_engine() -> Engine:
    """Return the engine for the configured case store."""
    settings = get_settings()
    return engine_for(settings.resolved_database_url(), settings.database_schema)


@contextmanager
def unit_of_work() -> Iterator[Session]:
    """Open a session in one transaction; commit if the block succeeds, roll back if it raises."""
    with Session(get_engine(), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def read_only() -> Iterator[Session]:
    """Open a session for reads; nothing is committed."""
    engine = get_engine().execution_options(**{_READ_ONLY: True})
    with Session(engine, expire_on_commit=False) as session:
        yield session
        # closing detaches the loaded rows as they are (a rollback would expire them first)


def is_postgres(session: Session) -> bool:
    """Tell whether the session talks to PostgreSQL (row locks available)."""
    bind = session.get_bind()
    return bind.dialect.name == "postgresql"
