"""`python -m flows.local.sqlite_server server start ...`: Prefect's server, SQLite writers in turn.

The embedded default's Prefect server keeps its data in SQLite. Prefect opens most transactions
there as DEFERRED: they read first and take the write lock at their first write, and if another
connection committed meanwhile SQLite refuses at once ("database is locked", answered as HTTP 503)
instead of waiting, whatever the busy timeout. Five cases moving at once met it about ten times
(bench/README.md, `sqlite-load`). Prefect already opens its deployment-status updates with the
write lock for this very reason (`with_for_update=True` in prefect.server.models.deployments);
here every transaction does, so writers queue behind the busy timeout (60 s) instead of failing,
and reads outside transactions still run beside them (WAL).

The configuration reaches Prefect through `set_database_config`, its hook for a database
configuration of one's own; the rest is Prefect's command line unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

from prefect.server.database.configurations import AioSqliteConfiguration
from sqlalchemy.ext.asyncio import AsyncSession, AsyncSessionTransaction


class ImmediateSqliteConfiguration(AioSqliteConfiguration):
    """Prefect's SQLite configuration, but every transaction begins with the write lock."""

    @asynccontextmanager
    async def begin_transaction(
        self, session: AsyncSession, with_for_update: bool = False
    ) -> AsyncGenerator[AsyncSessionTransaction, None]:
        async with super().begin_transaction(session, with_for_update=True) as transaction:
            yield transaction


def main() -> None:
    """Run Prefect's command line (it reads sys.argv) with the SQLite configuration above."""
    from prefect.cli import app
    from prefect.server.database.dependencies import set_database_config
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL

    url = PREFECT_API_DATABASE_CONNECTION_URL.value()
    if url and url.startswith("sqlite"):
        set_database_config(ImmediateSqliteConfiguration(connection_url=url))
    app()


if __name__ == "__main__":
    main()
