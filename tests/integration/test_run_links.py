"""Stable links to a waiting decision's run, on real stores with Starlette's TestClient.

A message never links a flow run: a run that crashed is replaced by the repair, and a sent message
cannot change. It links the approval page's `/r/{token}` instead, one address per decision request,
which sends the browser (303) to the run waiting on the request now, after a repair the new one, or
says plainly that the decision no longer waits. Prefect's UI is named but no API, so the page cannot
ask whether a run is alive and sends the browser on; a fake of that one question shows the rest.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings
from sqlmodel import select
from starlette.exceptions import StarletteDeprecationWarning

from flows.web.app import SECURITY_HEADERS, create_app
from models.enums import DecisionKind, DecisionRequestStatus, Locale
from models.tables import Notification
from tasks.context import utcnow
from tasks.decisions.requests import cancel_waiting
from tasks.store.cases import get_case
from tasks.store.db import read_only, unit_of_work
from tests.conftest import Store, _clear_caches
from tests.integration.factories import LEAD, Clock, SampleCase, script, start_sample_case
from tests.integration.test_web_guard import junk_events, junk_token
from tests.integration.test_web_links import request_row, token_of, waiting_screening

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

NOWHERE = "http://127.0.0.1:9/api"  # nothing listens there
UI = "http://127.0.0.1:4200"  # the Prefect UI's address in links (nothing need answer there)
PAGE = "http://localhost:8686"  # the approval page's default address in links
DEAD_RUN = "/runs/flow-run/"  # how the Prefect UI addresses one run: never in a message


@pytest.fixture
def prefect_ui(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The Prefect UI's address known to page and drain, and no API to ask about runs."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_UI_URL", UI)
    _clear_caches()
    with temporary_settings({PREFECT_API_URL: None, PREFECT_UI_URL: UI}):
        yield


@pytest.fixture
def client(store: Store, prefect_ui: None) -> Iterator[TestClient]:
    with TestClient(create_app(check_seconds=0)) as test_client:
        yield test_client


def stable_path(request_id: uuid.UUID) -> str:
    """The path of a request's stable run link, as messages carry it."""
    from tasks.store.links import run_link_url

    url = run_link_url(request_id)
    assert url.startswith(f"{PAGE}/r/")
    return url.removeprefix(PAGE)


def run_page(run_id: uuid.UUID | None) -> str:
    return f"{UI}/runs/flow-run/{run_id}"


def repair(case: SampleCase, kind: DecisionKind) -> uuid.UUID:
    """Take the step over with a new run, as the repair does: prepare_decision records it."""
    case.run_id = uuid.uuid4()
    case.prepare(kind)
    return case.run_id


def follow(client: TestClient, path: str) -> Any:
    return client.get(path, follow_redirects=False)


def assert_plain_page(response: Any, case: SampleCase, status: int, title: str) -> None:
    """A page saying where the decision stands, linking nothing and naming nothing."""
    assert response.status_code == status, response.text
    assert title in response.text
    assert "location" not in response.headers
    assert "href=" not in response.text and DEAD_RUN not in response.text
    assert case.ref not in response.text and LEAD not in response.text
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value, name


# --- messages -----------------------------------------------------------------------------------


LINKED = ("decision_requested", "decision_reminder", "decision_escalated", "decision_refused")


def decision_messages(case: SampleCase, request_id: uuid.UUID) -> list[Notification]:
    """The case's stored messages, and each other decision template's as it would be written."""
    with read_only() as session:
        stored = list(
            session.exec(select(Notification).where(Notification.case_id == case.case().id)).all()
        )
    requested = next(n for n in stored if n.template == "decision_requested")
    assert requested.context["request_id"] == str(request_id)
    assert requested.context["flow_run_id"] == str(case.run_id)  # the run it waits on, stored
    extra = {"reason": "refused", "level": 1, "outcome": "accepted", "approver": LEAD}
    others = [
        Notification(
            **(requested.model_dump() | {"template": t, "context": requested.context | extra})
        )
        for t in (*LINKED[1:], "decision_taken", "passkey_missing")
    ]
    return stored + others


def test_no_message_about_a_waiting_decision_links_a_run(store: Store, prefect_ui: None) -> None:
    from notifications.render import render
    from tasks.drain import render_context

    clock = Clock()
    case, request_id, _ = waiting_screening(clock)
    bodies = []
    for row in decision_messages(case, request_id):
        context = render_context(row, case.ref, clock.now)
        for fmt in ("text", "html", "md"):
            body = render(row.template, fmt=fmt, locale=Locale.EN, context=context).body
            assert DEAD_RUN not in body, (row.template, fmt)
            bodies.append((row.template, body))
    # every message that showed the waiting run shows the stable link in its place
    stable = f"{PAGE}{stable_path(request_id)}"
    assert {template for template, body in bodies if stable in body} == set(LINKED)


# --- following the link ---------------------------------------------------------------------------


def test_the_stable_link_leads_to_the_run_waiting_now_and_after_a_repair_to_the_new_one(
    client: TestClient, store: Store
) -> None:
    case, request_id, _ = waiting_screening(Clock(utcnow()))
    path = stable_path(request_id)
    first = case.run_id
    before = store.row_counts()

    went = follow(client, path)

    assert went.status_code == 303 and went.headers["location"] == run_page(first)
    for name, value in SECURITY_HEADERS.items():  # no referrer: the token stays with us
        assert went.headers[name] == value, name
    # the link names the request by nothing a reader can use, and works any number of times
    assert request_id.hex not in path and str(request_id) not in path
    assert follow(client, path).headers["location"] == run_page(first)
    assert store.row_counts() == before  # following it writes nothing

    # the step's run crashed and the repair started another: the same link follows it
    second = repair(case, DecisionKind.SCREENING)
    assert request_row(request_id).flow_run_id == second != first

    again = follow(client, path)

    assert again.status_code == 303 and again.headers["location"] == run_page(second)
    assert stable_path(request_id) == path  # every message about the request has the same one


def test_a_decided_request_says_so_and_links_nothing(client: TestClient, store: Store) -> None:
    case, request_id, _ = waiting_screening(Clock(utcnow()))
    path = stable_path(request_id)
    who, values = script(DecisionKind.SCREENING)
    assert case.submit(request_id, who, values).accepted

    assert_plain_page(follow(client, path), case, 410, "This decision was taken")


def test_a_replaced_request_says_a_newer_one_waits(client: TestClient, store: Store) -> None:
    case, request_id, _ = waiting_screening(Clock(utcnow()))
    path = stable_path(request_id)
    # a submission the rules refuse (rejected, with no reason) opens the next round
    _, values = script(DecisionKind.SCREENING, outcome="rejected", reason="")
    assert not case.submit(request_id, LEAD, values).accepted
    assert request_row(request_id).status == DecisionRequestStatus.SUPERSEDED

    assert_plain_page(follow(client, path), case, 410, "A newer request replaced this one")
    # the newer round has its own link, which leads to the run
    newer = case.prepare(DecisionKind.SCREENING).request_id
    assert follow(client, stable_path(newer)).headers["location"] == run_page(case.run_id)


def test_a_cancelled_request_says_it_is_no_longer_needed(client: TestClient, store: Store) -> None:
    case, request_id, _ = waiting_screening(Clock(utcnow()))
    with unit_of_work() as session:
        cancel_waiting(
            session,
            get_case(session, case.ref),
            now=case.clock.tick(),
            actor="test",
            why="held",
        )

    assert_plain_page(follow(client, stable_path(request_id)), case, 410, "no longer needed")


def test_a_token_we_never_issued_is_refused_and_counted_as_junk(
    client: TestClient, store: Store
) -> None:
    from tasks.store.links import run_link_url

    _, request_id, approval = waiting_screening(Clock(utcnow()))
    path = stable_path(request_id)
    body = path.removeprefix("/r/")
    forged = [
        junk_token(),
        body[:-2] + ("AA" if not body.endswith("AA") else "BB"),  # one request's token, changed
        run_link_url(uuid.uuid4()).removeprefix(f"{PAGE}/r/"),  # ours, for no request of ours
        token_of(approval),  # an approval link's token is no run link
    ]
    before = store.row_counts()

    answers = [follow(client, f"/r/{token}") for token in forged]

    assert [a.status_code for a in answers] == [400] * len(forged)
    assert all("This link is not valid" in a.text and "location" not in a.headers for a in answers)
    assert store.row_counts() == before  # junk costs no write, however much comes
    # and a run link is no approval link
    assert client.get(f"/a/{body}").status_code == 400
    client.__exit__(None, None, None)  # the page stops: what it counted is written
    [event] = junk_events()
    assert event.details["count"] == len(forged) + 1


def test_the_stable_links_share_the_approval_links_rate_limit(
    store: Store, prefect_ui: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REMEDY_APPROVAL_RATE_PER_MINUTE", "3")
    _clear_caches()
    _, request_id, _ = waiting_screening(Clock(utcnow()))
    path = stable_path(request_id)

    with TestClient(create_app(check_seconds=0)) as client:
        statuses = [follow(client, path).status_code for _ in range(3)]
        limited = follow(client, path)
        assert client.get("/healthz").status_code == 200

    assert statuses == [303] * 3
    assert limited.status_code == 429 and "location" not in limited.headers
    assert path.removeprefix("/r/") not in limited.text


# --- where there is no run to send anyone to -----------------------------------------------------


def test_a_request_whose_run_is_gone_is_not_followed_there(store: Store, prefect_ui: None) -> None:
    """Between a crash and its repair the store still names the dead run: nobody is sent there."""
    from tasks.web.runlink import follow_run_link

    case, request_id, _ = waiting_screening(Clock(utcnow()))
    token = stable_path(request_id).removeprefix("/r/")
    asked: list[uuid.UUID] = []

    def gone(run_id: uuid.UUID) -> bool:  # what Prefect says of the run: Crashed, or no such run
        asked.append(run_id)
        return True

    answer = follow_run_link(token, now=case.clock.now, run_gone=gone)

    assert asked == [case.run_id]
    assert answer.redirect is None and answer.status == 409
    assert "restarted" in answer.title and DEAD_RUN not in answer.message
    alive = follow_run_link(token, now=case.clock.now, run_gone=lambda _: False)
    assert alive.redirect == run_page(case.run_id) and alive.status == 303


def test_a_prefect_that_cannot_be_asked_stops_nobody() -> None:
    """Unreachable, Prefect says nothing of the run: the browser goes on to the UI regardless."""
    from tasks.web.runlink import run_gone

    with temporary_settings({PREFECT_API_URL: NOWHERE, PREFECT_UI_URL: UI}):
        assert run_gone(uuid.uuid4()) is False  # and no error reaches the page


def test_without_a_prefect_ui_the_link_says_where_to_decide(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("PREFECT_API_URL", "PREFECT_UI_URL"):  # no Prefect here: nowhere to send anyone
        monkeypatch.delenv(name, raising=False)
    case = start_sample_case(Clock(utcnow()))
    request_id = case.prepare(DecisionKind.SCREENING).request_id
    with (
        temporary_settings({PREFECT_API_URL: None, PREFECT_UI_URL: None}),
        TestClient(create_app(check_seconds=0)) as client,
    ):
        answer = follow(client, stable_path(request_id))
    assert_plain_page(answer, case, 409, "not in the Prefect UI")


def test_the_case_view_links_each_waiting_decision_by_its_stable_link(store: Store) -> None:
    from tasks.reports.case_view import case_view
    from tasks.store.links import run_link_url

    case, request_id, _ = waiting_screening(Clock())
    asked: list[uuid.UUID] = []

    def link(named: uuid.UUID) -> str:
        asked.append(named)
        return run_link_url(named)

    shown = case_view(case.ref, now=case.clock.now, link=link)

    assert asked == [request_id]  # the request, not the run that waits on it today
    assert f"]({PAGE}{stable_path(request_id)})" in shown and DEAD_RUN not in shown
