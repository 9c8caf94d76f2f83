"""Helpers for end-to-end tests: open a fresh sample case, read runs and artifacts from Prefect."""

from __future__ import annotations

import contextvars
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun

from tasks.orchestration.runs import (
    case_runs as case_runs,  # the e2e tests read runs as Remedy does
)
from tests.integration.test_intake import run_cli


def open_case(examples: Path, tmp_path: Path, *, start: bool = True, **changes: Any) -> str:
    """Take in a variant of the sample report (unique, so it is not a duplicate) and start it."""
    import io
    from contextlib import redirect_stdout

    report = yaml.safe_load((examples / "reports" / "tin-kivu.yaml").read_text())
    report.update(changes)
    report["description"] += f" [test {uuid.uuid4().hex[:8]}]"
    path = tmp_path / f"report-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(report))
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert run_cli("intake", str(path), "--no-start") == 0
    reference = buf.getvalue().strip().splitlines()[0]
    if start:
        assert run_cli("start", reference) == 0
    return reference


def flow_name(run: FlowRun) -> str:
    with get_client(sync_client=True) as client:
        return client.read_flow(run.flow_id).name


def wait_for(predicate: Any, timeout: float = 120.0, what: str = "condition") -> Any:
    """Poll until predicate() is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


def latest_artifact(key: str) -> str | None:
    """Return the newest markdown of an artifact key."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        rows = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    return str(rows[0].data) if rows else None


@contextmanager
def serving(app: Any, port: int) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a thread on 127.0.0.1; yield its address.

    The thread runs in a copy of the caller's context, so Prefect settings made temporary by the
    caller (a session's server and credential, or an address that answers nothing) hold there.
    """
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, access_log=False, log_level="warning")
    )
    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(server.run,), daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
