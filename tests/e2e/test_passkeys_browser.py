"""Passkeys on the approval page, in headless Chromium with a virtual authenticator (CDP WebAuthn).

The page runs as its own process under the shipped policy (every decision needs the approver's
passkey; a person without one waits for the case lead) at http://localhost:PORT: a passkey needs
a secure context and a domain for its relying party, and Chromium treats localhost as secure.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from flows.local.stack import free_port
from models.enums import DecisionRequestStatus
from models.tables import Decision
from tasks.store.db import read_only
from tests.conftest import _clear_caches, require
from tests.e2e.conftest import E2E
from tests.e2e.helpers import wait_for
from tests.e2e.test_approval_page import (
    LEAD,
    link_row,
    request_row,
    row_counts,
    screening_link,
    url_of,
)

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


@pytest.fixture(scope="module")
def localhost_page(e2e: E2E) -> Iterator[str]:
    """Start the approval page for this module, addressed as http://localhost:PORT."""
    port = free_port()
    base = f"http://localhost:{port}"
    saved = dict(e2e.stack.extra_env)
    e2e.stack.extra_env["REMEDY_APPROVAL_BASE_URL"] = base  # the page's own origin and rp id
    try:
        e2e.stack.start_approval_page(port=port)
    finally:
        e2e.stack.extra_env.clear()
        e2e.stack.extra_env.update(saved)
    yield base
    e2e.stack.stop("approval-page")


@pytest.fixture
def page(live: E2E, localhost_page: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Make links built in this test point at the running page; return its address."""
    monkeypatch.setenv("REMEDY_APPROVAL_BASE_URL", localhost_page)
    _clear_caches()
    return localhost_page


@pytest.fixture
def chromium() -> Iterator[object]:
    require(Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def decided(request_id: object) -> bool:
    return request_row(request_id).status == DecisionRequestStatus.DECIDED  # type: ignore[arg-type]


def test_a_forwarded_link_cannot_decide_in_a_fresh_browser(
    page: str, live: E2E, examples: Path, tmp_path: Path, chromium: object
) -> None:
    """Whoever holds a forwarded link (and knows or guesses the key) cannot decide with it."""
    from playwright.sync_api import Browser

    assert isinstance(chromium, Browser)
    _, request, link = screening_link(examples, tmp_path)
    before = row_counts(live)
    context = chromium.new_context()
    tab = context.new_page()
    tab.set_default_timeout(60_000)
    shown = tab.goto(url_of(link))
    assert shown is not None and shown.status in (200, 403)  # 403: it waits for a passkey
    assert LEAD not in tab.content(), "the page hints at the key it then asks for"
    if tab.locator("select[name=outcome]").count():
        tab.select_option("select[name=outcome]", "accepted")
        tab.fill("input[name=stakeholder_key]", LEAD)  # a directory key is easy to guess
        tab.click("button[type=submit]")
        tab.wait_for_timeout(5_000)
    assert tab.locator("h1").inner_text() != "Submitted", tab.content()
    context.close()

    assert link_row(link.id).used_at is None
    assert request_row(request.id).status == DecisionRequestStatus.WAITING
    with read_only() as session:
        assert session.exec(select(Decision).where(Decision.request_id == request.id)).all() == []
    after = row_counts(live)
    for table in ("decision", "submission_ticket", "approval_link"):
        assert after[table] == before[table], table


AUTHENTICATOR = {
    "protocol": "ctap2",
    "transport": "internal",
    "hasResidentKey": True,
    "hasUserVerification": True,
    "isUserVerified": True,
}


def with_authenticator(context: object) -> object:
    """Open a tab whose browser has a platform authenticator (CDP WebAuthn); return the tab."""
    from playwright.sync_api import BrowserContext

    assert isinstance(context, BrowserContext)
    tab = context.new_page()
    tab.set_default_timeout(60_000)
    cdp = context.new_cdp_session(tab)
    cdp.send("WebAuthn.enable")
    cdp.send("WebAuthn.addVirtualAuthenticator", {"options": AUTHENTICATOR})
    return tab


def invitation_received(live: E2E, ref: str, since: int) -> tuple[str, str]:
    """Deliver the invitation and read it as lena would: the link by e-mail, the code by chat."""
    from tasks.context import utcnow
    from tasks.drain import deliver_due

    def arrived() -> tuple[str, str] | None:
        deliver_due(now=utcnow(), case_ref=ref)
        token = code = None
        for message in live.mail.messages:
            if str(message["To"]) == "lena.lead@acme.example" and "passkey" in str(
                message["Subject"]
            ):
                text = message.get_body(("plain",))
                found = re.search(r"/a/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)", text.get_content())
                token = found.group(1) if found else None
        for call in live.chat.delivered()[since:]:
            found = re.search(r"add a passkey: ([A-Z0-9]{8})", call["body"])
            code = found.group(1) if found else code
        return (token, code) if token and code else None

    received: tuple[str, str] = wait_for(arrived, timeout=120, what="the invitation")
    return received


@pytest.fixture
def lena_s_passkeys_revoked_after(live: E2E) -> Iterator[None]:
    """The session's store is shared: leave lena.lead without a passkey for the other tests."""
    yield
    from tasks.actors import Operator
    from tasks.context import utcnow
    from tasks.web.enrolment import revoke

    revoke(LEAD, now=utcnow(), operator=Operator(os_user="e2e", key="sofia.senior"))


def test_a_passkey_enrolled_from_a_link_decides_and_a_fresh_browser_cannot(
    page: str,
    live: E2E,
    examples: Path,
    tmp_path: Path,
    chromium: object,
    lena_s_passkeys_revoked_after: None,
) -> None:
    from playwright.sync_api import Browser, Page

    from models.security import SubmissionTicket
    from tasks.actors import Operator
    from tasks.context import utcnow
    from tasks.web.enrolment import invite

    assert isinstance(chromium, Browser)
    ref, request, link = screening_link(examples, tmp_path)
    chat_before = len(live.chat.delivered())
    invite(LEAD, case_ref=ref, now=utcnow(), operator=Operator(os_user="e2e", key="sofia.senior"))
    token, code = invitation_received(live, ref, chat_before)

    # lena enrols a passkey on her device, from the e-mailed link and the chatted code
    lena = chromium.new_context()
    tab = with_authenticator(lena)
    assert isinstance(tab, Page)
    tab.goto(f"{page}/a/{token}")
    assert tab.locator("h1").inner_text() == "Add a passkey"
    tab.fill("input[name=code]", code)
    with tab.expect_navigation(timeout=120_000):
        tab.click("button[type=submit]")
    assert tab.locator("h1").inner_text() == "Passkey added", tab.content()

    # whoever holds the forwarded decision link, in another browser, cannot decide with it
    before = row_counts(live)
    other = chromium.new_context()
    thief = with_authenticator(other)  # a device of their own, without lena's passkey
    assert isinstance(thief, Page)
    thief.goto(url_of(link))
    assert LEAD not in thief.content()
    thief.select_option("select[name=outcome]", "accepted")
    thief.fill("input[name=stakeholder_key]", LEAD)
    thief.click("button[type=submit]")
    thief.wait_for_selector("#passkey-status.problems", timeout=150_000)
    assert "No passkey of yours was used" in thief.locator("#passkey-status").inner_text()
    assert thief.locator("h1").inner_text() != "Submitted"
    # nor by posting the form without the script's help
    csrf = thief.locator("input[name=csrf]").get_attribute("value")
    form = {"outcome": "accepted", "stakeholder_key": LEAD, "csrf": csrf or ""}
    forged = other.request.post(url_of(link), form=form, headers={"Origin": page})
    assert forged.status == 403 and "Your passkey was not accepted" in forged.text()
    other.close()
    assert link_row(link.id).used_at is None
    assert request_row(request.id).status == DecisionRequestStatus.WAITING
    after = row_counts(live)
    for table in ("decision", "submission_ticket", "passkey_credential"):
        assert after[table] == before[table], table

    # lena, on her device, decides with her passkey
    tab.goto(url_of(link))
    assert tab.locator("form[data-passkey=get]").count() == 1
    tab.select_option("select[name=outcome]", "accepted")
    tab.fill("input[name=stakeholder_key]", LEAD)
    with tab.expect_navigation(timeout=120_000):
        tab.click("button[type=submit]")
    assert tab.locator("h1").inner_text() == "Submitted", tab.content()
    lena.close()

    wait_for(lambda: decided(request.id), timeout=120, what="the screening to be recorded")
    with read_only() as session:
        [decision] = session.exec(select(Decision).where(Decision.request_id == request.id)).all()
        tickets = session.exec(
            select(SubmissionTicket).where(SubmissionTicket.request_id == request.id)
        ).all()
    assert decision.outcome == "accepted"
    assert {t.channel for t in tickets} == {"approval-page+passkey"}
