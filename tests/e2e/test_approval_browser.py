"""One full approval on the approval page in a real browser (headless system Chromium).

Under a policy where a link decides for a person without a passkey (the shipped one is run by
tests/e2e/test_passkeys_browser.py), the lead opens the link from their message, chooses the
outcome, types their key and submits; the decision is recorded in the case store and the case
moves on. The filled form is saved as a screenshot; with REMEDY_UPDATE_SCREENSHOTS=1 it replaces
docs/approval-page.png (README).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlmodel import select

from models.enums import DecisionRequestStatus
from models.tables import Decision
from tasks.store.db import read_only
from tests.conftest import ROOT, require
from tests.e2e.conftest import E2E
from tests.e2e.helpers import wait_for
from tests.e2e.test_approval_page import (  # noqa: F401 (fixtures)
    LEAD,
    page,
    page_base,
    request_row,
    screening_link,
    stakeholder,
    url_of,
)
from tests.e2e.test_robustness import waiting_kind

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

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
README_SCREENSHOT = ROOT / "docs" / "approval-page.png"


def test_one_full_approval_in_a_real_browser(
    page: str,  # noqa: F811
    live: E2E,
    examples: Path,
    tmp_path: Path,
) -> None:
    require(Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    ref, request, link = screening_link(examples, tmp_path)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 900, "height": 1100})
            tab.set_default_timeout(60_000)
            shown = tab.goto(url_of(link))
            assert shown is not None and shown.status == 200
            assert tab.locator("h1").inner_text() == "Screen the allegation"
            assert LEAD not in tab.content()  # the page asks for the key, never prints it

            tab.select_option("select[name=outcome]", "accepted")
            tab.fill("input[name=stakeholder_key]", LEAD)
            update = os.environ.get("REMEDY_UPDATE_SCREENSHOTS") == "1"
            shot = README_SCREENSHOT if update else tmp_path / "approval-page.png"
            tab.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000

            with (
                tab.expect_request(lambda r: r.method == "POST") as posted,
                tab.expect_navigation(timeout=120_000),
            ):
                tab.click("button[type=submit]")
            # under Referrer-Policy: no-referrer Chromium sends `Origin: null`; the page takes
            # it together with Sec-Fetch-Site and its CSRF token
            sent = posted.value.all_headers()
            assert sent.get("origin") in ("null", page)
            assert sent.get("sec-fetch-site") in (None, "same-origin")
            assert tab.locator("h1").inner_text() == "Submitted", tab.content()
            assert "The step checks it when it resumes" in tab.content()
        finally:
            browser.close()

    wait_for(
        lambda: request_row(request.id).status == DecisionRequestStatus.DECIDED,
        timeout=120,
        what="the screening to be recorded",
    )
    with read_only() as session:
        [decision] = session.exec(select(Decision).where(Decision.request_id == request.id)).all()
    assert decision.approver_id == stakeholder(LEAD).id and decision.outcome == "accepted"
    wait_for(lambda: waiting_kind(ref) == "safety", timeout=180, what="the case to move on")
