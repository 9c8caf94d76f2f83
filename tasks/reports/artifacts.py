"""Markdown artifacts published through Prefect's API, from inside a run or outside one, and the
quick way a command publishes one: one attempt, no retries (tasks/reports/case_view.py)."""

from __future__ import annotations

import functools
import ssl
import uuid
from typing import Any


def markdown_artifact(
    key: str, markdown: str, description: str, *, quick: bool = False
) -> uuid.UUID:
    """Create a markdown artifact: the run's own inside a run, else straight through the API.

    Prefect deprecates `create_markdown_artifact` outside a flow or task run (a FutureWarning on
    every command that publishes); its client's `create_artifact` is the API for that case.
    """
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() is not None or TaskRunContext.get() is not None:
        from prefect.artifacts import create_markdown_artifact

        made = create_markdown_artifact(key=key, markdown=markdown, description=description)
        return made if isinstance(made, uuid.UUID) else uuid.UUID(str(made))
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactCreate

    artifact = ArtifactCreate(type="markdown", key=key, description=description, data=markdown)
    settings: dict[str, Any] | None = None
    if quick:  # no connection retries either (the client's default transport retries 3 times)
        tls = _tls_context()
        settings = {"verify": tls, "transport": httpx.HTTPTransport(retries=0, verify=tls)}
    with get_client(sync_client=True, httpx_settings=settings) as client:
        return client.create_artifact(artifact=artifact).id


# One attempt, soon given up: the person who made the change is waiting for the answer, and a
# server that is down would otherwise cost them the client's retries with backoff. Prefect's
# settings with these two changed, made once per settings in force (a copy costs 0.1 s of CPU,
# and a ledger of 30 workers republishes 60 times).
_QUICK: list[tuple[Any, Any]] = []  # (the settings in force, their quick copy)


def quick_settings() -> Any:
    """Return a settings context for Prefect's current settings, but without retries."""
    from prefect.context import SettingsContext, get_settings_context
    from prefect.settings import PREFECT_API_REQUEST_TIMEOUT, PREFECT_CLIENT_MAX_RETRIES

    context = get_settings_context()
    if not _QUICK or _QUICK[0][0] is not context.settings:
        quick = context.settings.copy_with_update(
            updates={PREFECT_CLIENT_MAX_RETRIES: 0, PREFECT_API_REQUEST_TIMEOUT: 10.0}
        )
        _QUICK[:] = [(context.settings, quick)]
    return SettingsContext(profile=context.profile, settings=_QUICK[0][1])


@functools.cache
def _tls(insecure: bool, cafile: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cafile)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _tls_context() -> ssl.SSLContext:
    """Return the TLS context Prefect's client would make for the current settings, made once:
    making one reads the CA bundle, 25 ms of CPU, and each client and transport made one."""
    import certifi
    from prefect.settings import PREFECT_API_SSL_CERT_FILE, PREFECT_API_TLS_INSECURE_SKIP_VERIFY

    insecure = bool(PREFECT_API_TLS_INSECURE_SKIP_VERIFY.value())
    cafile = None if insecure else PREFECT_API_SSL_CERT_FILE.value() or certifi.where()
    return _tls(insecure, cafile)
