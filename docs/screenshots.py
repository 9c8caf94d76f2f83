"""Take the README's screenshots of the Prefect UI with the system Chromium (docs/*.png).

    .venv/bin/python docs/screenshots.py

Starts a throw-away stack under a temporary home, opens the sample case, waits for its first
decision, and photographs the run page with its Resume form open, then the case view artifact.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CHROMIUM = os.environ.get("REMEDY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main() -> None:
    """Take the screenshots into docs/."""
    home = Path(tempfile.mkdtemp(prefix="remedy-shots-"))
    os.environ["REMEDY_HOME"] = str(home)
    from flows.local.stack import free_port
    from flows.local.up import prepare_store, start_stack

    prepare_store()
    from flows.cli import main as remedy

    with contextlib.suppress(SystemExit):
        remedy(["directory", "load", str(ROOT / "examples" / "stakeholders.yaml")])
        remedy(["db", "simulation", "on"])  # the portfolio shot sweeps a week ahead
    stack = start_stack(home, free_port(), print)
    try:
        from prefect.settings import temporary_settings

        with temporary_settings(stack.prefect_settings()):
            _shoot(stack.ui_url)
    finally:
        stack.stop()


def _shoot(ui: str) -> None:
    import time

    from playwright.sync_api import sync_playwright

    from tasks.context import utcnow
    from tasks.decisions.requests import waiting_requests
    from tasks.decisions.resume import waiting_run_ready
    from tasks.intake import open_case, read_report
    from tasks.orchestration.runs import ENTRY_FLOW, start_flow

    report = read_report(ROOT / "examples" / "reports" / "tin-kivu.yaml", now=utcnow())
    ref = open_case(report, now=utcnow(), actor="screenshots").reference
    start_flow(ENTRY_FLOW, ref, idempotency_key=f"{ref}-shots", step=None)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        waiting = waiting_requests(ref)
        if waiting and waiting_run_ready(waiting[0]):
            break
        time.sleep(0.5)
    else:
        raise TimeoutError("the first decision did not come")
    run_id = waiting[0].flow_run_id
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(ui)  # the API is locked: the UI asks for the credential once
        page.get_by_placeholder("admin:pass").fill(os.environ["PREFECT_API_AUTH_STRING"])
        page.get_by_placeholder("admin:pass").press("Enter")
        page.get_by_text("Dashboard").first.wait_for()
        page.goto(f"{ui}/runs/flow-run/{run_id}")
        page.get_by_role("button", name="Resume").first.click()
        page.wait_for_timeout(1500)
        page.screenshot(path=str(ROOT / "docs" / "approve-in-prefect-ui.png"))
        page.goto(f"{ui}/artifacts/key/case-{ref.lower()}")
        page.locator("a[href*='/artifacts/artifact/']").first.click()  # the newest version
        page.wait_for_timeout(2000)
        page.screenshot(path=str(ROOT / "docs" / "case-view-artifact.png"))
        _portfolio(ui, page, ref)
        browser.close()
    print("Screenshots written to docs/")


def _portfolio(ui: str, page: object, first: str) -> None:
    """Three more cases, one of them implementing its plan; a sweep a week later; the table."""
    from datetime import timedelta

    from demo.scripted import ScriptedStakeholders
    from flows.monitor_milestones import simulated_sweep
    from models.enums import CaseState
    from tasks.context import utcnow
    from tasks.intake import open_case, read_report
    from tasks.orchestration.runs import ENTRY_FLOW, start_flow

    report = read_report(ROOT / "examples" / "reports" / "gold-madre-de-dios.json", now=utcnow())
    other = open_case(report, now=utcnow(), actor="screenshots").reference
    start_flow(ENTRY_FLOW, other, idempotency_key=f"{other}-shots", step=None)
    ScriptedStakeholders().drive(first, until=CaseState.IMPLEMENTING, timeout=600)
    simulated_sweep(now=utcnow() + timedelta(days=7))
    page.goto(f"{ui}/artifacts/key/remedy-portfolio")  # type: ignore[attr-defined]
    page.locator("a[href*='/artifacts/artifact/']").first.click()  # type: ignore[attr-defined]
    page.wait_for_timeout(2500)  # type: ignore[attr-defined]
    page.screenshot(path=str(ROOT / "docs" / "portfolio-artifact.png"))  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
