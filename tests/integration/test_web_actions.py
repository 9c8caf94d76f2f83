"""Acting on an approval-page link on real stores, as far as it goes without a Prefect server: a
form with problems uses nothing up, the verdict reads what the step recorded, and a milestone
owner's progress report is recorded once from their link.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlmodel import select

from models.enums import DecisionKind, DecisionRequestStatus, MilestoneStatus
from models.tables import AuditEvent, PlanAction, ProgressUpdate
from tasks.decisions.requests import cancel_waiting
from tasks.decisions.resume import NOT_PROVEN, SubmitFailedError, submit_decision
from tasks.steps.implement import update_milestone
from tasks.store.cases import get_case
from tasks.store.db import read_only, unit_of_work
from tasks.web.actions import (
    SubmissionFailedError,
    decide_from_link,
    decision_verdict,
    progress_from_link,
)
from tasks.web.forms import FormProblemsError
from tasks.web.refusals import LinkRefusedError
from tasks.web.resolve import resolve_link
from tests.conftest import Store
from tests.integration.factories import LEAD, SUPPLIER, Clock, script, stakeholder_id
from tests.integration.test_free_text_sealed import in_clear
from tests.integration.test_web_links import (
    changed,
    link_row,
    owned_milestone,
    refusals,
    request_row,
    token_of,
    waiting_screening,
)

NO_LONGER_NEEDED = (
    "This decision is no longer needed. The case left the step that asked for it (it was put on "
    "hold, closed early or revised); nothing was changed. A new request reaches you if the step "
    "asks again."
)


# --- deciding ------------------------------------------------------------------------------------


def test_the_verdict_says_what_the_step_made_of_a_submission(store: Store) -> None:
    clock = Clock()
    case, request_id, _ = waiting_screening(clock)
    _, values = script(DecisionKind.SCREENING)

    assert decision_verdict(request_id, wait_seconds=0) == ("checking", None)
    started = time.monotonic()
    assert decision_verdict(request_id, wait_seconds=0.6) == ("checking", None)
    assert time.monotonic() - started >= 0.6  # it waited for the step before saying so

    # a submission that proved nothing: the same request waits again, one try further on
    assert not case.submit(request_id, LEAD, values, code="ZZZZ2222").accepted
    assert decision_verdict(request_id, wait_seconds=0, tries=0) == ("refused", NOT_PROVEN)
    assert decision_verdict(request_id, wait_seconds=0, tries=1) == ("checking", None)

    rejected = {**values, "outcome": "rejected"}  # without the reason a rejection needs
    assert not case.submit(request_id, LEAD, rejected).accepted
    assert decision_verdict(request_id, wait_seconds=0, tries=1) == (
        "refused",
        "a reason is required to reject an allegation or mark it a duplicate",
    )

    newer = case.prepare(DecisionKind.SCREENING).request_id
    assert case.submit(newer, LEAD, values).accepted
    assert decision_verdict(newer, wait_seconds=0) == ("accepted", None)

    # the case left the step while the decision waited
    safety = case.prepare(DecisionKind.SAFETY).request_id
    with unit_of_work() as session:
        stored = get_case(session, case.ref, lock=True)
        cancel_waiting(session, stored, now=clock.tick(), actor="test", why="put on hold")
    assert request_row(safety).status == DecisionRequestStatus.CANCELLED
    assert decision_verdict(safety, wait_seconds=0) == ("cancelled", NO_LONGER_NEEDED)


def test_a_decision_form_with_problems_uses_nothing_up(store: Store) -> None:
    clock = Clock()
    _, request_id, link = waiting_screening(clock)
    view = resolve_link(token_of(link), now=clock.now)
    before = store.row_counts()

    with pytest.raises(FormProblemsError) as caught:
        decide_from_link(view, {"outcome": [""], "duplicate_of": ["nonsense"]}, now=clock.tick())

    assert caught.value.problems == [
        "outcome: is required but missing",
        "duplicate_of: String should match pattern '^(RC-\\d{4}-\\d{4,})?$'",
    ]
    assert store.row_counts() == before
    assert link_row(link.id).used_at is None
    assert request_row(request_id).status == DecisionRequestStatus.WAITING


def test_a_link_of_a_locked_out_approver_uses_nothing_up(store: Store) -> None:
    clock = Clock()
    case, request_id, link = waiting_screening(clock)
    _, values = script(DecisionKind.SCREENING)
    for attempt in range(5):  # models/policy.toml max_failed_attempts
        assert case.submit(request_id, LEAD, values, code=f"WRONG{attempt:03d}").attempt_failed
    view = resolve_link(token_of(link), now=clock.now)
    before = store.row_counts()

    with pytest.raises(SubmissionFailedError) as caught:
        decide_from_link(view, {"outcome": ["accepted"]}, now=clock.tick())

    assert str(caught.value).startswith("too many failed attempts in this name")
    assert store.row_counts() == before and link_row(link.id).used_at is None


class _FakeApi(BaseHTTPRequestHandler):
    """A Prefect API that is not well: every request gets the server's one answer."""

    answer: tuple[int, str, bytes] = (500, "application/json", b'{"detail": "boom"}')

    def _answer(self) -> None:
        status, content_type, body = self.answer
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *_args: object) -> None:
        return


class _NotPrefect(_FakeApi):
    answer = (200, "text/html", b"<html><body>Sign in</body></html>")  # a proxy's sign-in page


@pytest.fixture
def fake_apis() -> Iterator[dict[str, str]]:
    """Addresses of Prefect APIs that fail, each with a credential in it, by name."""
    servers = {
        name: ThreadingHTTPServer(("127.0.0.1", 0), handler)
        for name, handler in (("failing", _FakeApi), ("not-prefect", _NotPrefect))
    }
    for server in servers.values():
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {
        name: f"http://remedy:s3cret-api-key@127.0.0.1:{server.server_address[1]}/api"
        for name, server in servers.items()
    }
    for server in servers.values():
        server.shutdown()
        server.server_close()


NOWHERE = "http://remedy:s3cret-api-key@127.0.0.1:9/api"  # nothing listens there


FAILURES = {
    "connection-refused": (
        None,
        "the Prefect API could not be reached (ConnectError); nothing was submitted",
    ),
    "http-500": ("failing", "the Prefect API answered HTTP 500; nothing was submitted"),
    "not-prefect": (
        "not-prefect",
        "the Prefect API's answer could not be read (is it Prefect?); nothing was submitted",
    ),
}


@pytest.mark.parametrize(("api", "says"), FAILURES.values(), ids=FAILURES.keys())
def test_a_decision_prefect_cannot_take_gives_the_link_back(
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    fake_apis: dict[str, str],
    api: str | None,
    says: str,
) -> None:
    url = fake_apis[api] if api else NOWHERE
    monkeypatch.setenv("PREFECT_API_URL", url)
    clock = Clock()
    case, request_id, link = waiting_screening(clock)
    view = resolve_link(token_of(link), now=clock.now)
    before = store.row_counts()

    with temporary_settings({PREFECT_API_URL: url}):
        with pytest.raises(SubmitFailedError) as submitting:
            submit_decision(request_id, {"outcome": "accepted"}, wait_seconds=0)
        with pytest.raises(SubmissionFailedError) as deciding:
            decide_from_link(view, {"outcome": ["accepted"]}, now=clock.tick())

    for caught in (submitting, deciding):
        assert str(caught.value) == says  # neither the address nor its credential
    assert store.row_counts() == before
    assert link_row(link.id).used_at is None
    assert request_row(request_id).status == DecisionRequestStatus.WAITING
    assert "link.used" not in case.actions()


# --- reporting progress --------------------------------------------------------------------------


def test_a_milestone_owner_reports_progress_from_their_link_once(store: Store) -> None:
    clock = Clock()
    case, action, link = owned_milestone(clock)
    view = resolve_link(token_of(link), now=clock.now)
    form = {
        "status": ["done"],
        "note": ["Delivered to P-01 in person."],
        "evidence": ["doc:receipt-17\r\ndoc:photo-3\r\n"],
    }
    at = clock.tick()

    result = progress_from_link(view, form, now=at)

    assert (result.key, result.status, result.plan_completed) == (
        "document-return",
        MilestoneStatus.DONE,
        False,
    )
    with read_only() as session:
        stored = session.get(PlanAction, action.id)
        [update] = session.exec(
            select(ProgressUpdate).where(ProgressUpdate.idempotency_key == str(link.id))
        ).all()
    assert stored is not None and stored.status == MilestoneStatus.DONE
    assert stored.evidence_refs == ["doc:receipt-17", "doc:photo-3"]
    assert (update.status, update.reported_by_id) == (
        MilestoneStatus.DONE,
        stakeholder_id(SUPPLIER),
    )
    assert in_clear(update.case_id, update.note) == "Delivered to P-01 in person."
    assert link_row(link.id).used_at == at
    [used] = [e for e in case.audit() if e.action == "link.used"]
    assert (used.actor, used.subject_id) == (f"stakeholder:{SUPPLIER}", str(link.id))
    assert used.details == {"purpose": "progress", "milestone": "document-return", "status": "done"}
    assert case.chain().ok

    # the same form sent again (a second tab, a double click) is refused and changes nothing
    before = store.row_counts()
    with pytest.raises(LinkRefusedError) as caught:
        progress_from_link(view, form, now=clock.tick())
    assert (caught.value.status, caught.value.reason) == (410, "replayed")
    assert changed(before, store.row_counts()) == {"audit_event": 1}
    assert refusals(case.ref)[-1].details == {"reason": "replayed", "purpose": "progress"}


def test_a_progress_report_with_problems_uses_nothing_up(store: Store) -> None:
    clock = Clock()
    _, _, link = owned_milestone(clock)
    view = resolve_link(token_of(link), now=clock.now)
    before = store.row_counts()

    with pytest.raises(FormProblemsError) as caught:
        progress_from_link(view, {"status": ["verified"]}, now=clock.tick())

    assert caught.value.problems == ["status: choose in progress or done"]
    assert store.row_counts() == before and link_row(link.id).used_at is None


def test_a_report_the_milestone_no_longer_takes_gives_the_link_back(store: Store) -> None:
    clock = Clock()
    case, action, link = owned_milestone(clock)
    view = resolve_link(token_of(link), now=clock.now)
    # the lead settles the milestone while the owner's form is open
    for status, by, evidence in (
        (MilestoneStatus.DONE, LEAD, ["doc:receipts"]),
        (MilestoneStatus.VERIFIED, LEAD, []),
    ):
        update_milestone(
            case.ref, action.key, status=status, by=by, evidence=evidence, now=clock.tick()
        )
    before = store.row_counts()

    with pytest.raises(FormProblemsError) as caught:
        progress_from_link(view, {"status": ["done"]}, now=clock.tick())

    assert caught.value.problems == ["milestone document-return is verified already"]
    assert store.row_counts() == before and link_row(link.id).used_at is None
    with read_only() as session:
        assert not session.exec(select(AuditEvent).where(AuditEvent.action == "link.used")).first()
