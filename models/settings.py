"""Remedy's settings: one pydantic-settings class, read lazily from REMEDY_* variables."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of a Remedy installation; secrets are SecretStr and never printed."""

    model_config = SettingsConfigDict(env_prefix="REMEDY_", env_file=".env", extra="ignore")

    home: Path = Field(
        default=Path("var"),
        description="Local state: the SQLite case store, the key file, the demo mail.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the case store; default: a SQLite file under `home`. "
        "PostgreSQL: postgresql+psycopg://user@host:5432/dbname",
    )
    database_schema: str | None = Field(
        default=None,
        description="PostgreSQL schema to use (search_path); default: the server's default.",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
    )
    encryption_key: SecretStr | None = Field(
        default=None,
        description="Fernet key(s) for identifying data, comma-separated; the first encrypts, "
        "all decrypt (key rotation). Default: read from `encryption_key_file`.",
    )
    encryption_key_file: Path | None = Field(
        default=None, description="File holding the Fernet key(s); default: <home>/remedy.key."
    )
    derive_key: SecretStr | None = Field(
        default=None,
        description="The secret approval codes, link signatures and audit tags derive from; it "
        "does not change when the encryption key is rotated. Default: read from "
        "`derive_key_file`, made on first use.",
    )
    derive_key_file: Path | None = Field(
        default=None, description="File holding the derivation secret; default: <home>/derive.key."
    )
    policy_file: Path | None = Field(
        default=None, description="Operator's policy file (TOML); default: the shipped policy."
    )
    plan_templates_file: Path | None = Field(
        default=None, description="Operator's plan templates (TOML); default: the shipped ones."
    )
    approval_base_url: str = Field(
        # a host name, not an IP: passkeys are bound to one (the page listens on 127.0.0.1)
        default="http://localhost:8686",
        description="Address of the approval page as stakeholders reach it (used in links); "
        "https, or http on this machine only (localhost, 127.0.0.1, ::1). Passkeys need a host "
        "name (localhost, or the proxy's), not an IP address.",
    )
    approval_host: str = Field(default="127.0.0.1", description="Where the approval page listens.")
    approval_port: int = Field(default=8686, ge=1, le=65535)
    approval_rate_per_minute: int = Field(
        default=30,
        ge=1,
        le=6000,
        description="Requests one client address may make to the approval page's links per "
        "minute; beyond it the page answers 429 (IPv6 addresses count per /64 network).",
    )
    approval_trusted_proxies: str = Field(
        default="",
        description="Reverse proxies in front of the approval page (addresses or networks, "
        "comma-separated) whose X-Forwarded-For names the client; default none: the peer is.",
    )
    progress_link_days: int = Field(
        default=14, ge=1, le=90, description="How long a milestone owner's progress link lives."
    )
    smtp_url: SecretStr | None = Field(
        default=None,
        description="apprise e-mail URL without recipient, e.g. "
        "mailtos://user:pass@smtp.example.org:587?from=remedy@example.org (a credential).",
    )
    monitor_cron: str = Field(
        default="0 * * * *", description="When monitor-milestones sweeps (cron, UTC): hourly."
    )
    audit_checkpoint_hours: int = Field(
        default=24,
        ge=1,
        le=24 * 31,
        description="How often the monitoring sweep signs a checkpoint of every audit chain "
        "(besides every case closure): daily by default (docs/security.md).",
    )
    delivery_drain_seconds: int = Field(
        default=60, ge=5, le=3600, description="How often deliver-notifications drains the outbox."
    )
    delivery_lease_seconds: int = Field(
        default=120,
        ge=1,
        le=300,
        description="How long a drain holds the messages it is sending. One held by a process "
        "that died is sent by the first drain after the lease runs out: within the lease plus "
        "`delivery_drain_seconds` (three minutes by default).",
    )
    delivery_max_attempts: int = Field(default=8, ge=1, le=50)
    delivery_backoff_seconds: float = Field(default=30.0, gt=0, le=3600)
    runner_limit: int = Field(
        default=8, ge=1, le=200, description="Most step runs executing at once in one runner."
    )
    fork_pickups: bool = Field(
        default=True,
        description="Start each flow run of the runner or a worker as a fork of a process that "
        "imported Prefect and the steps once (flows/prefork.py); false: a fresh interpreter at "
        "every pickup, as Prefect does.",
    )
    routing_file: Path | None = Field(
        default=None, description="Operator's notification routing (TOML); default: shipped."
    )
    locales_dir: Path | None = Field(
        default=None, description="Translation catalogs (<locale>.toml); default: shipped."
    )
    timezone: str = Field(default="UTC", description="Time zone used to display dates.")

    @field_validator("database_url")
    @classmethod
    def _no_blank_url(cls, v: str | None) -> str | None:
        return v or None

    @field_validator("approval_trusted_proxies")
    @classmethod
    def _proxy_networks(cls, v: str) -> str:
        for entry in filter(None, (e.strip() for e in v.split(","))):
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an address or network (e.g. 127.0.0.1 or 10.0.0.0/8)"
                ) from None
        return v

    @field_validator("approval_base_url")
    @classmethod
    def _https_off_loopback(cls, v: str) -> str:
        # the links carry single-use tokens and the page a CSRF token: plain http only where the
        # traffic never leaves the machine
        parts = urlsplit(v)
        if parts.scheme == "https" and parts.hostname:
            return v
        if parts.scheme == "http" and _is_loopback(parts.hostname or ""):
            return v
        raise ValueError(
            "REMEDY_APPROVAL_BASE_URL must use https, e.g. https://approvals.example.org: its "
            "links carry single-use tokens; plain http is accepted only on this machine "
            "(127.0.0.1, ::1 or localhost)"
        )

    def resolved_database_url(self) -> str:
        """Return the case-store URL, defaulting to the SQLite file under home."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'remedy.db').resolve()}"

    def resolved_key_file(self) -> Path:
        """Return the path of the key file."""
        return self.encryption_key_file or self.home / "remedy.key"

    def resolved_derive_key_file(self) -> Path:
        """Return the path of the derivation secret's file."""
        return self.derive_key_file or self.home / "derive.key"


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the settings, read from the environment on first use."""
    return Settings()
