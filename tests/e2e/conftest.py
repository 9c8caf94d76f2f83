"""One real Prefect server and one runner per test session, serving every Remedy deployment.

The server keeps its data in PostgreSQL when REMEDY_TEST_POSTGRES_URL is set (a database of this
session's own, with pg_trgm), else in SQLite. The runner and the tests share one case store.
The server is locked as `remedy up` locks it: its credential is in REMEDY_HOME/prefect-api.auth,
and the tests' clients carry it (the `live` fixture), as the runner and the page do.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from demo.catchers import ChatReceiver, MailCatcher
from flows.local.credential import CLIENT_VARIABLE, ensure_credential
from flows.local.stack import LocalStack, free_port
from tests.conftest import IN_CI, PG_URL, _upgrade

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class E2E:
    stack: LocalStack
    store_url: str
    env: dict[str, str]
    backend: str
    mail: MailCatcher
    chat: ChatReceiver


def _pg_database() -> Iterator[str | None]:
    if not PG_URL:
        yield None
        return
    name = f"prefect_e2e_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(PG_URL).set(database=name)
    with sa.create_engine(url, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    try:
        yield url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            )
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        admin.dispose()


@pytest.fixture(scope="session")
def e2e(tmp_path_factory: pytest.TempPathFactory, session_key: str) -> Iterator[E2E]:
    """Start the session's Prefect server and runner (about 20 s), and stop them at the end."""
    if not PG_URL and IN_CI:
        pytest.fail("required in CI: REMEDY_TEST_POSTGRES_URL (the e2e server runs on PostgreSQL)")
    home = tmp_path_factory.mktemp("e2e")
    store = home / "remedy.db"
    store_url = f"sqlite:///{store}"
    _upgrade(store_url)
    databases = _pg_database()
    server_db = next(databases)
    mail = MailCatcher(port=free_port(), folder=home / "mail").start()
    chat = ChatReceiver(port=free_port(), log=home / "chat.jsonl").start()
    env = {
        "REMEDY_HOME": str(home / "var"),
        "REMEDY_DATABASE_URL": store_url,
        "REMEDY_ENCRYPTION_KEY": session_key,
        "REMEDY_SMTP_URL": mail.url(),
        "REMEDY_CHAT_OPS": f"json://127.0.0.1:{chat.port}/hooks/ops",
        "REMEDY_MONITOR_CRON": "0 0 1 1 *",  # no sweep fires by itself during the tests
        # the server's scheduler looks at every deployment each 5 s (60 s by default), so that the
        # test of a scheduled sweep does not wait a minute for its first run
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
        "PYTHONPATH": str(ROOT),
    }
    stack = LocalStack(
        home=home,
        port=free_port(),
        server_database_url=server_db,
        poll_seconds=1,
        extra_env=env,
        auth_string=ensure_credential(Path(env["REMEDY_HOME"])),  # where `remedy` finds it
    )
    try:
        stack.start_server()
        stack.start_runner()
        yield E2E(stack, store_url, env, "postgresql" if server_db else "sqlite", mail, chat)
    finally:
        stack.stop()
        mail.stop()
        chat.stop()
        for _ in databases:
            pass


@pytest.fixture
def live(e2e: E2E, monkeypatch: pytest.MonkeyPatch, examples: Path) -> Iterator[E2E]:
    """Point this test's process at the session's server and case store, with the credential."""
    from prefect.settings import temporary_settings

    from tests.conftest import _clear_caches

    for name, value in e2e.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PREFECT_API_URL", e2e.stack.api_url)
    assert e2e.stack.auth_string
    monkeypatch.setenv(CLIENT_VARIABLE, e2e.stack.auth_string)  # for the commands it starts
    _clear_caches()
    with temporary_settings(e2e.stack.prefect_settings()):
        from sqlmodel import select

        from models.tables import Stakeholder
        from tasks.store.db import read_only

        with read_only() as session:
            loaded = session.exec(select(Stakeholder)).first() is not None
        if not loaded:
            from tests.integration.test_intake import run_cli

            assert run_cli("directory", "load", str(examples / "stakeholders.yaml")) == 0
        yield e2e
