"""IOM step 1, verify the allegation, on real stores: the outcomes other than substantiated
(screened out, duplicate, inconclusive, unsubstantiated) and the safety guard.
"""

from __future__ import annotations

import re

from markdown_it import MarkdownIt

from models.enums import (
    CaseEvent,
    CaseState,
    CaseStatus,
    ClosureType,
    DecisionKind,
    DecisionRequestStatus,
    NotificationChannel,
    ScreeningOutcome,
    Step,
)
from models.tables import (
    Allegation,
    ClosureRecord,
    Decision,
    DecisionRequest,
    Notification,
    VerificationFinding,
)
from tasks.decisions.requests import describe_request
from tests.conftest import Store
from tests.integration.factories import (
    LEAD,
    Clock,
    count,
    rows,
    script,
    stakeholder_id,
    start_sample_case,
)
from tests.integration.steps_helpers import (
    FINISHED,
    PENDING,
    STARTED,
    assert_state,
    step_runs,
    transitions,
)
from tests.integration.test_free_text_sealed import in_clear


def test_unsubstantiated_goes_to_closure_with_no_basis(store: Store) -> None:
    case = start_sample_case(Clock())
    case.decide(DecisionKind.SCREENING)
    # a reason of blanks passes the form's schema, not the lifecycle's guard
    pending = case.prepare(DecisionKind.VERIFICATION)
    who, values = script(DecisionKind.VERIFICATION, outcome="unsubstantiated", reason="   ")
    blank = case.submit(pending.request_id, who, values)
    assert not blank.accepted and blank.reason == (
        "The allegation cannot be found unsubstantiated: no reason for the decision is recorded."
    )
    assert case.case().closure_type is None and count(VerificationFinding) == 0
    assert_state(case, CaseState.VERIFYING, Step.VERIFY, CaseStatus.ACTIVE)

    decision = case.decide(
        DecisionKind.VERIFICATION,
        outcome="unsubstantiated",
        reason="The interviews did not confirm the report.",
        palermo_act="absent",
    )
    assert decision.outcome == "unsubstantiated"
    assert_state(case, CaseState.CLOSING, Step.CLOSE, CaseStatus.ACTIVE)
    assert case.case().closure_type == ClosureType.NO_BASIS
    assert count(VerificationFinding, VerificationFinding.case_id == case.case().id) == 1
    assert step_runs(case) == [(1, 1, FINISHED), (5, 1, PENDING)]

    case.enter(Step.CLOSE)  # the run opening the step binds its entry, handed over or not
    assert step_runs(case) == [(1, 1, FINISHED), (5, 1, STARTED)]
    assert case.prepare(DecisionKind.CLOSURE).initial == {"closure_type": "no_basis"}
    proposal = case.decide(DecisionKind.CLOSURE, closure_type="no_basis")
    case.decide(
        DecisionKind.CLOSURE_CONFIRMATION,
        scope=case.confirmation_scope(proposal),
        exclude=[proposal.approver_id],
    )
    assert_state(case, CaseState.CLOSED, Step.LESSONS, CaseStatus.CLOSED)
    [record] = rows(ClosureRecord, ClosureRecord.case_id == case.case().id)
    assert record.closure_type == ClosureType.NO_BASIS and len(set(record.approver_ids)) == 2
    assert [t[0] for t in transitions(case)] == [
        CaseEvent.START_VERIFICATION,
        CaseEvent.UNSUBSTANTIATED,
        CaseEvent.CASE_CLOSED,
    ]
    assert case.chain().ok


def test_screening_out_needs_a_reason(store: Store) -> None:
    case = start_sample_case(Clock())
    pending = case.prepare(DecisionKind.SCREENING)
    result = case.submit(pending.request_id, LEAD, {"outcome": "rejected", "reason": "   "})
    assert not result.accepted
    assert result.reason == "a reason is required to reject an allegation or mark it a duplicate"
    assert_state(case, CaseState.VERIFYING, Step.VERIFY, CaseStatus.ACTIVE)
    [allegation] = rows(Allegation, Allegation.case_id == case.case().id)
    assert allegation.screening_outcome == ScreeningOutcome.PENDING
    assert case.case().closure_type is None

    case.decide(DecisionKind.SCREENING, outcome="rejected", reason="Not in our supply chain.")
    assert_state(case, CaseState.CLOSING, Step.CLOSE, CaseStatus.ACTIVE)
    assert case.case().closure_type == ClosureType.NO_BASIS
    [allegation] = rows(Allegation, Allegation.case_id == case.case().id)
    assert allegation.screening_outcome == ScreeningOutcome.REJECTED
    assert in_clear(allegation.case_id, allegation.screening_reason) == "Not in our supply chain."
    assert [t[0] for t in transitions(case)][-1] == CaseEvent.SCREENED_OUT
    assert case.chain().ok


def test_a_duplicate_names_a_case_that_exists(store: Store) -> None:
    clock = Clock()
    original = start_sample_case(clock)
    case = start_sample_case(clock, variant="(reported again by another NGO)", directory=False)
    for duplicate_of, reason in [
        ("", "name the case this allegation duplicates"),
        (case.ref, "name the case this allegation duplicates"),
        ("RC-2026-0999", "there is no case RC-2026-0999"),
    ]:
        pending = case.prepare(DecisionKind.SCREENING)
        form = {"outcome": "duplicate", "reason": "Same site.", "duplicate_of": duplicate_of}
        result = case.submit(pending.request_id, LEAD, form)
        assert not result.accepted and result.reason is not None and reason in result.reason
    assert case.case().state == CaseState.VERIFYING

    case.decide(
        DecisionKind.SCREENING, outcome="duplicate", reason="Same site.", duplicate_of=original.ref
    )
    assert_state(case, CaseState.CLOSING, Step.CLOSE, CaseStatus.ACTIVE)
    assert case.case().closure_type == ClosureType.DUPLICATE
    [allegation] = rows(Allegation, Allegation.case_id == case.case().id)
    assert allegation.screening_outcome == ScreeningOutcome.DUPLICATE
    assert allegation.duplicate_of_case_id == original.case().id
    assert original.case().state == CaseState.VERIFYING
    assert case.chain().ok and original.chain().ok


def test_inconclusive_is_recorded_and_asked_again(store: Store) -> None:
    case = start_sample_case(Clock())
    case.decide(DecisionKind.SCREENING)
    case.decide(DecisionKind.SAFETY)
    first = case.prepare(DecisionKind.VERIFICATION)
    who, values = script(DecisionKind.VERIFICATION, outcome="inconclusive", reason="P-02 unheard.")
    result = case.submit(first.request_id, who, values)

    assert result.accepted and result.decision is not None
    assert result.decision.outcome == "inconclusive"
    assert_state(case, CaseState.VERIFYING, Step.VERIFY, CaseStatus.ACTIVE)
    assert count(VerificationFinding, VerificationFinding.case_id == case.case().id) == 1
    assert transitions(case)[-1] == (CaseEvent.INCONCLUSIVE, "verifying", "verifying")
    assert step_runs(case) == [(1, 1, STARTED)]
    requests = sorted(
        (r for r in rows(DecisionRequest) if r.kind == DecisionKind.VERIFICATION),
        key=lambda r: r.round,
    )
    assert [(r.round, r.status) for r in requests] == [
        (1, DecisionRequestStatus.DECIDED),
        (2, DecisionRequestStatus.WAITING),
    ]
    # the next round is what the step waits for, with a fresh code for the verifier
    again = case.prepare(DecisionKind.VERIFICATION)
    assert again.decision is None and again.request_id == requests[1].id
    notices = [
        n
        for n in rows(Notification, Notification.event == "decision_requested")
        if n.context["request_id"] == str(requests[1].id) and n.channel == NotificationChannel.EMAIL
    ]
    assert [n.recipient_id for n in notices] == [stakeholder_id(who)]
    case.decide(DecisionKind.VERIFICATION)
    assert_state(case, CaseState.DETERMINING_RESPONSE, Step.RESPOND, CaseStatus.ACTIVE)
    assert count(VerificationFinding, VerificationFinding.case_id == case.case().id) == 2
    assert case.chain().ok


def test_substantiated_without_a_safety_assessment_is_refused(store: Store) -> None:
    case = start_sample_case(Clock())
    case.decide(DecisionKind.SCREENING)
    pending = case.prepare(DecisionKind.VERIFICATION)
    assert "Safety: not assessed" in pending.description
    who, values = script(DecisionKind.VERIFICATION)
    result = case.submit(pending.request_id, who, values)

    assert not result.accepted
    assert result.reason == (
        "The allegation cannot be substantiated yet: no safety assessment is recorded."
    )
    refused = [e for e in case.audit() if e.action == "decision.refused"]
    assert [e.details["reason"] for e in refused] == [result.reason]
    # the findings written before the guard refused are rolled back with the decision
    assert count(VerificationFinding) == 0
    assert count(Decision, Decision.kind == DecisionKind.VERIFICATION) == 0
    assert_state(case, CaseState.VERIFYING, Step.VERIFY, CaseStatus.ACTIVE)
    assert case.prepare(DecisionKind.VERIFICATION).round == 2

    # after the safety assessment the same verifier's carried-over code works
    case.decide(DecisionKind.SAFETY)
    again = case.prepare(DecisionKind.VERIFICATION)
    assert case.submit(again.request_id, who, values).accepted
    assert_state(case, CaseState.DETERMINING_RESPONSE, Step.RESPOND, CaseStatus.ACTIVE)
    assert case.chain().ok


EVIL_SITE = "[Session expired - sign in](https://evil.example/login)"


def test_a_site_written_as_a_link_is_described_as_text(store: Store) -> None:
    case = start_sample_case(Clock(), site=EVIL_SITE)
    # the page renders descriptions so; the Prefect UI renders the run input's description too
    markdown = MarkdownIt("commonmark", {"html": False}).enable("table")
    for kind in (DecisionKind.SCREENING, DecisionKind.SAFETY):
        pending = case.prepare(kind)
        described = describe_request(pending.request_id)
        assert described == pending.description  # what the run input carries
        html = markdown.render(described)
        assert "<a " not in html and "href" not in html
        assert f"<li>Where: CD / {EVIL_SITE}; mineral: tin</li>" in html
        assert re.search(r"(?<!\\)://", described) is None  # no bare URL to autolink
        case.decide(kind)
