"""The approval page against the session's real Prefect server, runner and case store.

The page runs as its own process (`python -m flows.web.app`, as `remedy up` starts it) and
is spoken to over HTTP, under a policy where a link decides for a person without a passkey (these
tests are about the page's other defences; tests/e2e/test_passkeys_browser.py runs the shipped
policy). A decision taken from a link resumes the waiting run through the Prefect
API and is recorded; a replayed, expired, tampered, merely fetched, foreign or forged request
changes nothing but the audit chain.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from sqlmodel import col, select

from flows.local.stack import free_port
from models.enums import CaseState, DecisionRequestStatus, LinkPurpose, MilestoneStatus
from models.tables import (
    ApprovalLink,
    AuditEvent,
    Decision,
    DecisionRequest,
    PlanAction,
    ProgressUpdate,
    Stakeholder,
)
from tasks.store.db import read_only, unit_of_work
from tasks.store.links import create_link, link_url
from tests.conftest import Store, _clear_caches
from tests.e2e.conftest import E2E
from tests.e2e.helpers import open_case, wait_for
from tests.e2e.test_robustness import waiting_kind

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

LEAD = "lena.lead"
TIMEOUT = httpx.Timeout(120.0)


# --- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def page_base(e2e: E2E, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start the approval page once for this module, on a port of its own (links decide alone)."""
    from tests.integration.test_web_app import link_decides_policy

    policy = link_decides_policy(tmp_path_factory.mktemp("policy"))
    saved = dict(e2e.stack.extra_env)
    e2e.stack.extra_env["REMEDY_POLICY_FILE"] = str(policy)  # the page's process only
    try:
        base = e2e.stack.start_approval_page(port=free_port())
    finally:
        e2e.stack.extra_env.clear()
        e2e.stack.extra_env.update(saved)
    yield base
    e2e.stack.stop("approval-page")


@pytest.fixture
def page(live: E2E, page_base: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Make links built in this test point at the running page; return its address."""
    monkeypatch.setenv("REMEDY_APPROVAL_BASE_URL", page_base)
    _clear_caches()
    return page_base


def stakeholder(key: str) -> Stakeholder:
    with read_only() as session:
        return session.exec(select(Stakeholder).where(Stakeholder.key == key)).one()


def screening_link(examples: Path, tmp_path: Path) -> tuple[str, DecisionRequest, ApprovalLink]:
    """Open a fresh case, wait until screening waits, and return the lead's link for it."""
    ref = open_case(examples, tmp_path)
    wait_for(lambda: waiting_kind(ref) == "screening", timeout=240, what="screening to wait")
    from tasks.decisions.requests import waiting_requests

    [request] = waiting_requests(ref)
    lead = stakeholder(LEAD)
    with read_only() as session:
        link = session.exec(
            select(ApprovalLink).where(
                ApprovalLink.request_id == request.id,
                ApprovalLink.stakeholder_id == lead.id,
                ApprovalLink.purpose == LinkPurpose.DECIDE,
            )
        ).one()
    return ref, request, link


def url_of(link: ApprovalLink) -> str:
    return link_url(link.id, link.expires_at)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "the page has no CSRF token"
    return found.group(1)


def show(url: str) -> httpx.Response:
    return httpx.get(url, follow_redirects=False, timeout=TIMEOUT)


def send(url: str, data: dict[str, Any], *, origin: str | None = None) -> httpx.Response:
    """POST a form the way a browser on the page does (same origin)."""
    headers = {"Origin": origin} if origin else {}
    return httpx.post(url, data=data, headers=headers, follow_redirects=False, timeout=TIMEOUT)


def row_counts(live: E2E) -> dict[str, int]:
    """Count the rows of every table of the case store.

    Audit events of message delivery are left out: the runner's deliver-notifications schedule
    may record a message sent for any case at any moment, which is not the page's doing.
    """
    counts = Store("sqlite", live.store_url, None, None).row_counts()
    with read_only() as session:
        delivery = session.exec(
            select(sa.func.count())
            .select_from(AuditEvent)
            .where(col(AuditEvent.action).like("notification.%"))
        ).one()
    counts["audit_event"] -= delivery
    return counts


def changed(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {t: after[t] - before[t] for t in after if after[t] != before[t]}


def link_row(link_id: uuid.UUID) -> ApprovalLink:
    with read_only() as session:
        row = session.get(ApprovalLink, link_id)
        assert row is not None
        return row


def request_row(request_id: uuid.UUID) -> DecisionRequest:
    with read_only() as session:
        row = session.get(DecisionRequest, request_id)
        assert row is not None
        return row


def run_state(flow_run_id: uuid.UUID | None) -> tuple[StateType | None, uuid.UUID | None]:
    assert flow_run_id is not None
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state
    return (state.type, state.id) if state else (None, None)


def audit_of(chain: str, action: str) -> list[AuditEvent]:
    with read_only() as session:
        return list(
            session.exec(
                select(AuditEvent)
                .where(AuditEvent.chain == chain, AuditEvent.action == action)
                .order_by(col(AuditEvent.seq))
            ).all()
        )


def decide_screening(url: str, page: str) -> httpx.Response:
    """Open the link and accept the allegation as the lead, as a person on the page would."""
    shown = show(url)
    assert shown.status_code == 200, shown.text
    form = {"outcome": "accepted", "stakeholder_key": LEAD, "csrf": csrf_of(shown.text)}
    return send(url, form, origin=page)


def decided(request_id: uuid.UUID) -> bool:
    return request_row(request_id).status == DecisionRequestStatus.DECIDED


# --- the tests -----------------------------------------------------------------------------------


def test_a_decision_from_a_link_resumes_the_run_and_is_recorded(
    page: str, live: E2E, examples: Path, tmp_path: Path
) -> None:
    ref, request, link = screening_link(examples, tmp_path)
    shown = show(url_of(link))
    assert shown.status_code == 200
    assert "Screen the allegation" in shown.text and f"case {ref}" in shown.text
    assert LEAD not in shown.text  # the page asks for the key and does not print it
    for name, value in {
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
    }.items():
        assert shown.headers[name] == value
    assert "default-src 'none'" in shown.headers["Content-Security-Policy"]
    csrf = csrf_of(shown.text)

    # an incomplete form comes back with the problems, as typed (escaped), using nothing up
    before = row_counts(live)
    typed = "<script>alert(1)</script>"
    incomplete = {"outcome": "", "duplicate_of": "nonsense", "reason": typed}
    sent = send(url_of(link), {**incomplete, "stakeholder_key": LEAD, "csrf": csrf}, origin=page)
    assert sent.status_code == 422
    assert "outcome: is required but missing" in sent.text
    assert "duplicate_of: String should match pattern" in sent.text
    assert typed not in sent.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in sent.text
    assert row_counts(live) == before and link_row(link.id).used_at is None

    form = {"outcome": "accepted", "stakeholder_key": LEAD, "csrf": csrf}
    done = send(url_of(link), form, origin=page)
    assert done.status_code == 200, done.text
    assert "Submitted" in done.text and "checks it when it resumes" in done.text

    wait_for(lambda: decided(request.id), timeout=120, what="the screening to be recorded")
    with read_only() as session:
        [decision] = session.exec(select(Decision).where(Decision.request_id == request.id)).all()
    assert decision.approver_id == stakeholder(LEAD).id and decision.outcome == "accepted"
    wait_for(lambda: waiting_kind(ref) == "safety", timeout=180, what="the case to move on")
    assert link_row(link.id).used_at is not None
    [used] = audit_of(ref, "link.used")
    assert used.subject_id == str(link.id) and used.actor == f"stakeholder:{LEAD}"
    assert used.details == {
        "purpose": "decide",
        "request_id": str(request.id),
        "kind": "screening",
    }


def test_a_replayed_link_changes_nothing(
    page: str, live: E2E, examples: Path, tmp_path: Path
) -> None:
    ref, request, link = screening_link(examples, tmp_path)
    url = url_of(link)
    csrf = csrf_of(show(url).text)
    assert decide_screening(url, page).status_code == 200
    wait_for(lambda: waiting_kind(ref) == "safety", timeout=180, what="the case to move on")
    before, state_before = row_counts(live), run_state(request.flow_run_id)

    again = send(url, {"outcome": "rejected", "stakeholder_key": LEAD, "csrf": csrf}, origin=page)
    assert again.status_code == 410 and "This link was used already" in again.text
    assert show(url).status_code == 410
    assert changed(before, row_counts(live)) == {"audit_event": 2}
    assert [e.details["reason"] for e in audit_of(ref, "link.refused")] == ["replayed"] * 2
    assert run_state(request.flow_run_id) == state_before
    assert waiting_kind(ref) == "safety"


def test_an_expired_link_changes_nothing(
    page: str, live: E2E, examples: Path, tmp_path: Path
) -> None:
    ref, request, link = screening_link(examples, tmp_path)
    url = url_of(link)
    csrf = csrf_of(show(url).text)
    with unit_of_work() as session:
        row = session.get(ApprovalLink, link.id)
        assert row is not None
        row.expires_at = row.created_at - timedelta(minutes=1)
        session.add(row)
    before, state_before = row_counts(live), run_state(request.flow_run_id)

    shown = show(url)
    assert shown.status_code == 410 and "This link has expired" in shown.text
    form = {"outcome": "accepted", "stakeholder_key": LEAD, "csrf": csrf}
    sent = send(url, form, origin=page)
    assert sent.status_code == 410 and "This link has expired" in sent.text

    assert changed(before, row_counts(live)) == {"audit_event": 2}
    assert [e.details["reason"] for e in audit_of(ref, "link.refused")] == ["expired"] * 2
    assert link_row(link.id).used_at is None
    assert request_row(request.id).status == DecisionRequestStatus.WAITING
    assert run_state(request.flow_run_id) == state_before


def _flip(text: str, index: int) -> str:
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1 :]


def test_a_tampered_link_changes_nothing(
    page: str, live: E2E, examples: Path, tmp_path: Path
) -> None:
    ref, request, link = screening_link(examples, tmp_path)
    url = url_of(link)
    csrf = csrf_of(show(url).text)
    token = url.rsplit("/", 1)[1]
    body, _, signature = token.partition(".")
    tampered = [
        f"{_flip(body, 5)}.{signature}",  # another link id or expiry
        f"{body}.{_flip(signature, len(signature) - 1)}",  # a forged signature
        f"{body}{signature}",  # no signature at all
    ]
    before_system = len(audit_of("system", "link.refused"))
    before, state_before = row_counts(live), run_state(request.flow_run_id)

    for bad in tampered:
        shown = show(f"{page}/a/{bad}")
        assert shown.status_code == 400 and "This link is not valid" in shown.text
    form = {"outcome": "accepted", "stakeholder_key": LEAD, "csrf": csrf}
    sent = send(f"{page}/a/{tampered[0]}", form, origin=page)
    assert sent.status_code == 400

    # junk writes nothing per request: it is counted, and audited once a minute per address
    assert changed(before, row_counts(live)) == {}
    assert audit_of("system", "link.refused")[before_system:] == []
    assert audit_of(ref, "link.refused") == []
    assert link_row(link.id).used_at is None
    assert request_row(request.id).status == DecisionRequestStatus.WAITING
    assert run_state(request.flow_run_id) == state_before


def test_a_link_scanner_fetching_the_link_changes_nothing(
    page: str, live: E2E, examples: Path, tmp_path: Path
) -> None:
    ref, request, link = screening_link(examples, tmp_path)
    url = url_of(link)
    before, state_before = row_counts(live), run_state(request.flow_run_id)
    assert state_before[0] == StateType.PAUSED

    for _ in range(5):
        assert show(url).status_code == 200
    head = httpx.head(url, timeout=TIMEOUT)
    assert head.status_code in (200, 405)

    assert row_counts(live) == before
    assert run_state(request.flow_run_id) == state_before
    assert link_row(link.id).used_at is None
    assert request_row(request.id).status == DecisionRequestStatus.WAITING
    assert waiting_kind(ref) == "screening"


def test_a_wrong_recipient_changes_nothing_and_the_right_one_still_can(
    page: str, live: E2E, examples: Path, tmp_path: Path
) -> None:
    ref, request, link = screening_link(examples, tmp_path)
    url = url_of(link)
    csrf = csrf_of(show(url).text)
    before, state_before = row_counts(live), run_state(request.flow_run_id)

    # someone else who got hold of the lead's link types their own key
    form = {"outcome": "rejected", "reason": "no", "stakeholder_key": "sofia.senior", "csrf": csrf}
    sent = send(url, form, origin=page)
    assert sent.status_code == 403 and "This link was sent to someone else" in sent.text
    assert changed(before, row_counts(live)) == {"audit_event": 1}
    [refused] = audit_of(ref, "link.refused")
    assert refused.details == {"reason": "wrong-recipient", "purpose": "decide"}
    assert link_row(link.id).used_at is None
    assert request_row(request.id).status == DecisionRequestStatus.WAITING
    assert run_state(request.flow_run_id) == state_before

    # a link made out to someone who is not an approver of this decision shows nothing
    with unit_of_work() as session:
        foreign = create_link(
            session,
            purpose=LinkPurpose.DECIDE,
            case_id=request.case_id,
            stakeholder_id=stakeholder("rita.observer").id,
            request_id=request.id,
            now=link.created_at,
            expires_at=link.expires_at,
            code="NOTACODE",
        )
    shown = show(url_of(foreign))
    assert shown.status_code == 403
    assert "sent to someone who may not take this decision" in shown.text
    assert audit_of(ref, "link.refused")[-1].details["reason"] == "wrong-recipient"

    # the lead still can
    done = decide_screening(url, page)
    assert done.status_code == 200 and "Submitted" in done.text
    wait_for(lambda: decided(request.id), timeout=120, what="the screening to be recorded")
    with read_only() as session:
        [decision] = session.exec(select(Decision).where(Decision.request_id == request.id)).all()
    assert decision.approver_id == stakeholder(LEAD).id
    wait_for(lambda: waiting_kind(ref) == "safety", timeout=180, what="the case to move on")
    # an unused link to a decision that was taken says so
    late = show(url_of(foreign))
    assert late.status_code == 409 and "This decision was taken already" in late.text


def test_a_post_without_the_page_s_csrf_token_changes_nothing(
    page: str, live: E2E, examples: Path, tmp_path: Path
) -> None:
    ref, request, link = screening_link(examples, tmp_path)
    url = url_of(link)
    csrf = csrf_of(show(url).text)
    before, state_before = row_counts(live), run_state(request.flow_run_id)
    form = {"outcome": "accepted", "stakeholder_key": LEAD}

    forged = [
        send(url, form, origin=page),  # no token
        send(url, {**form, "csrf": "0" * 64}, origin=page),  # a wrong one
        send(url, {**form, "csrf": csrf}, origin="http://elsewhere.example"),  # another site
        httpx.post(
            url,
            data={**form, "csrf": csrf},
            headers={"Sec-Fetch-Site": "cross-site", "Origin": "null"},
            timeout=TIMEOUT,
        ),
    ]
    for response in forged:
        assert response.status_code == 403
        assert "This form could not be accepted" in response.text

    assert changed(before, row_counts(live)) == {"audit_event": 4}
    assert [e.details["reason"] for e in audit_of(ref, "link.refused")] == ["csrf"] * 4
    assert link_row(link.id).used_at is None
    assert request_row(request.id).status == DecisionRequestStatus.WAITING
    assert run_state(request.flow_run_id) == state_before


def test_a_milestone_owner_reports_progress_from_a_link(
    page: str, live: E2E, examples: Path, tmp_path: Path
) -> None:
    from demo.scripted import ScriptedStakeholders
    from tasks.context import utcnow

    ref = open_case(examples, tmp_path)
    ScriptedStakeholders().drive(ref, until=CaseState.IMPLEMENTING, timeout=600)
    # step 4's run activates the milestones (and tells their owners) when it starts
    action = wait_for(lambda: active_milestone(ref), timeout=180, what="active milestones")
    assert action is not None and action.owner_id is not None
    with read_only() as session:
        owner = session.get(Stakeholder, action.owner_id)
    assert owner is not None
    now = utcnow()
    with unit_of_work() as session:
        link = create_link(
            session,
            purpose=LinkPurpose.PROGRESS,
            case_id=action.case_id,
            stakeholder_id=owner.id,
            action_id=action.id,
            now=now,
            expires_at=now + timedelta(days=1),
        )
    url = url_of(link)
    shown = show(url)
    assert shown.status_code == 200
    assert action.key in shown.text and action.verification_method in shown.text

    form = {
        "status": "done",
        "note": "Delivered to P-01 in person.",
        "evidence": "doc:receipt-17\r\ndoc:photo-3\r\n",
        "stakeholder_key": owner.key,
        "csrf": csrf_of(shown.text),
    }
    done = send(url, form, origin=page)
    assert done.status_code == 200 and "Progress recorded" in done.text, done.text
    with read_only() as session:
        stored = session.get(PlanAction, action.id)
        [update] = session.exec(
            select(ProgressUpdate).where(ProgressUpdate.idempotency_key == str(link.id))
        ).all()
    assert stored is not None and stored.status == MilestoneStatus.DONE
    assert {"doc:receipt-17", "doc:photo-3"} <= set(stored.evidence_refs)
    assert update.status == MilestoneStatus.DONE and update.reported_by_id == owner.id
    assert update.evidence_refs == ["doc:receipt-17", "doc:photo-3"]
    assert [e.details["purpose"] for e in audit_of(ref, "link.used")][-1] == "progress"

    before = row_counts(live)
    again = send(url, form, origin=page)
    assert again.status_code == 410 and "This link was used already" in again.text
    assert changed(before, row_counts(live)) == {"audit_event": 1}


def active_milestone(reference: str) -> PlanAction | None:
    """Return the case's first active milestone that has an owner."""
    from models.tables import RemediationCase

    with read_only() as session:
        case_id = session.exec(
            select(RemediationCase.id).where(RemediationCase.reference == reference)
        ).one()
        return session.exec(
            select(PlanAction)
            .where(
                PlanAction.case_id == case_id,
                PlanAction.status == MilestoneStatus.ACTIVE,
                col(PlanAction.owner_id).is_not(None),
            )
            .order_by(col(PlanAction.due_on), col(PlanAction.key))
        ).first()


def test_unknown_addresses_and_methods_get_a_page_with_the_same_headers(page: str) -> None:
    for response in (
        httpx.get(f"{page}/", timeout=TIMEOUT),
        httpx.get(f"{page}/a/", timeout=TIMEOUT),
        httpx.put(f"{page}/a/abc.def", timeout=TIMEOUT),
    ):
        assert response.status_code in (404, 405)
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Frame-Options"] == "DENY"
    assert httpx.get(f"{page}/healthz", timeout=TIMEOUT).text == "ok"
