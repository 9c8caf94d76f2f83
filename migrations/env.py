"""Alembic environment: migrates the case store named by the Remedy settings."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import models.security
import models.tables  # noqa: F401  (registers every table on SQLModel.metadata)
from models.settings import get_settings
from tasks.store.db import engine_for

config = context.config
url = config.attributes.get("url") or get_settings().resolved_database_url()
schema = config.attributes.get("schema", get_settings().database_schema)
target_metadata = SQLModel.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = engine_for(url, schema)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
