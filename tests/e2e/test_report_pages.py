"""The public report and follow-up pages in a real browser (headless system Chromium), with axe.

The app is served by uvicorn in a thread on 127.0.0.1 against the test's own SQLite case store,
built with `create_app(start_cases=False)`: no Prefect server runs here, so a filed report opens
its case and its receipt without starting the case's entry run (tests/e2e/test_pipeline.py covers
runs). axe-core (`axe-playwright-python`) audits every public page in each language: the form, the
form with problems, the receipt, the follow-up form (with an unknown code) and the thread with the
case team's answer, its note and the reporter's message; WCAG 2.1 A and AA, zero violations.
With REMEDY_UPDATE_SCREENSHOTS=1 the French form and thread replace docs/report-page.png and
docs/follow-up-page.png (README).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.local.stack import free_port
from flows.web import report as web_report
from flows.web.app import create_app
from tasks.context import utcnow
from tasks.reporter.staff import reply, set_note
from tests.conftest import ROOT, Store, _clear_caches, require
from tests.e2e.helpers import serving
from tests.e2e.test_approval_browser import CHROMIUM, CHROMIUM_ARGS
from tests.integration.factories import LEAD, load_sample_directory
from tests.integration.test_report_page import case_of

pytestmark = [pytest.mark.slow]

NOWHERE = "http://127.0.0.1:9/api"
LANGUAGES = ("en", "fr", "es", "sw")
WCAG_21_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
PAGE_LIMIT = 50 * 1024
CSRF = re.compile(r'name="csrf" value="[0-9]+\.[0-9a-f]+"')
SQLITE_ONLY = pytest.mark.parametrize("store", ["sqlite"], indirect=True)


@pytest.fixture
def served(store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The app under uvicorn in a thread; its address."""
    port = free_port()
    monkeypatch.setenv("PREFECT_API_URL", NOWHERE)
    monkeypatch.setenv("REMEDY_APPROVAL_BASE_URL", f"http://127.0.0.1:{port}")
    if "REMEDY_APPROVAL_RATE_PER_MINUTE" not in os.environ:
        monkeypatch.setenv("REMEDY_APPROVAL_RATE_PER_MINUTE", "600")
    _clear_caches()
    load_sample_directory(utcnow())
    app = create_app(check_seconds=0, start_cases=False)
    with temporary_settings({PREFECT_API_URL: NOWHERE}), serving(app, port) as url:
        yield url


@pytest.fixture
def many_posts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A post budget for a test that posts 4 forms per language (read when the app is built)."""
    monkeypatch.setattr(web_report, "POST_BURST", 100)


@pytest.fixture
def browser() -> Iterator[Any]:
    require(Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def audit(tab: Any, what: str) -> None:
    """Zero WCAG 2.1 AA violations on the page shown, and a light page with no script."""
    from axe_playwright_python.sync_playwright import Axe

    html = tab.content()
    assert len(html.encode()) < PAGE_LIMIT, what
    assert "<script" not in html.lower(), what
    results = Axe().run(
        tab,
        options={"runOnly": {"type": "tag", "values": WCAG_21_AA}, "resultTypes": ["violations"]},
    )
    assert results.violations_count == 0, f"{what}:\n{results.generate_report()}"


def submit(tab: Any, button: str = "main button[type=submit]") -> int:
    """Click a form's button; return the status of the page it leads to."""
    with tab.expect_navigation() as navigation:
        tab.click(button)
    response = navigation.value
    assert response is not None
    status: int = response.status
    return status


def fill_report(tab: Any, *, anonymous: bool = True) -> None:
    tab.fill("#f-what", "Zawadi and eleven others are kept at the pit at night and not paid.")
    tab.select_option("#f-country", "CD")
    tab.fill("#f-site", "Kamituga")
    tab.fill("#f-when", "2026-05-20")
    tab.check("input[name=who][value=relative]")
    tab.fill("#f-persons", "12")
    tab.check("input[name=children][value=unknown]")
    tab.check("input[name=danger][value=yes]")
    tab.select_option("#f-mineral", "gold")
    tab.check(f"input[name=reply][value={'page' if anonymous else 'contact'}]")


def code_on(tab: Any) -> str:
    code: str = tab.locator("p.code").inner_text().strip()
    assert re.fullmatch(r"[A-Z2-7]{4}(-[A-Z2-7]{4})+", code), code
    return code


def open_code(tab: Any, base: str, code: str, lang: str) -> int:
    tab.goto(f"{base}/follow-up?lang={lang}")
    tab.fill("#f-code", code)
    return submit(tab)


@SQLITE_ONLY
def test_every_public_page_in_each_language_passes_axe(
    many_posts: None, served: str, browser: Any
) -> None:
    tab = browser.new_page(viewport={"width": 360, "height": 740})  # a small phone
    tab.set_default_timeout(30_000)
    for lang in LANGUAGES:
        shown = tab.goto(f"{served}/report?lang={lang}")
        assert shown is not None and shown.status == 200
        assert tab.locator("html").get_attribute("lang") == lang
        audit(tab, f"report form ({lang})")

        assert submit(tab) == 422  # nothing answered
        assert tab.locator(".summary a").count() >= 5
        audit(tab, f"report form with problems ({lang})")

        fill_report(tab)
        assert submit(tab) == 200
        code = code_on(tab)
        audit(tab, f"receipt ({lang})")
        # the case team answers and leaves a note, as `remedy reporter reply` / `note` do
        case_ref = case_of(tab.content())
        reply(case_ref, "Thank you. We are checking it.", by=LEAD, now=utcnow())
        set_note(case_ref, "We will visit the site in June.", by=LEAD, now=utcnow())

        assert open_code(tab, served, code[:-1] + ("A" if code[-1] != "A" else "B"), lang) == 200
        assert tab.locator("#e-code").count() == 1
        audit(tab, f"follow-up form with an unknown code ({lang})")

        assert open_code(tab, served, code, lang) == 200
        tab.fill("#f-message", "They are still there. Please hurry.")
        assert submit(tab, "form[action^='/follow-up/message'] button[type=submit]") == 200
        assert tab.locator(".thread li").count() == 2
        assert tab.locator(".thread li.team").count() == 1
        audit(tab, f"follow-up with its thread and a note ({lang})")


@SQLITE_ONLY
def test_a_french_anonymous_report_from_the_page_to_its_receipt_and_follow_up(
    served: str, browser: Any, store: Store, tmp_path: Path
) -> None:
    context = browser.new_context(locale="fr-FR", viewport={"width": 800, "height": 1000})
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    update = os.environ.get("REMEDY_UPDATE_SCREENSHOTS") == "1"

    # the browser's language chooses the page's
    tab.goto(f"{served}/report")
    assert tab.locator("html").get_attribute("lang") == "fr"
    assert tab.locator("h1").inner_text() == "Signaler un problème"

    # a refused report (the honeypot filled, as a bot does) stores nothing
    before = store.row_counts()
    fill_report(tab)
    shot = ROOT / "docs" / "report-page.png" if update else tmp_path / "report-page.png"
    tab.screenshot(path=str(shot), full_page=True)
    tab.fill("#f-website", "http://cheap.example")
    assert submit(tab) == 422
    assert "Laissez ce champ vide." in tab.content()
    assert store.row_counts() == before

    # the reporter's own report: anonymous, to a case with a receipt
    tab.fill("#f-website", "")
    assert tab.input_value("#f-what").startswith("Zawadi")  # as typed
    assert submit(tab) == 200
    assert tab.locator("h1").inner_text() == "Votre signalement a été envoyé"
    code = code_on(tab)
    after = store.row_counts()
    assert after["remediation_case"] == before["remediation_case"] + 1
    assert "Zawadi" not in tab.content()

    # the case lead acknowledges and writes (as `remedy reporter reply` does)
    reply(case_of(tab.content()), "Merci. Nous vérifions.", by=LEAD, now=utcnow())

    # the follow-up with the code: received, the answer; the reporter writes back
    assert open_code(tab, served, code, "fr") == 200
    main = tab.locator("main").inner_text()
    assert "Reçu." in main and "L'équipe du dossier a confirmé avoir reçu" in main
    assert "Merci. Nous vérifions." in tab.locator(".thread li.team").inner_text()
    tab.fill("#f-message", "Merci. Ils sont toujours au puits.")
    assert submit(tab, "form[action^='/follow-up/message'] button[type=submit]") == 200
    assert "Votre message a été envoyé." in tab.content()
    assert "Merci. Ils sont toujours au puits." in tab.locator(".thread").inner_text()
    shot = ROOT / "docs" / "follow-up-page.png" if update else tmp_path / "follow-up-page.png"
    tab.screenshot(path=str(shot), full_page=True)
    assert code not in tab.url

    # a wrong code and an unknown one: the same page, byte for byte but the CSRF token
    wrong = code[:-1] + ("A" if code[-1] != "A" else "B")
    unknown = "-".join(["ABCD"] * (code.count("-") + 1))
    pages = []
    for typed in (wrong, unknown):
        assert open_code(tab, served, typed, "fr") == 200
        pages.append(CSRF.sub("csrf", tab.content()))
    assert pages[0] == pages[1]
    assert "Nous n'avons trouvé aucun signalement avec ce code." in pages[0]

    # posting on and on: 429, and nothing stored
    before = store.row_counts()
    statuses = []
    for _ in range(web_report.POST_BURST + 1):
        statuses.append(open_code(tab, served, unknown, "fr"))
        if statuses[-1] == 429:
            break
    assert statuses[-1] == 429, statuses
    assert "Trop de demandes" in tab.content()
    assert store.row_counts() == before
    context.close()
