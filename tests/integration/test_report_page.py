"""The public report and follow-up pages over HTTP, with Starlette's TestClient on real stores.

The app is built with `start_cases=False` and Prefect pointed where nothing listens: a filed report
opens its case and its receipt in the case store, and no run is started (tests/e2e start runs).
What only a browser proves (no script needed, the accessibility audit) is in
tests/e2e/test_report_pages.py.
"""

from __future__ import annotations

import logging
import re
import secrets
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlmodel import select
from starlette.exceptions import StarletteDeprecationWarning

from flows.web import report as web_report
from flows.web.app import SECURITY_HEADERS, create_app
from models.tables import RemediationCase, ReporterReceipt
from tasks.context import utcnow
from tasks.reporter.staff import reply, set_note
from tasks.store.db import read_only
from tasks.web.report_form import HONEYPOT_FIELD, MAX_BODY_BYTES, MESSAGE_LIMIT
from tests.conftest import Store, _clear_caches
from tests.integration.factories import LEAD, load_sample_directory

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

NOWHERE = "http://127.0.0.1:9/api"
PAGE_LIMIT = 50 * 1024
LANGUAGES = ("en", "fr", "es", "sw")
PLANTED = "Zawadi Kabongo-Planted"  # a name in a report: never on a page but the reporter's own
CSRF = re.compile(r'name="csrf" value="([0-9]+\.[0-9a-f]+)"')
CODE = re.compile(r'<p class="code" translate="no">([A-Z2-7-]+)</p>')


@pytest.fixture
def client(store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("PREFECT_API_URL", NOWHERE)
    monkeypatch.setenv("REMEDY_APPROVAL_RATE_PER_MINUTE", "600")
    _clear_caches()
    load_sample_directory(utcnow())
    with (
        temporary_settings({PREFECT_API_URL: NOWHERE}),
        TestClient(create_app(check_seconds=0, start_cases=False)) as test_client,
    ):
        yield test_client


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no CSRF token"
    return found.group(1)


def report_form(html: str, **changes: str) -> dict[str, str]:
    """A complete anonymous report, with the page's own CSRF token and language."""
    form = {
        "csrf": csrf_of(html),
        "lang": re.search(r'<html lang="(\w+)"', html).group(1),  # type: ignore[union-attr]
        "what": f"{PLANTED} and twelve others are kept at the pit and not paid.",
        "country": "CD",
        "site": "Kamituga",
        "when": "2026-05-20",
        "who": "relative",
        "persons": "13",
        "children": "yes",
        "danger": "yes",
        "mineral": "unknown",
        "reply": "page",
        "name": "",
        "contact": "",
        HONEYPOT_FIELD: "",
    }
    form.update(changes)
    return form


def file(client: TestClient, lang: str = "fr", **changes: str) -> tuple[str, str]:
    """File a report from the page; return the receipt page and the code on it."""
    shown = client.get(f"/report?lang={lang}")
    answer = client.post("/report", data=report_form(shown.text, **changes))
    assert answer.status_code == 200, answer.text
    found = CODE.search(answer.text)
    assert found, "the receipt shows no code"
    return answer.text, found.group(1)


def open_follow_up(client: TestClient, code: str, lang: str = "fr") -> str:
    shown = client.get(f"/follow-up?lang={lang}")
    answer = client.post(
        "/follow-up", data={"csrf": csrf_of(shown.text), "lang": lang, "code": code}
    )
    assert answer.status_code == 200
    return answer.text


def case_of(receipt_page: str) -> str:
    """The case a receipt belongs to (the page never names it)."""
    found = re.search(r"R-\d{4}-[A-Z0-9]{4}-[A-Z0-9]{4}", receipt_page)
    assert found
    with read_only() as session:
        receipt = session.exec(
            select(ReporterReceipt).where(ReporterReceipt.receipt_ref == found.group(0))
        ).one()
        case = session.get(RemediationCase, receipt.case_id)
        assert case is not None
        return case.reference


def without_csrf(html: str) -> str:
    return CSRF.sub('name="csrf" value="-"', html)


def assert_light_and_scriptless(html: str) -> None:
    assert len(html.encode()) < PAGE_LIMIT
    assert "<script" not in html.lower() and " on" + "click" not in html.lower()


# --- the report form -----------------------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_report_form_in_each_language_is_light_labelled_and_hardened(
    client: TestClient, store: Store, lang: str
) -> None:
    before = store.row_counts()
    shown = client.get(f"/report?lang={lang}")
    assert shown.status_code == 200
    for name, value in SECURITY_HEADERS.items():
        assert shown.headers[name] == value
    assert f'<html lang="{lang}">' in shown.text
    assert_light_and_scriptless(shown.text)
    # every field a person fills has a label: text fields by `for`, choices inside their label
    ids = re.findall(r'<(?:input|select|textarea)[^>]* id="(f-[\w]+)"', shown.text)
    assert len(ids) >= 8
    for field_id in ids:
        assert f'<label for="{field_id}"' in shown.text, field_id
    radios = re.findall(r'<label><input type="(?:radio|checkbox)"', shown.text)
    assert len(radios) == 5 + 3 + 3 + 2 + 1
    # each other language is one link away, and showing the form stores nothing
    for other in LANGUAGES:
        assert other == lang or f'href="/report?lang={other}"' in shown.text
    assert store.row_counts() == before


def test_the_browsers_language_is_the_pages_unless_the_reporter_chooses(
    client: TestClient,
) -> None:
    swahili = client.get("/report", headers={"Accept-Language": "de;q=1, sw;q=0.8, fr;q=0.5"})
    assert '<html lang="sw">' in swahili.text and "Ripoti tatizo" in swahili.text
    chosen = client.get("/report?lang=es", headers={"Accept-Language": "sw"})
    assert '<html lang="es">' in chosen.text and "Denunciar un problema" in chosen.text
    unknown = client.get("/follow-up?lang=xx", headers={"Accept-Language": "fr-CD"})
    assert '<html lang="fr">' in unknown.text


def test_a_report_in_french_opens_a_case_and_shows_its_receipt_once(
    client: TestClient, store: Store
) -> None:
    before = store.row_counts()
    receipt, code = file(client, "fr")
    after = store.row_counts()
    assert after["remediation_case"] == before["remediation_case"] + 1
    assert '<html lang="fr">' in receipt and "Votre code de reçu" in receipt
    assert_light_and_scriptless(receipt)
    # the proof of filing: date and receipt reference; nothing of what was reported
    assert re.search(r"R-\d{4}-[A-Z0-9-]+", receipt) and "UTC" in receipt
    assert PLANTED not in receipt and "Kamituga" not in receipt
    assert len(code.replace("-", "")) * 5 >= 128
    # the code is shown once: no other page names it
    for path in ("/report", "/follow-up", "/report?lang=fr"):
        assert code not in client.get(path).text


def test_the_reports_content_reaches_no_log(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _, code = file(client, "sw", reply="contact", contact="planted@example.org", contact_ok="yes")
    thread = open_follow_up(client, code, "sw")
    client.post(
        "/follow-up/message",
        data={"csrf": csrf_of(thread), "lang": "sw", "code": code, "message": PLANTED},
    )
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    for secret in (PLANTED, "planted@example.org", code, code.replace("-", "")):
        assert secret not in logged


def test_a_report_with_problems_comes_back_in_its_language_and_stores_nothing(
    client: TestClient, store: Store
) -> None:
    before = store.row_counts()
    shown = client.get("/report?lang=fr")
    form = report_form(shown.text, what="", country="XX", when="2999-01-01", name="Amani")

    answer = client.post("/report", data=form)

    assert answer.status_code == 422
    assert store.row_counts() == before
    text = answer.text
    assert_light_and_scriptless(text)
    assert "Veuillez corriger ceci" in text
    # each problem next to its field, described by it, and linked from the summary
    for field_id, message in [
        ("what", "Répondez à cette question."),
        ("country", "Choisissez l&#39;une des réponses."),
        ("when", "Cette date est dans le futur."),
        ("contact", "Vous avez choisi de rester anonyme."),
    ]:
        assert f'<a href="#f-{field_id}">' in text
        assert re.search(rf'<span class="error" id="e-{field_id}">{message}', text), field_id
        assert re.search(rf'id="f-{field_id}"[^>]*aria-describedby="[^"]*e-{field_id}', text)
    # as typed: the reporter corrects, not retypes
    assert 'value="Kamituga"' in text and 'value="Amani"' in text
    assert 'value="relative" checked' in text


def test_a_report_the_store_cannot_take_comes_back_as_typed_to_send_again(
    client: TestClient, store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    shown = client.get("/report?lang=fr")
    form = report_form(shown.text)
    before = store.row_counts()
    monkeypatch.setenv("REMEDY_DATABASE_URL", f"sqlite:///{tmp_path}/no-such-folder/remedy.db")
    monkeypatch.delenv("REMEDY_DATABASE_SCHEMA", raising=False)
    _clear_caches()

    down = client.post("/report", data=form)

    assert down.status_code == 503 and "problème de notre côté" in down.text
    assert 'value="Kamituga"' in down.text and PLANTED in down.text  # the reporter's own text
    assert 'class="code"' not in down.text
    monkeypatch.setenv("REMEDY_DATABASE_URL", store.url)
    if store.schema:
        monkeypatch.setenv("REMEDY_DATABASE_SCHEMA", store.schema)
    _clear_caches()
    assert store.row_counts() == before
    again = client.post("/report", data=report_form(down.text))
    assert again.status_code == 200 and CODE.search(again.text)


def test_a_filled_honeypot_is_refused_and_stores_nothing(client: TestClient, store: Store) -> None:
    before = store.row_counts()
    shown = client.get("/report?lang=en")
    answer = client.post(
        "/report", data=report_form(shown.text, **{HONEYPOT_FIELD: "http://cheap.example"})
    )
    assert answer.status_code == 422 and "Leave this field empty." in answer.text
    assert store.row_counts() == before


@pytest.mark.parametrize(
    ("csrf", "headers"),
    [
        ("", {}),
        ("1.0000", {}),
        (None, {"Sec-Fetch-Site": "cross-site"}),
        (None, {"Origin": "https://elsewhere.example"}),
    ],
    ids=["no-token", "forged-token", "cross-site", "other-origin"],
)
def test_a_form_not_from_this_page_is_refused_and_stores_nothing(
    client: TestClient, store: Store, csrf: str | None, headers: dict[str, str]
) -> None:
    before = store.row_counts()
    shown = client.get("/report?lang=es")
    form = report_form(shown.text)
    if csrf is not None:
        form["csrf"] = csrf
    answer = client.post("/report", data=form, headers=headers)
    assert answer.status_code == 422 and "Esta página estuvo abierta mucho tiempo" in answer.text
    assert 'value="Kamituga"' in answer.text  # nothing typed is lost
    assert store.row_counts() == before


def test_a_form_too_large_or_not_a_form_is_refused_before_reading(
    client: TestClient, store: Store
) -> None:
    before = store.row_counts()
    shown = client.get("/report?lang=sw")
    big = report_form(shown.text, what="x" * (MAX_BODY_BYTES + 1))
    answer = client.post("/report?lang=sw", data=big)  # the form's own address names its language
    assert answer.status_code == 413 and '<html lang="sw">' in answer.text
    assert "Fomu ni ndefu mno" in answer.text
    json = client.post("/report?lang=fr", json={"what": "x"})
    assert json.status_code == 415 and "Envoyez le formulaire de la page" in json.text
    assert store.row_counts() == before


# --- the follow-up -------------------------------------------------------------------------------


def test_the_code_opens_the_status_and_the_reporter_writes(client: TestClient) -> None:
    _, code = file(client, "fr")

    thread = open_follow_up(client, code.lower().replace("-", " "), "fr")  # as typed on a phone

    assert '<html lang="fr">' in thread and "Reçu" in thread
    assert "Votre signalement est arrivé." in thread and "Pas encore de message." in thread
    assert_light_and_scriptless(thread)
    # the code travels only in form bodies: no address on the page carries it
    assert all(
        code.lower() not in url.lower() for url in re.findall(r'(?:href|action)="([^"]*)"', thread)
    )

    sent = client.post(
        "/follow-up/message",
        data={
            "csrf": csrf_of(thread),
            "lang": "fr",
            "code": code,
            "message": "Merci. Ils sont encore au puits.",
        },
    )
    assert sent.status_code == 200
    assert "Votre message a été envoyé." in sent.text
    assert "Merci. Ils sont encore au puits." in sent.text and "Vous ·" in sent.text
    assert_light_and_scriptless(sent.text)
    # and it is there when the reporter comes back
    again = open_follow_up(client, code, "es")
    assert "Merci. Ils sont encore au puits." in again and "Recibida" in again


def test_the_case_teams_answer_and_note_appear_in_the_pages_language(client: TestClient) -> None:
    receipt, code = file(client, "es")
    case_ref = case_of(receipt)
    assert case_ref not in receipt
    reply(case_ref, "Gracias. Vamos a verificarlo.", by=LEAD, now=utcnow())
    set_note(case_ref, "Visitaremos la mina en junio.", by=LEAD, now=utcnow())

    thread = open_follow_up(client, code, "es")

    assert "Equipo del caso ·" in thread and "Gracias. Vamos a verificarlo." in thread
    assert "Nota del equipo del caso" in thread and "Visitaremos la mina en junio." in thread
    assert "El equipo del caso confirmó haber recibido su denuncia el" in thread
    assert case_ref not in thread  # the reporter never sees the case's reference
    assert_light_and_scriptless(thread)


def test_a_wrong_code_and_an_unknown_one_get_the_same_page(client: TestClient) -> None:
    _, code = file(client, "en")
    last = code[-1]
    wrong = code[:-1] + ("A" if last != "A" else "B")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    unknown = "".join(c if c == "-" else secrets.choice(alphabet) for c in code)

    pages = [open_follow_up(client, typed, "en") for typed in (wrong, unknown)]

    assert without_csrf(pages[0]) == without_csrf(pages[1])
    assert "We found no report with this code." in pages[0]
    assert wrong not in pages[0] and unknown not in pages[1]  # nothing typed is echoed back
    # writing with them is the same page again, and nothing is sent
    shown = client.get("/follow-up?lang=en")
    for typed in (wrong, unknown):
        answer = client.post(
            "/follow-up/message",
            data={"csrf": csrf_of(shown.text), "lang": "en", "code": typed, "message": "hi"},
        )
        assert without_csrf(answer.text) == without_csrf(pages[0])


def test_a_message_with_a_problem_keeps_the_draft(client: TestClient) -> None:
    _, code = file(client, "en")
    thread = open_follow_up(client, code, "en")
    long = "y" * (MESSAGE_LIMIT + 1)
    for data, problem in [
        ({"message": long}, "at most 5000 characters"),
        ({"message": "stale", "csrf": "1.00"}, "This page was open for a long time"),
    ]:
        form = {"csrf": csrf_of(thread), "lang": "en", "code": code, **data}
        answer = client.post("/follow-up/message", data=form)
        assert answer.status_code == 422 and problem in answer.text
        assert f">{data['message']}</textarea>" in answer.text
        assert "No messages yet." in answer.text  # nothing was sent


def test_switching_language_on_the_thread_keeps_the_code_out_of_the_address(
    client: TestClient,
) -> None:
    _, code = file(client, "en")
    thread = open_follow_up(client, code, "en")
    answer = client.post("/follow-up", data={"csrf": csrf_of(thread), "code": code, "lang": "sw"})
    assert '<html lang="sw">' in answer.text and "Imepokelewa" in answer.text


# --- abuse ---------------------------------------------------------------------------------------


def test_posts_beyond_the_budget_get_429_and_store_nothing(
    client: TestClient, store: Store
) -> None:
    shown = client.get("/report?lang=fr")
    form = report_form(shown.text, what="")  # a refused report: each post counts all the same
    for _ in range(web_report.POST_BURST):
        assert client.post("/report", data=form).status_code == 422
    before = store.row_counts()

    answer = client.post("/report?lang=fr", data=report_form(shown.text))

    assert answer.status_code == 429 and int(answer.headers["Retry-After"]) >= 1
    assert "Trop de demandes" in answer.text and '<html lang="fr">' in answer.text
    for name, value in SECURITY_HEADERS.items():
        assert answer.headers[name] == value
    assert client.post("/follow-up", data={"code": "x"}).status_code == 429
    assert store.row_counts() == before
    assert client.get("/report").status_code == 200  # reading the form is a budget of its own


def test_pages_beyond_the_budget_get_429(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMEDY_APPROVAL_RATE_PER_MINUTE", "3")
    _clear_caches()
    app = create_app(check_seconds=0, start_cases=False)
    with TestClient(app) as test_client, TestClient(app, client=("10.1.2.3", 5)) as other:
        answers = [test_client.get("/follow-up").status_code for _ in range(4)]
        assert answers == [200, 200, 200, 429]
        assert other.get("/report").status_code == 200  # another address has its own budget
