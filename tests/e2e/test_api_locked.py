"""The session's Prefect server runs locked, as `remedy up` and `make demo` run it.

Tried as someone who can reach the API but does not hold the credential under REMEDY_HOME: no
run, run input or Secret block can be read, no run resumed, no deployment started, no event
stream opened; a page on another origin gets no CORS grant; state-changing requests need
Prefect's CSRF token. With the credential (the runner, the approval page, the `remedy` command
in another shell, the Prefect UI after its login prompt) everything works.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType

from tests.conftest import ROOT, require
from tests.e2e.conftest import E2E
from tests.e2e.helpers import open_case, wait_for
from tests.e2e.test_robustness import waiting_kind

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

EVIL = "https://evil.example"
REFUSED = {401, 403}  # a POST without the credential meets the CSRF check (403) or auth (401)
CHROMIUM = os.environ.get("REMEDY_CHROMIUM", "/usr/bin/chromium")


def _credential(e2e: E2E) -> str:
    """Read the credential where `remedy` commands in another shell find it."""
    path = Path(e2e.env["REMEDY_HOME"]) / "prefect-api.auth"
    assert path.exists(), "the stack left no API credential under REMEDY_HOME"
    return path.read_text().strip()


def _anonymous(e2e: E2E, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=e2e.stack.api_url, headers=headers, timeout=30)


def _basic(auth: str) -> str:
    return "Basic " + base64.b64encode(auth.encode()).decode()


def _shell_env(e2e: E2E, **changes: str) -> dict[str, str]:
    """The environment of a fresh shell: the API's address but no credential in it."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_AUTH_STRING"}
    return env | e2e.env | {"PREFECT_API_URL": e2e.stack.api_url} | changes


def _remedy(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *argv],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_credential_file_is_the_owners_alone(live: E2E) -> None:
    path = Path(live.env["REMEDY_HOME"]) / "prefect-api.auth"
    assert path.exists(), "the stack left no API credential under REMEDY_HOME"
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.stat().st_uid == os.getuid()
    user, _, token = path.read_text().strip().partition(":")
    assert user == "remedy" and len(token) >= 32


def test_a_remedy_command_in_another_shell_finds_the_credential(
    live: E2E, examples: Path, tmp_path: Path
) -> None:
    ref = open_case(examples, tmp_path, start=False)
    elsewhere = _remedy(_shell_env(live, REMEDY_HOME=str(tmp_path / "elsewhere")), "start", ref)
    assert elsewhere.returncode != 0, "a shell without the credential started a run"
    assert "401 Unauthorized" in elsewhere.stderr, elsewhere.stderr  # a clear line, ...
    assert "Traceback" not in elsewhere.stderr, elsewhere.stderr  # ... not a stack trace
    started = _remedy(_shell_env(live), "start", ref)
    assert started.returncode == 0, started.stderr[-2000:]
    credential = _credential(live)
    assert credential not in elsewhere.stdout + elsewhere.stderr + started.stdout + started.stderr
    # the runner, holding it too, ran the step up to its first decision
    wait_for(lambda: waiting_kind(ref) == "screening", what="screening to wait")


def test_a_waiting_run_cannot_be_read_or_resumed_without_the_credential(
    live: E2E, examples: Path, tmp_path: Path
) -> None:
    ref = open_case(examples, tmp_path)
    wait_for(lambda: waiting_kind(ref) == "screening", what="screening to wait")
    from tasks.decisions.requests import waiting_requests

    [request] = waiting_requests(ref)
    run_id = request.flow_run_id
    with get_client(sync_client=True) as client:
        deployment_id = client.read_flow_run(run_id).deployment_id
    assert deployment_id is not None

    for anon in (_anonymous(live), _anonymous(live, Authorization=_basic("remedy:wrong"))):
        with anon:
            assert anon.get(f"/flow_runs/{run_id}").status_code == 401
            assert anon.get(f"/flow_runs/{run_id}/input/x").status_code == 401
            assert anon.get(f"/flow_runs/{run_id}/graph-v2").status_code == 401
            assert anon.post("/flow_runs/filter", json={}).status_code in REFUSED
            assert anon.post(f"/flow_runs/{run_id}/input/filter", json={}).status_code in REFUSED
            forged = {"Prefect-Csrf-Token": "x", "Prefect-Csrf-Client": "y"}
            resume = anon.post(
                f"/flow_runs/{run_id}/resume",
                json={"run_input": {"approver": "lena.lead", "outcome": "accepted"}},
                headers=forged,
            )
            assert resume.status_code in REFUSED
            create = anon.post(f"/deployments/{deployment_id}/create_flow_run", json={})
            assert create.status_code in REFUSED
            assert anon.get("/csrf-token", params={"client": "c"}).status_code == 401
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
    assert state is not None and state.type == StateType.PAUSED, "the run was moved"
    assert waiting_kind(ref) == "screening"


def test_secret_blocks_are_not_readable_without_the_credential(live: E2E) -> None:
    from prefect.blocks.system import Secret

    value = f"json://127.0.0.1/{uuid.uuid4().hex}"
    name = f"locked-{uuid.uuid4().hex[:8]}"
    block_id = Secret(value=value).save(name)
    try:
        with _anonymous(live) as anon:
            one = anon.get(f"/block_documents/{block_id}", params={"include_secrets": "true"})
            assert one.status_code == 401 and value not in one.text
            many = anon.post("/block_documents/filter", json={"include_secrets": True})
            assert many.status_code in REFUSED and value not in many.text
        with live.stack.http() as api:
            shown = api.get(f"/block_documents/{block_id}", params={"include_secrets": "true"})
            assert shown.status_code == 200 and value in shown.text  # the check can fail
    finally:
        with get_client(sync_client=True) as client:
            client.delete_block_document(block_id)


def test_a_page_on_another_origin_gets_no_cors_grant(live: E2E) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    with _anonymous(live) as anon:
        evil = anon.options("/flow_runs/filter", headers={"Origin": EVIL, **preflight})
        assert "access-control-allow-origin" not in evil.headers
        simple = anon.get("/health", headers={"Origin": EVIL})
        assert simple.status_code == 200  # health stays open for probes ...
        assert "access-control-allow-origin" not in simple.headers  # ... but not to other sites
        own = anon.options("/flow_runs/filter", headers={"Origin": live.stack.ui_url, **preflight})
        assert own.headers.get("access-control-allow-origin") == live.stack.ui_url
    with live.stack.http() as api:
        held = api.post("/flow_runs/filter", json={"limit": 1}, headers={"Origin": EVIL})
        assert held.status_code == 200
        assert "access-control-allow-origin" not in held.headers


def test_state_changing_requests_need_the_csrf_token(live: E2E) -> None:
    settings = httpx.get(f"{live.stack.ui_url}/ui-settings", timeout=30).json()
    assert settings["auth"] == "BASIC" and settings["csrf_enabled"] is True
    with _anonymous(live, Authorization=_basic(_credential(live))) as held:
        assert held.get("/flow_runs/filter").status_code in (404, 405)  # filters are POSTs
        without = held.post("/flow_runs/filter", json={"limit": 1})
        assert without.status_code == 403
    with live.stack.http() as api:
        assert api.post("/flow_runs/filter", json={"limit": 1}).status_code == 200


def test_the_event_stream_needs_the_credential(live: E2E) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect
    from websockets.typing import Subprotocol

    url = live.stack.api_url.replace("http://", "ws://", 1) + "/events/out"
    with connect(url, subprotocols=[Subprotocol("prefect")], open_timeout=30) as ws:
        ws.send(json.dumps({"type": "auth", "token": None}))
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=30)
    with connect(url, subprotocols=[Subprotocol("prefect")], open_timeout=30) as ws:
        ws.send(json.dumps({"type": "auth", "token": _credential(live)}))
        assert json.loads(ws.recv(timeout=30)) == {"type": "auth_success"}


def test_the_prefect_ui_asks_for_the_credential_and_then_works(live: E2E, tmp_path: Path) -> None:
    require(Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    from tests.e2e.test_approval_browser import CHROMIUM_ARGS

    calls: list[tuple[int, str, str]] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page()
            tab.on(
                "response",
                lambda r: (
                    calls.append((r.status, r.request.method, r.url)) if "/api/" in r.url else None
                ),
            )
            tab.goto(live.stack.ui_url, wait_until="networkidle")
            login = tab.get_by_placeholder("admin:pass")
            login.wait_for(timeout=30_000)  # the UI asks before it shows anything
            assert calls and not [c for c in calls if c[0] < 400], calls  # nothing answered yet
            login.fill(_credential(live))
            login.press("Enter")
            tab.get_by_text("Deployments").first.wait_for(timeout=30_000)
            calls.clear()
            tab.get_by_text("Deployments").first.click()
            tab.get_by_text("remediation-case").first.wait_for(timeout=30_000)
            tab.screenshot(path=str(tmp_path / "prefect-ui-deployments.png"))
        finally:
            browser.close()
    posts = [c for c in calls if c[1] == "POST"]
    assert posts and all(c[0] == 200 for c in posts), posts  # CSRF token fetched and sent
