"""A reporter's way in and back, end to end: the public page, the session's Prefect server, the
case team's commands and the follow-up page, in headless Chromium.

The page is the web app built as in production (`create_app(start_cases=True)`), served by uvicorn
in a thread on 127.0.0.1 against the session's case store and Prefect server: a filed report
starts its case's run. The case lead acknowledges and answers with `remedy reporter`, the reporter
reads and answers with the receipt code, step 1 ends on an unsubstantiated verdict, and the
follow-up page says the report is closed, and why.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from demo.scripted import ScriptedStakeholders
from flows.local.stack import free_port
from flows.web.app import create_app
from models.enums import CaseState, DecisionKind
from tests.conftest import _clear_caches, require
from tests.e2e.conftest import E2E
from tests.e2e.helpers import case_runs, serving, wait_for
from tests.e2e.test_approval_browser import CHROMIUM, CHROMIUM_ARGS
from tests.e2e.test_report_pages import code_on, fill_report, open_code, submit
from tests.integration.test_cli_actor import map_me
from tests.integration.test_intake import run_cli
from tests.integration.test_report_page import case_of

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

UNSUBSTANTIATED = {
    "outcome": "unsubstantiated",
    "reason": "Site visit and payroll records: no sign of the reported practices.",
}
NOTE = "Nous avons visité le site en juin et parlé aux travailleurs."


@pytest.fixture
def public_page(live: E2E, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The public pages under uvicorn in a thread, starting cases on the session's server."""
    port = free_port()
    monkeypatch.setenv("REMEDY_APPROVAL_BASE_URL", f"http://127.0.0.1:{port}")
    _clear_caches()
    # served in this context: the `live` fixture's Prefect settings (server, credential)
    with serving(create_app(check_seconds=0, start_cases=True), port) as url:
        yield url


@pytest.fixture
def chromium() -> Iterator[Any]:
    require(Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def file_from_page(browser: Any, base: str) -> tuple[Any, str, str]:
    """A French browser files an anonymous report; return its tab, the receipt code, the case."""
    tab = browser.new_context(locale="fr-FR", viewport={"width": 800, "height": 1000}).new_page()
    tab.set_default_timeout(60_000)
    tab.goto(f"{base}/report")
    assert tab.locator("html").get_attribute("lang") == "fr"
    fill_report(tab, anonymous=True)
    assert submit(tab) == 200, tab.content()
    assert tab.locator("h1").inner_text() == "Votre signalement a été envoyé"
    return tab, code_on(tab), case_of(tab.content())


def test_a_french_anonymous_report_from_the_page_to_an_unsubstantiated_closure(
    public_page: str, chromium: Any, live: E2E, tmp_path: Path
) -> None:
    tab, code, ref = file_from_page(chromium, public_page)
    # the page started the case's run on the session's server
    wait_for(lambda: case_runs(ref), timeout=30, what="the case's run")

    # the case lead acknowledges and writes, from their own account
    map_me(tmp_path)
    assert run_cli("reporter", "ack", ref) == 0
    assert run_cli("reporter", "reply", ref, "--text", "Merci. Nous vérifions.") == 0

    # the reporter reads the status and the message with the receipt, and answers
    assert open_code(tab, public_page, code, "fr") == 200
    main = tab.locator("main").inner_text()
    assert "L'équipe du dossier a confirmé avoir reçu" in main
    assert "Merci. Nous vérifions." in tab.locator(".thread li.team").inner_text()
    tab.fill("#f-message", "Ils sont toujours au puits.")
    assert submit(tab, "form[action^='/follow-up/message'] button[type=submit]") == 200
    assert "Ils sont toujours au puits." in tab.locator(".thread").inner_text()

    # step 1 ends on an unsubstantiated verdict; the lead tells the reporter why
    people = ScriptedStakeholders(override_once={DecisionKind.VERIFICATION: UNSUBSTANTIATED})
    people.drive(ref, until=CaseState.CLOSING, timeout=240)
    assert run_cli("reporter", "note", ref, "--text", NOTE) == 0

    assert open_code(tab, public_page, code, "fr") == 200
    main = tab.locator("main").inner_text()
    assert "Clos" in main and "a terminé son travail" in main, main
    assert "L'équipe du dossier n'a pas pu confirmer ce que dit le signalement." in main
    assert NOTE in main
    assert UNSUBSTANTIATED["reason"] not in main  # the verifier's reasons stay with the team
