"""The approval page's defences of a POST on real stores: its own form's CSRF token, the origin
headers browsers send, and the recipient confirming their key. A refused POST adds one audit row
and changes nothing else; an accepted check writes nothing.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from prefect.settings import PREFECT_API_URL, temporary_settings
from pydantic import ValidationError
from sqlmodel import col, select
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning

from flows.local.stack import free_port, port_open
from flows.web.app import create_app
from models.enums import DecisionKind
from models.settings import Settings
from models.tables import AuditEvent
from tasks.context import utcnow
from tasks.store.audit import SYSTEM_CHAIN, verify_chain
from tasks.store.db import read_only
from tasks.web.guard import check_post, csrf_token, same_origin
from tasks.web.ratelimit import (
    WEB_CHAIN,
    JunkTally,
    RateLimiter,
    client_key,
    trusted_proxies,
)
from tasks.web.refusals import ACTOR, LinkRefusedError
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

with warnings.catch_warnings():
    # starlette 1.x suggests httpx2 for its test client; it works with the project's httpx
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

PAGE = "http://localhost:8686"  # REMEDY_APPROVAL_BASE_URL's default (a host name: passkeys)
NOWHERE = "http://127.0.0.1:9/api"  # Prefect: nothing listens there


def test_a_link_s_csrf_token_is_its_own_and_only_this_server_can_make_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    _, _, link = waiting_screening(clock)
    token = csrf_token(link.id)
    assert re.fullmatch(r"[0-9a-f]{64}", token)
    assert csrf_token(link.id) == token  # the same form, shown twice, carries the same token
    assert csrf_token(uuid.uuid4()) != token
    # another server (another derivation secret) makes another token for the same link
    monkeypatch.setenv("REMEDY_DERIVE_KEY", Fernet.generate_key().decode())
    _clear_caches()
    assert csrf_token(link.id) != token


ORIGINS: list[tuple[str, str | None, str | None, bool]] = [
    ("no-headers", None, None, True),
    ("origin-null", "null", None, True),  # a form's POST under Referrer-Policy: no-referrer
    ("same-origin", PAGE, None, True),
    ("same-origin-any-case", "HTTP://LocalHost:8686", "Same-Origin", True),
    ("typed-address", None, "none", True),
    ("default-port", "http://localhost:8686/", "same-origin", True),
    ("other-port", "http://localhost:8687", None, False),
    ("other-scheme", "https://localhost:8686", None, False),
    ("the-ip-not-the-name", "http://127.0.0.1:8686", None, False),  # another origin to a browser
    ("other-host", "http://elsewhere.example", None, False),
    ("cross-site", PAGE, "cross-site", False),
    ("same-site", PAGE, "same-site", False),
    ("null-but-cross-site", "null", "cross-site", False),
    ("malformed-origin", "http://[", None, False),
    ("bad-port", "http://localhost:99999", None, False),
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


# --- junk and the rate limit per client address (over HTTP) --------------------------------------

ATTACKER = "203.0.113.7"  # documentation addresses (RFC 5737)
APPROVER = "198.51.100.20"


@contextmanager
def page_client(app: Starlette, address: str) -> Iterator[TestClient]:
    """A browser at `address` talking to the page (Prefect pointed where nothing answers).

    Leaving the block stops the page as its server would (the lifespan's shutdown).
    """
    with (
        temporary_settings({PREFECT_API_URL: NOWHERE}),
        TestClient(app, client=(address, 50000)) as client,
    ):
        yield client


def junk_token() -> str:
    """A token of the right shape that we never issued."""
    return f"{secrets.token_urlsafe(24)}.{secrets.token_urlsafe(32)}"


def junk_events() -> list[AuditEvent]:
    with read_only() as session:
        return list(
            session.exec(
                select(AuditEvent)
                .where(AuditEvent.chain == WEB_CHAIN)
                .order_by(col(AuditEvent.seq))
            ).all()
        )


def test_junk_from_one_address_is_audited_once_with_its_count_and_then_limited(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", NOWHERE)
    limit = 30  # the default: requests per minute per client address
    before = store.row_counts()
    tokens = [junk_token() for _ in range(limit + 1)]

    with page_client(create_app(check_seconds=0), ATTACKER) as client:
        answers = [client.get(f"/a/{token}") for token in tokens[:limit]]
        assert [a.status_code for a in answers] == [400] * limit
        assert all("This link is not valid" in a.text for a in answers)
        # nothing is written per junk request: no row, no write lock
        assert store.row_counts() == before

        limited = client.get(f"/a/{tokens[limit]}")

        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert "Too many requests" in limited.text
        assert tokens[limit] not in limited.text and ATTACKER not in limited.text
        assert limited.headers["cache-control"] == "no-store"  # the page's headers, as ever
        assert store.row_counts() == before

    # the page stopped: what it counted is written, one event for the address
    assert changed(before, store.row_counts()) == {"audit_event": 1, "audit_head": 1}
    [event] = junk_events()
    assert (event.action, event.actor) == ("link.junk", ACTOR)
    assert event.subject_type is None and event.subject_id is None
    assert {k: v for k, v in event.details.items() if k != "since"} == {
        "address": ATTACKER,
        "count": limit,
        "reasons": {"tampered": limit},
        "limited": 1,
    }
    assert not any(token in json.dumps(event.details) for token in tokens)
    assert refusals(SYSTEM_CHAIN) == []


def test_a_genuine_link_still_works_from_another_address_while_one_is_limited(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", NOWHERE)
    monkeypatch.setenv("REMEDY_APPROVAL_RATE_PER_MINUTE", "5")
    _clear_caches()
    case, _, link = waiting_screening(Clock(utcnow()))  # the page reads the real clock
    app = create_app(check_seconds=0)

    with page_client(app, ATTACKER) as attacker, page_client(app, APPROVER) as approver:
        statuses = [attacker.get(f"/a/{junk_token()}").status_code for _ in range(7)]
        assert statuses == [400] * 5 + [429] * 2
        # even the attacker's copy of a real link waits (the limit is per address)
        assert attacker.get(f"/a/{token_of(link)}").status_code == 429

        shown = approver.get(f"/a/{token_of(link)}")

        # the decision's page (whether it then asks for a passkey is the policy's business)
        assert shown.status_code not in (400, 429)
        assert "Screen the allegation" in shown.text and f"Case {case.ref}" in shown.text
        assert approver.get("/healthz").status_code == 200
    assert attacker.get("/healthz").status_code == 200  # only the links are limited
    assert refusals(case.ref) == [] and link_row(link.id).used_at is None
    [event] = junk_events()
    assert event.details["address"] == ATTACKER
    assert (event.details["count"], event.details["limited"]) == (5, 3)


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", NOWHERE)
    monkeypatch.setenv("REMEDY_APPROVAL_RATE_PER_MINUTE", "2")
    monkeypatch.setenv("REMEDY_APPROVAL_TRUSTED_PROXIES", "10.0.0.0/8")
    _clear_caches()

    with page_client(create_app(check_seconds=0), "10.0.0.1") as proxy:
        statuses = {
            address: [
                proxy.get(
                    f"/a/{junk_token()}",
                    # what the client wrote itself, then what the proxy saw
                    headers={"X-Forwarded-For": f"{APPROVER}, {address}"},
                ).status_code
                for _ in range(3)
            ]
            for address in (ATTACKER, "2001:db8:1:2::7", "2001:db8:1:2::8")
        }

    assert statuses == {
        ATTACKER: [400, 400, 429],
        "2001:db8:1:2::7": [400, 400, 429],
        "2001:db8:1:2::8": [429, 429, 429],  # the same /64: the same machine's budget
    }
    assert {
        e.details["address"]: (e.details["count"], e.details["limited"]) for e in junk_events()
    } == {
        ATTACKER: (2, 1),
        "2001:db8:1:2::/64": (2, 4),
    }


CLIENTS: list[tuple[str, str | None, str | None, str, str]] = [
    # (id, peer, X-Forwarded-For, trusted proxies, the address limited and audited)
    ("peer", ATTACKER, None, "", ATTACKER),
    ("header-from-anyone-else-ignored", ATTACKER, APPROVER, "", ATTACKER),
    ("header-from-an-untrusted-peer-ignored", ATTACKER, APPROVER, "127.0.0.1", ATTACKER),
    ("behind-a-proxy", "127.0.0.1", APPROVER, "127.0.0.1", APPROVER),
    ("client-written-hops-ignored", "127.0.0.1", f"6.6.6.6, {APPROVER}", "127.0.0.1", APPROVER),
    ("two-proxies", "10.1.2.3", f"{APPROVER}, 10.9.9.9", "10.0.0.0/8", APPROVER),
    ("all-hops-trusted", "10.1.2.3", "10.4.4.4", "10.0.0.0/8", "10.4.4.4"),
    ("garbage-hop", "127.0.0.1", "not-an-address", "127.0.0.1", "127.0.0.1"),
    ("ipv6-per-64", "2001:db8:1:2:3:4:5:6", None, "", "2001:db8:1:2::/64"),
    ("ipv4-mapped", "::ffff:203.0.113.7", None, "", ATTACKER),
    ("no-peer", None, APPROVER, "127.0.0.1", "-"),
    ("not-an-address", "testclient", None, "", "testclient"),
]


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "client"),
    [c[1:] for c in CLIENTS],
    ids=[c[0] for c in CLIENTS],
)
def test_the_client_address_is_the_peer_or_what_a_trusted_proxy_saw(
    peer: str | None, forwarded: str | None, trusted: str, client: str
) -> None:
    assert client_key(peer, forwarded, trusted_proxies(trusted)) == client


def test_a_trusted_proxy_that_is_no_address_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().approval_trusted_proxies == ""  # by default the peer is the client
    assert Settings().approval_rate_per_minute == 30
    with pytest.raises(ValueError, match=r"'proxy\.example' is not an address or network"):
        trusted_proxies("127.0.0.1, proxy.example")
    monkeypatch.setenv("REMEDY_APPROVAL_TRUSTED_PROXIES", "10.0.0.0/8, proxy.example")
    with pytest.raises(ValidationError, match=r"'proxy\.example' is not an address or network"):
        Settings()  # the page does not start with it


def test_the_limit_is_a_budget_per_client_that_refills_with_time() -> None:
    limiter = RateLimiter(3)  # 3 at once, then one every 20 s

    assert [limiter.take(ATTACKER, at=0.0) for _ in range(3)] == [0.0] * 3
    assert limiter.take(ATTACKER, at=0.0) == pytest.approx(20.0)
    assert limiter.take(ATTACKER, at=10.0) == pytest.approx(10.0)  # waiting spends nothing
    assert limiter.take(APPROVER, at=10.0) == 0.0  # another client's budget is its own
    assert limiter.take(ATTACKER, at=20.0) == 0.0
    assert limiter.take(ATTACKER, at=20.0) > 0
    assert [limiter.take(ATTACKER, at=600.0) for _ in range(4)][-1] > 0  # never more than 3


def test_the_limit_forgets_the_least_recently_seen_client_first() -> None:
    limiter = RateLimiter(1, max_clients=2)
    assert limiter.take("a", at=0.0) == limiter.take("b", at=0.0) == 0.0
    assert limiter.take("a", at=0.0) > 0  # a seen last
    assert limiter.take("c", at=0.0) == 0.0  # b is forgotten, a is not
    assert limiter.take("a", at=0.0) > 0
    assert limiter.take("b", at=0.0) == 0.0


def test_junk_is_written_once_per_address_per_minute_with_its_counts(store: Store) -> None:
    tally = JunkTally()
    t0 = utcnow()
    before = store.row_counts()
    for second in range(40):
        tally.refused(ATTACKER, "tampered", now=t0 + timedelta(seconds=second))
    tally.refused(ATTACKER, "unknown-link", now=t0 + timedelta(seconds=41))
    tally.limited(ATTACKER, now=t0 + timedelta(seconds=42))
    tally.refused(APPROVER, "tampered", now=t0 + timedelta(seconds=30))

    assert not tally.due(t0 + timedelta(seconds=59))
    assert tally.flush(t0 + timedelta(seconds=59)) == 0 and store.row_counts() == before
    assert tally.due(t0 + timedelta(minutes=1))
    assert tally.flush(t0 + timedelta(minutes=1)) == 2

    assert [(e.details["address"], e.details["count"]) for e in junk_events()] == [
        (APPROVER, 1),
        (ATTACKER, 41),
    ]
    attacker = junk_events()[1]
    assert attacker.at == t0 + timedelta(minutes=1)
    assert attacker.details == {
        "address": ATTACKER,
        "count": 41,
        "reasons": {"tampered": 40, "unknown-link": 1},
        "limited": 1,
        "since": t0.isoformat(timespec="seconds"),
    }
    # nothing new, nothing written; junk after the flush opens the next minute
    assert tally.flush(t0 + timedelta(minutes=5), force=True) == 0
    tally.refused(ATTACKER, "tampered", now=t0 + timedelta(minutes=6))
    assert not tally.due(t0 + timedelta(minutes=6, seconds=59))
    assert tally.flush(t0 + timedelta(minutes=7)) == 1
    assert len(junk_events()) == 3
    with read_only() as session:
        assert verify_chain(session, WEB_CHAIN).ok


def test_junk_from_more_addresses_than_it_keeps_is_counted_together(store: Store) -> None:
    tally = JunkTally(max_clients=2)
    now = utcnow()
    for n in range(5):
        tally.refused(f"192.0.2.{n}", "tampered", now=now)
    tally.refused("192.0.2.0", "tampered", now=now)  # a kept address still counts as itself

    assert tally.flush(now, force=True) == 3
    assert {e.details["address"]: e.details["count"] for e in junk_events()} == {
        "192.0.2.0": 2,
        "192.0.2.1": 1,
        "others": 3,
    }


def test_junk_the_store_cannot_take_now_is_kept_for_the_next_flush(
    store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tally = JunkTally()
    now = utcnow()
    tally.refused(ATTACKER, "tampered", now=now)
    url = store.url
    monkeypatch.setenv("REMEDY_DATABASE_URL", f"sqlite:///{tmp_path}/missing/dir/remedy.db")
    _clear_caches()

    assert tally.flush(now + timedelta(minutes=1)) == 0

    monkeypatch.setenv("REMEDY_DATABASE_URL", url)
    _clear_caches()
    tally.refused(ATTACKER, "tampered", now=now + timedelta(minutes=2))
    assert tally.due(now + timedelta(minutes=2))  # still due: the oldest junk is older
    assert tally.flush(now + timedelta(minutes=2)) == 1
    [event] = junk_events()
    assert event.details["count"] == 2
    assert event.details["since"] == now.isoformat(timespec="seconds")


def test_the_served_page_writes_what_it_counted_when_it_stops(store: Store, tmp_path: Path) -> None:
    """`python -m flows.web.app` under uvicorn, stopped with SIGTERM as a service manager does."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PREFECT_API_URL": NOWHERE,
        "REMEDY_APPROVAL_PORT": str(port),
        "REMEDY_APPROVAL_BASE_URL": base,
        "REMEDY_APPROVAL_RATE_PER_MINUTE": "4",
    }
    log = (tmp_path / "page.log").open("wb")
    page = subprocess.Popen(
        [sys.executable, "-m", "flows.web.app"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while not port_open(port):
            assert page.poll() is None and time.monotonic() < deadline, "the page did not start"
            time.sleep(0.2)
        statuses = [httpx.get(f"{base}/a/{junk_token()}").status_code for _ in range(6)]
        assert statuses == [400] * 4 + [429] * 2
        assert junk_events() == []
    finally:
        page.send_signal(signal.SIGTERM)
        assert page.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises it, once done
        log.close()

    [event] = junk_events()
    assert event.details["address"] == "127.0.0.1"
    assert (event.details["count"], event.details["limited"]) == (4, 2)
