"""The approval page's HTTP layer with Starlette's TestClient on real stores, no Prefect server.

Prefect is pointed at a port where nothing listens: a request that got as far as submitting to
Prefect would fail (never start a server), so a refusal here shows it was refused before that.
These tests are about the page itself, so they run under a policy where a link decides for a
person without a passkey (`without_passkey = "link_decides"`); tests/integration/test_passkeys.py
drives the page under the shipped policy, with passkeys.
"""

from __future__ import annotations

import re
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from markupsafe import escape
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlmodel import select
from starlette.exceptions import StarletteDeprecationWarning

from flows.web.app import MAX_BODY_BYTES, SECURITY_HEADERS, create_app, page
from models.enums import DecisionKind, DecisionRequestStatus, LinkPurpose, MilestoneStatus
from models.tables import ApprovalLink, Decision, ProgressUpdate
from tasks.context import utcnow
from tasks.decisions.requests import cancel_waiting
from tasks.store.cases import get_case
from tasks.store.db import read_only, unit_of_work
from tasks.store.links import create_link
from tasks.web.actions import decision_verdict
from tasks.web.forms import decision_fields
from tasks.web.guard import csrf_token
from tasks.web.resolve import LinkView, claim_link
from tests.conftest import ROOT, Store, _clear_caches
from tests.integration.factories import (
    LEAD,
    SUPPLIER,
    Clock,
    SampleCase,
    rows,
    script,
    start_sample_case,
)
from tests.integration.test_web_links import (
    changed,
    decide_link,
    link_row,
    owned_milestone,
    refusals,
    request_row,
    token_of,
    waiting_screening,
)

with warnings.catch_warnings():
    # starlette 1.x suggests httpx2 for its test client; it works with the project's httpx
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

NOWHERE = "http://127.0.0.1:9/api"  # nothing listens there


def link_decides_policy(folder: Path) -> Path:
    """Write the shipped policy with `without_passkey = "link_decides"` (a trial installation)."""
    shipped = (ROOT / "models" / "policy.toml").read_text(encoding="utf-8")
    changed = shipped.replace(
        'without_passkey = "tell_case_lead"', 'without_passkey = "link_decides"'
    )
    assert changed != shipped, "the shipped policy no longer says without_passkey"
    path = folder / "policy-link-decides.toml"
    path.write_text(changed, encoding="utf-8")
    return path


@pytest.fixture
def client(store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[TestClient]:
    """The page's app, with Prefect pointed where nothing answers (links decide alone)."""
    monkeypatch.setenv("PREFECT_API_URL", NOWHERE)
    monkeypatch.setenv("REMEDY_POLICY_FILE", str(link_decides_policy(tmp_path)))
    _clear_caches()
    with (
        temporary_settings({PREFECT_API_URL: NOWHERE}),
        TestClient(create_app(check_seconds=0)) as test_client,
    ):
        yield test_client


def path_of(link: ApprovalLink) -> str:
    return f"/a/{token_of(link)}"


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "the page has no CSRF token"
    return found.group(1)


def assert_security_headers(headers: Mapping[str, str]) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert headers[name] == value, name


def screening_now() -> tuple[SampleCase, uuid.UUID, ApprovalLink]:
    """A case waiting for its screening now (the page reads the real clock)."""
    return waiting_screening(Clock(utcnow()))


# --- showing -------------------------------------------------------------------------------------


def test_showing_a_link_renders_its_form_with_a_csrf_token_and_security_headers(
    client: TestClient, store: Store
) -> None:
    case, _, link = screening_now()
    before = store.row_counts()

    shown = client.get(path_of(link))

    assert shown.status_code == 200
    assert_security_headers(shown.headers)
    assert "Screen the allegation" in shown.text and f"Case {case.ref}" in shown.text
    # the page asks for the key and does not print it (nor the code): not in the description either
    assert LEAD not in shown.text and "Decided by the case's case lead. Due" in shown.text
    assert csrf_of(shown.text) == csrf_token(link.id)
    for field in decision_fields(DecisionKind.SCREENING):
        assert f'name="{field.name}"' in shown.text
    assert 'name="stakeholder_key"' in shown.text
    assert 'name="approver"' not in shown.text and 'name="approval_code"' not in shown.text
    assert "one-time approval code" not in shown.text.lower().split("<form")[0]
    # showing reads only: a link scanner fetching it decides nothing
    for _ in range(3):
        assert client.get(path_of(link)).status_code == 200
    assert store.row_counts() == before and link_row(link.id).used_at is None


def test_showing_a_progress_link_renders_the_milestone(client: TestClient, store: Store) -> None:
    _, action, link = owned_milestone(Clock(utcnow()))
    shown = client.get(path_of(link))
    assert shown.status_code == 200
    assert_security_headers(shown.headers)
    assert "Report progress on milestone document-return" in shown.text
    assert action.verification_method in shown.text
    assert SUPPLIER not in shown.text  # the page asks for the key and does not print it
    assert csrf_of(shown.text) == csrf_token(link.id)


def _tampered(link: ApprovalLink) -> str:
    body, _, signature = token_of(link).partition(".")
    return f"{body}.{signature[:-1]}{'A' if signature[-1] != 'A' else 'B'}"


def _non_ascii(link: ApprovalLink) -> str:
    return quote(f"{token_of(link)[:-1]}é")


def _expired(link: ApprovalLink) -> str:
    with unit_of_work() as session:
        row = session.get(ApprovalLink, link.id)
        assert row is not None
        row.expires_at = utcnow() - timedelta(minutes=1)  # the page reads the real clock
        session.add(row)
    return token_of(link)


def _used(link: ApprovalLink) -> str:
    assert claim_link(link.id, now=utcnow())
    return token_of(link)


BAD_LINKS: dict[str, tuple[Callable[[ApprovalLink], str], int, str, str]] = {
    "tampered": (_tampered, 400, "This link is not valid", "tampered"),
    "non-ascii": (_non_ascii, 400, "This link is not valid", "tampered"),
    "garbage": (lambda _: "not-a-token", 400, "This link is not valid", "tampered"),
    "expired": (_expired, 410, "This link has expired", "expired"),
    "used": (_used, 410, "This link was used already", "replayed"),
}


@pytest.mark.parametrize("bad", BAD_LINKS.values(), ids=BAD_LINKS.keys())
def test_showing_a_bad_link_gives_its_refusal_page_and_status(
    client: TestClient, store: Store, bad: tuple[Callable[[ApprovalLink], str], int, str, str]
) -> None:
    make, status, title, reason = bad
    case, request_id, link = screening_now()
    token = make(link)
    before = store.row_counts()

    shown = client.get(f"/a/{token}")

    assert shown.status_code == status and title in shown.text
    assert 'name="csrf"' not in shown.text
    assert_security_headers(shown.headers)
    if reason == "tampered":  # junk: counted, audited once a minute per address (test_web_guard)
        assert changed(before, store.row_counts()) == {}
    else:
        assert changed(before, store.row_counts()) == {"audit_event": 1}
        assert [r.details["reason"] for r in refusals(case.ref)] == [reason]
    assert request_row(request_id).status == DecisionRequestStatus.WAITING


# --- posting -------------------------------------------------------------------------------------


FORGED: dict[str, tuple[str | None, dict[str, str]]] = {
    # csrf ("own", "other", a literal or None) and the headers a browser would send
    "no-token": (None, {}),
    "wrong-token": ("0" * 64, {}),
    "another-link-s-token": ("other", {}),
    "cross-site-origin": ("own", {"Origin": "http://elsewhere.example"}),
    "cross-site-fetch": ("own", {"Origin": "null", "Sec-Fetch-Site": "cross-site"}),
}


@pytest.mark.parametrize("forged", FORGED.values(), ids=FORGED.keys())
def test_a_post_without_the_page_s_token_or_from_another_site_is_refused_before_prefect(
    client: TestClient, store: Store, forged: tuple[str | None, dict[str, str]]
) -> None:
    csrf, headers = forged
    case, request_id, link = screening_now()
    with unit_of_work() as session:  # a second link of the lead's, to the same request
        other = create_link(
            session,
            purpose=LinkPurpose.DECIDE,
            case_id=link.case_id,
            stakeholder_id=link.stakeholder_id,
            request_id=request_id,
            now=link.created_at,
            expires_at=link.expires_at,
            code="ABCD2345",
        )
    assert client.get(path_of(other)).status_code == 200
    token = {"own": csrf_token(link.id), "other": csrf_token(other.id)}
    form = {"outcome": "accepted", "stakeholder_key": LEAD}
    if csrf is not None:
        form["csrf"] = token.get(csrf, csrf)
    before = store.row_counts()

    sent = client.post(path_of(link), data=form, headers=headers)

    assert sent.status_code == 403 and "This form could not be accepted" in sent.text
    assert_security_headers(sent.headers)
    assert changed(before, store.row_counts()) == {"audit_event": 1}
    assert [r.details for r in refusals(case.ref)] == [{"reason": "csrf", "purpose": "decide"}]
    assert link_row(link.id).used_at is None
    assert request_row(request_id).status == DecisionRequestStatus.WAITING


def test_a_post_by_someone_else_is_refused(client: TestClient, store: Store) -> None:
    case, request_id, link = screening_now()
    form = {"outcome": "rejected", "stakeholder_key": "sofia.senior", "csrf": csrf_token(link.id)}
    before = store.row_counts()

    sent = client.post(path_of(link), data=form)

    assert sent.status_code == 403 and "This link was sent to someone else" in sent.text
    assert changed(before, store.row_counts()) == {"audit_event": 1}
    assert refusals(case.ref)[0].details == {"reason": "wrong-recipient", "purpose": "decide"}
    assert link_row(link.id).used_at is None
    assert request_row(request_id).status == DecisionRequestStatus.WAITING


def test_a_form_with_problems_comes_back_as_typed_and_uses_nothing_up(
    client: TestClient, store: Store
) -> None:
    _, request_id, link = screening_now()
    typed = "<script>alert(1)</script>"
    form = {
        "outcome": "",
        "duplicate_of": "nonsense",
        "reason": typed,
        "stakeholder_key": LEAD,
        "csrf": csrf_token(link.id),
    }
    before = store.row_counts()

    sent = client.post(path_of(link), data=form)

    assert sent.status_code == 422
    assert "Nothing was submitted. Please correct:" in sent.text
    assert "outcome: is required but missing" in sent.text
    assert "duplicate_of: String should match pattern" in sent.text
    assert typed not in sent.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in sent.text
    assert 'value="nonsense"' in sent.text and f'value="{LEAD}"' in sent.text
    assert csrf_of(sent.text) == csrf_token(link.id)
    assert store.row_counts() == before and link_row(link.id).used_at is None
    assert request_row(request_id).status == DecisionRequestStatus.WAITING
    assert rows(Decision, Decision.request_id == request_id) == []


BODIES: dict[str, tuple[dict[str, str], bytes, int, str]] = {
    "oversized": (
        {"content-type": "application/x-www-form-urlencoded"},
        b"reason=" + b"x" * MAX_BODY_BYTES,
        413,
        "The form is too large",
    ),
    "too-many-fields": (
        {"content-type": "application/x-www-form-urlencoded"},
        "&".join(f"f{i}=1" for i in range(401)).encode(),
        413,
        "The form is too large",
    ),
    "not-a-form": (
        {"content-type": "application/json"},
        b'{"outcome": "accepted"}',
        415,
        "Send the page's own form",
    ),
}


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_an_oversized_or_foreign_body_is_refused(
    client: TestClient, store: Store, body: tuple[dict[str, str], bytes, int, str]
) -> None:
    headers, content, status, title = body
    _, request_id, link = screening_now()
    before = store.row_counts()

    sent = client.post(path_of(link), content=content, headers=headers)

    assert sent.status_code == status and str(escape(title)) in sent.text
    assert_security_headers(sent.headers)
    assert store.row_counts() == before and link_row(link.id).used_at is None
    assert request_row(request_id).status == DecisionRequestStatus.WAITING


def test_a_milestone_owner_reports_progress_through_the_page(
    client: TestClient, store: Store
) -> None:
    case, action, link = owned_milestone(Clock(utcnow()))
    csrf = csrf_of(client.get(path_of(link)).text)
    form = {
        "status": "done",
        "note": "Delivered to P-01 in person.",
        "evidence": "doc:receipt-17\r\ndoc:photo-3\r\n",
        "stakeholder_key": SUPPLIER,
        "csrf": csrf,
    }

    done = client.post(path_of(link), data=form)

    assert done.status_code == 200 and "Progress recorded" in done.text
    assert "Milestone <strong>document-return</strong> is now <strong>done</strong>" in done.text
    with read_only() as session:
        [update] = session.exec(
            select(ProgressUpdate).where(ProgressUpdate.idempotency_key == str(link.id))
        ).all()
    assert update.status == MilestoneStatus.DONE
    assert update.evidence_refs == ["doc:receipt-17", "doc:photo-3"]
    assert [e.details["purpose"] for e in case.audit() if e.action == "link.used"] == ["progress"]

    before = store.row_counts()
    again = client.post(path_of(link), data=form)
    assert again.status_code == 410 and "This link was used already" in again.text
    assert changed(before, store.row_counts()) == {"audit_event": 1}
    assert rows(ProgressUpdate, ProgressUpdate.action_id == action.id) == [update]


def test_a_progress_report_with_problems_comes_back_and_uses_nothing_up(
    client: TestClient, store: Store
) -> None:
    _, _, link = owned_milestone(Clock(utcnow()))
    form = {"status": "", "note": "x", "stakeholder_key": SUPPLIER, "csrf": csrf_token(link.id)}
    before = store.row_counts()

    sent = client.post(path_of(link), data=form)

    assert sent.status_code == 422 and "status: choose in progress or done" in sent.text
    assert store.row_counts() == before and link_row(link.id).used_at is None


def test_unknown_addresses_and_methods_get_a_page_with_the_security_headers(
    client: TestClient,
) -> None:
    for response in (
        client.get("/"),
        client.get("/a/"),
        client.put("/a/abc.def"),
    ):
        assert response.status_code in (404, 405)
        assert_security_headers(response.headers)
    assert client.get("/healthz").text == "ok"


# --- what the page says after a submission -------------------------------------------------------


def test_the_submitted_page_says_what_the_step_made_of_the_decision(store: Store) -> None:
    case, request_id, _ = screening_now()
    _, values = script(DecisionKind.SCREENING)
    view = LinkView(
        link_id=uuid.uuid4(),
        purpose=LinkPurpose.DECIDE,
        case_ref=case.ref,
        stakeholder_key=LEAD,
        expires_at=case.clock.now,
        title="Screen the allegation",
    )

    def shown(request: uuid.UUID) -> str:
        verdict, reason = decision_verdict(request, wait_seconds=0)
        response = page("submitted", title="Submitted", view=view, verdict=verdict, reason=reason)
        return bytes(response.body).decode()

    assert "It is still being checked." in shown(request_id)
    # a wrong code is no submission: the request waits as it was (tasks/decisions/tickets.py)
    assert not case.submit(request_id, LEAD, values, code="ZZZZ2222").accepted
    assert "It is still being checked." in shown(request_id)
    # a submission the step's rules refuse is said so, with the step's reason
    rejected = {k: v for k, v in values.items() if k != "reason"} | {"outcome": "rejected"}
    assert not case.submit(request_id, LEAD, rejected).accepted
    assert "The step did not accept it: a reason is required to reject" in shown(request_id)
    newer = case.prepare(DecisionKind.SCREENING).request_id
    assert case.submit(newer, LEAD, values).accepted
    assert "The step accepted it: the decision is recorded." in shown(newer)
    safety = case.prepare(DecisionKind.SAFETY).request_id
    with unit_of_work() as session:
        stored = get_case(session, case.ref, lock=True)
        cancel_waiting(session, stored, now=case.clock.tick(), actor="test", why="closed early")
    cancelled = shown(safety)
    assert "This decision is no longer needed." in cancelled
    assert "still being checked" not in cancelled and "accepted it" not in cancelled


# --- hardening (issue 10) ------------------------------------------------------------------------


def test_a_decision_prefect_cannot_take_gives_the_link_back(
    client: TestClient, store: Store
) -> None:
    case, request_id, link = screening_now()
    # Prefect is where nothing listens: connection refused, as when its server is down
    page_client = TestClient(client.app, raise_server_exceptions=False)
    form = {"outcome": "accepted", "stakeholder_key": LEAD, "csrf": csrf_token(link.id)}

    for _ in range(2):  # the link still works: the same form, sent again, gets the same answer
        sent = page_client.post(path_of(link), data=form)

        assert (sent.status_code, link_row(link.id).used_at) == (503, None)  # not 500, not burnt
        assert "The decision could not be submitted" in sent.text
        assert "Nothing was recorded and the link still works." in sent.text
        assert_security_headers(sent.headers)
        assert request_row(request_id).status == DecisionRequestStatus.WAITING
        assert "link.used" not in case.actions() and refusals(case.ref) == []
        assert client.get(path_of(link)).status_code == 200
    assert rows(Decision, Decision.request_id == request_id) == []


EVIL_SITE = "[Session expired - sign in](https://evil.example/login)"


def test_a_site_written_as_a_link_is_shown_as_text(client: TestClient, store: Store) -> None:
    case = start_sample_case(Clock(utcnow()), site=EVIL_SITE)
    request_id = case.prepare(DecisionKind.SCREENING).request_id

    shown = client.get(path_of(decide_link(request_id, LEAD)))

    assert shown.status_code == 200
    assert '<a href="https://evil.example' not in shown.text and "<a " not in shown.text
    assert f"Where: CD / {escape(EVIL_SITE)}; mineral: tin" in shown.text


def csp_of(headers: Mapping[str, str]) -> dict[str, str]:
    directives = (d.strip().partition(" ") for d in headers["content-security-policy"].split(";"))
    return {name: value for name, _, value in directives}


def test_the_page_may_not_be_framed_rebased_or_posted_elsewhere(
    client: TestClient, store: Store
) -> None:
    _, _, link = screening_now()
    answers = {
        "shown": client.get(path_of(link)),
        "refused": client.get("/a/not-a-token"),
        "missing": client.get("/nowhere"),
        "not-a-form": client.post(
            path_of(link), content=b"x", headers={"content-type": "application/json"}
        ),
    }
    assert [r.status_code for r in answers.values()] == [200, 400, 404, 415]
    for name, response in answers.items():
        csp = csp_of(response.headers)
        assert csp["frame-ancestors"] == "'none'", name
        assert csp["base-uri"] == "'none'", name
        assert csp["form-action"] == "'self'", name
        assert csp["default-src"] == "'none'", name
