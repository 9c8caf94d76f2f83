"""The approval page's defences of a POST on real stores: its own form's CSRF token, the origin
headers browsers send, and the recipient confirming their key. A refused POST adds one audit row
and changes nothing else; an accepted check writes nothing.
"""

from __future__ import annotations

import re
import uuid

import pytest
from cryptography.fernet import Fernet

from models.enums import DecisionKind
from tasks.web.guard import check_post, csrf_token, same_origin
from tasks.web.refusals import LinkRefusedError
from tasks.web.resolve import resolve_link
from tests.conftest import Store, _clear_caches
from tests.integration.factories import LEAD, Clock, script
from tests.integration.test_web_links import (
    changed,
    decide_link,
    link_row,
    refusals,
    token_of,
    waiting_screening,
)

PAGE = "http://127.0.0.1:8686"  # REMEDY_APPROVAL_BASE_URL's default


def test_a_link_s_csrf_token_is_its_own_and_only_this_server_can_make_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    _, _, link = waiting_screening(clock)
    token = csrf_token(link.id)
    assert re.fullmatch(r"[0-9a-f]{64}", token)
    assert csrf_token(link.id) == token  # the same form, shown twice, carries the same token
    assert csrf_token(uuid.uuid4()) != token
    # another server (another key) makes another token for the same link
    monkeypatch.setenv("REMEDY_ENCRYPTION_KEY", Fernet.generate_key().decode())
    _clear_caches()
    assert csrf_token(link.id) != token


ORIGINS: list[tuple[str, str | None, str | None, bool]] = [
    ("no-headers", None, None, True),
    ("origin-null", "null", None, True),  # a form's POST under Referrer-Policy: no-referrer
    ("same-origin", PAGE, None, True),
    ("same-origin-any-case", "HTTP://127.0.0.1:8686", "Same-Origin", True),
    ("typed-address", None, "none", True),
    ("default-port", "http://127.0.0.1:8686/", "same-origin", True),
    ("other-port", "http://127.0.0.1:8687", None, False),
    ("other-scheme", "https://127.0.0.1:8686", None, False),
    ("other-host", "http://elsewhere.example", None, False),
    ("cross-site", PAGE, "cross-site", False),
    ("same-site", PAGE, "same-site", False),
    ("null-but-cross-site", "null", "cross-site", False),
    ("malformed-origin", "http://[", None, False),
    ("bad-port", "http://127.0.0.1:99999", None, False),
]


@pytest.mark.parametrize(
    ("origin", "fetch_site", "ok"), [o[1:] for o in ORIGINS], ids=[o[0] for o in ORIGINS]
)
def test_the_origin_check_follows_the_headers_browsers_send(
    origin: str | None, fetch_site: str | None, ok: bool
) -> None:
    assert same_origin(origin, fetch_site) is ok


def test_the_origin_check_compares_with_the_page_s_public_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REMEDY_APPROVAL_BASE_URL", "https://approvals.example.org/")
    _clear_caches()
    assert same_origin("https://approvals.example.org", "same-origin")
    assert same_origin("https://APPROVALS.example.org:443", None)
    assert not same_origin("http://approvals.example.org", None)
    assert not same_origin(PAGE, None)


def test_a_post_from_the_page_s_own_form_by_its_recipient_passes(store: Store) -> None:
    clock = Clock()
    case, _, link = waiting_screening(clock)
    view = resolve_link(token_of(link), now=clock.now)
    before = store.row_counts()

    for typed in (LEAD, "  Lena.Lead "):
        form = {"csrf": [csrf_token(link.id)], "stakeholder_key": [typed]}
        check_post(view, form, origin=PAGE, fetch_site="same-origin", now=clock.tick())
    check_post(
        view,
        {"csrf": [csrf_token(link.id)], "stakeholder_key": [LEAD]},
        origin=None,
        fetch_site=None,
        now=clock.tick(),
    )

    assert store.row_counts() == before and refusals(case.ref) == []


FORGED: list[tuple[str, str | None, str | None, str | None]] = [
    # (id, csrf: "own" / "other" / literal / None, Origin, Sec-Fetch-Site)
    ("no-token", None, PAGE, None),
    ("empty-token", "", PAGE, None),
    ("wrong-token", "0" * 64, PAGE, None),
    ("another-link-s-token", "other", PAGE, "same-origin"),
    ("cross-site-origin", "own", "http://elsewhere.example", None),
    ("cross-site-fetch", "own", "null", "cross-site"),
    ("same-site-fetch", "own", None, "same-site"),
]


@pytest.mark.parametrize(
    ("csrf", "origin", "fetch_site"), [f[1:] for f in FORGED], ids=[f[0] for f in FORGED]
)
def test_a_post_without_the_page_s_token_or_from_elsewhere_is_refused(
    store: Store, csrf: str | None, origin: str | None, fetch_site: str | None
) -> None:
    clock = Clock()
    case, request_id, link = waiting_screening(clock)
    view = resolve_link(token_of(link), now=clock.now)
    # the lead's link to the next decision: a real token, of another form
    assert case.submit(request_id, LEAD, script(DecisionKind.SCREENING)[1]).accepted
    other = case.prepare(DecisionKind.SAFETY)
    token = {
        "own": csrf_token(link.id),
        "other": csrf_token(decide_link(other.request_id, LEAD).id),
    }
    form = {"stakeholder_key": [LEAD]}
    if csrf is not None:
        form["csrf"] = [token.get(csrf, csrf)]
    before = store.row_counts()

    with pytest.raises(LinkRefusedError) as caught:
        check_post(view, form, origin=origin, fetch_site=fetch_site, now=clock.tick())

    error = caught.value
    assert (error.status, error.title, error.reason) == (
        403,
        "This form could not be accepted",
        "csrf",
    )
    assert changed(before, store.row_counts()) == {"audit_event": 1}
    [row] = refusals(case.ref)
    assert row.details == {"reason": "csrf", "purpose": "decide"}
    assert row.subject_id == str(link.id)
    assert link_row(link.id).used_at is None


def test_a_post_by_someone_else_is_refused_and_the_link_still_works(store: Store) -> None:
    clock = Clock()
    case, _, link = waiting_screening(clock)
    view = resolve_link(token_of(link), now=clock.now)
    before = store.row_counts()

    for typed in ("sofia.senior", "", "lena.lead2"):
        form = {"csrf": [csrf_token(link.id)], "stakeholder_key": [typed]}
        with pytest.raises(LinkRefusedError) as caught:
            check_post(view, form, origin=PAGE, fetch_site=None, now=clock.tick())
        assert (caught.value.status, caught.value.reason) == (403, "wrong-recipient")
        assert caught.value.title == "This link was sent to someone else"

    assert changed(before, store.row_counts()) == {"audit_event": 3}
    assert [r.details for r in refusals(case.ref)] == [
        {"reason": "wrong-recipient", "purpose": "decide"}
    ] * 3
    assert link_row(link.id).used_at is None
    assert resolve_link(token_of(link), now=clock.tick()) == view
