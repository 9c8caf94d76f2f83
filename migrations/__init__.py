"""Alembic migrations of the case store; `remedy db upgrade` applies them."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config

HERE = Path(__file__).parent


def alembic_config(url: str, schema: str | None = None) -> Config:
    """Return an Alembic configuration for the case store at url."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["url"] = url
    cfg.attributes["schema"] = schema
    return cfg
