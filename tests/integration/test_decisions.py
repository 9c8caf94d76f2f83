"""The decision machinery on real stores: requests, one-time codes, refusals, rounds, four eyes.

Every test drives the plain functions the step flows call (no Prefect server) and checks what the
store holds afterwards: request and decision rows, codes, the outbox and the audit chain.
"""

from __future__ import annotations

import re
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlmodel import select

from models.enums import (
    CaseState,
    DecisionKind,
    DecisionRequestStatus,
    NotificationChannel,
    Role,
    ScreeningOutcome,
)
from models.tables import (
    Allegation,
    ApprovalCode,
    AuditEvent,
    Decision,
    DecisionRequest,
    Notification,
)
from tasks.decisions.codes import code_hash
from tasks.decisions.requests import NoApproverError, describe_request, waiting_requests
from tasks.decisions.resume import issued_code
from tasks.decisions.submissions import record_submission, refusal_reason
from tasks.store.directory import add_member
from tasks.store.vault import get_vault
from tests.conftest import Store
from tests.integration.factories import (
    ADVOCATE,
    LEAD,
    OBSERVER,
    SENIOR,
    VERIFIER,
    Clock,
    SampleCase,
    count,
    dump_store,
    remove_role,
    rows,
    script,
    stakeholder_id,
    start_sample_case,
    to_closing,
)

SUSPEND_KEY = re.compile(r"^[a-z0-9-]+$")


def requests_of(case: SampleCase, kind: DecisionKind) -> list[DecisionRequest]:
    found = rows(DecisionRequest, DecisionRequest.case_id == case.case().id)
    return sorted((r for r in found if r.kind == kind), key=lambda r: r.round)


def audited(case: SampleCase, action: str) -> list[AuditEvent]:
    return [e for e in case.audit() if e.action == action]


def requested_notices(request_id: uuid.UUID) -> list[Notification]:
    """The e-mails carrying a request's codes (chat copies carry neither code nor link)."""
    found = rows(Notification, Notification.event == "decision_requested")
    mine = [n for n in found if n.context.get("request_id") == str(request_id)]
    for chat in (n for n in mine if n.channel == NotificationChannel.CHAT):
        assert not {"code_ciphertext", "link_id", "sealed"} & set(chat.context)
    return [n for n in mine if n.channel == NotificationChannel.EMAIL]


def code_rows(request_id: uuid.UUID) -> dict[uuid.UUID, ApprovalCode]:
    return {c.stakeholder_id: c for c in rows(ApprovalCode, ApprovalCode.request_id == request_id)}


# --- requests ------------------------------------------------------------------------------------


def test_prepare_decision_is_idempotent_and_keeps_codes_hashed(store: Store) -> None:
    case = start_sample_case(Clock())
    case.decide(DecisionKind.SCREENING)
    first = case.prepare(DecisionKind.SAFETY)
    before, events = store.row_counts(), len(case.audit())
    again = case.prepare(DecisionKind.SAFETY)

    assert (again.request_id, again.suspend_key, again.round) == (
        first.request_id,
        first.suspend_key,
        first.round,
    )
    assert again.decision is None and first.description == again.description
    assert store.row_counts() == before and len(case.audit()) == events
    assert SUSPEND_KEY.match(first.suspend_key), first.suspend_key
    assert case.ref.lower() in first.suspend_key

    [request] = requests_of(case, DecisionKind.SAFETY)
    assert request.id == first.request_id and request.status == DecisionRequestStatus.WAITING
    # safety is the case lead's or the service provider's: both are designated, each gets a code
    approvers = {stakeholder_id(LEAD), stakeholder_id(ADVOCATE)}
    assert {uuid.UUID(i) for i in request.approver_ids} == approvers
    codes = code_rows(request.id)
    assert (
        set(codes) == approvers and count(ApprovalCode, ApprovalCode.request_id == request.id) == 2
    )
    notices = requested_notices(request.id)
    assert sorted(n.recipient_id for n in notices) == sorted(approvers)
    [requested] = [
        e for e in audited(case, "decision.requested") if e.subject_id == str(request.id)
    ]
    assert requested.details["approvers"] == sorted([LEAD, ADVOCATE])

    # only hashes are stored; the plaintext travels encrypted in the outbox, and nowhere else
    dump = dump_store(store)
    for key in (LEAD, ADVOCATE):
        code = issued_code(request.id, key)
        assert code is not None and len(code) == 8
        assert codes[stakeholder_id(key)].code_hash == code_hash(
            get_vault(), stakeholder_id(key), code
        )
        assert code not in dump
    for notice in notices:
        assert "code" not in notice.context and notice.context["code_ciphertext"]
    assert case.chain().ok


def test_runs_preparing_at_once_share_one_request(store: Store) -> None:
    case = start_sample_case(Clock())
    barrier = threading.Barrier(4)

    def prepare(_: int) -> uuid.UUID:
        barrier.wait()
        return case.prepare(DecisionKind.SCREENING).request_id

    with ThreadPoolExecutor(4) as pool:
        ids = set(pool.map(prepare, range(4)))
    [request] = requests_of(case, DecisionKind.SCREENING)
    assert ids == {request.id}
    assert len(requested_notices(request.id)) == 1
    assert len(audited(case, "decision.requested")) == 1
    assert case.chain().ok


def test_a_new_run_takes_over_a_waiting_request(store: Store) -> None:
    case = start_sample_case(Clock())
    first = case.prepare(DecisionKind.SCREENING)
    old_run, before = case.run_id, store.row_counts()
    case.run_id = uuid.uuid4()
    again = case.prepare(DecisionKind.SCREENING)
    assert again.request_id == first.request_id and again.previous_flow_run_id == old_run
    assert store.row_counts() == before
    [request] = requests_of(case, DecisionKind.SCREENING)
    assert request.flow_run_id == case.run_id


def test_an_accepted_submission_records_the_decision_once(store: Store) -> None:
    case = start_sample_case(Clock())
    pending = case.prepare(DecisionKind.SCREENING)
    who, values = script(DecisionKind.SCREENING)
    at = case.clock.tick()
    result = case.submit(pending.request_id, who, values, now=at)

    assert result.accepted and result.reason is None and result.decision is not None
    [decision] = rows(Decision, Decision.request_id == pending.request_id)
    assert (decision.kind, decision.outcome, decision.approver_id) == (
        DecisionKind.SCREENING,
        "accepted",
        stakeholder_id(LEAD),
    )
    assert decision.decided_at == at and decision.payload["outcome"] == "accepted"
    assert "approval_code" not in decision.payload
    [request] = requests_of(case, DecisionKind.SCREENING)
    assert request.status == DecisionRequestStatus.DECIDED and request.decided_at == at
    [code] = code_rows(request.id).values()
    assert code.used_at == at
    [taken] = audited(case, "decision.taken")
    assert taken.actor == f"stakeholder:{LEAD}" and taken.subject_id == str(decision.id)
    # typed into the Prefect UI: the audit says so (the page and the CLI send tickets instead)
    assert taken.details == {
        "kind": "screening",
        "round": 1,
        "outcome": "accepted",
        "via": "prefect-api",
    }
    [allegation] = rows(Allegation, Allegation.case_id == case.case().id)
    assert allegation.screening_outcome == ScreeningOutcome.ACCEPTED
    assert count(Notification, Notification.event == "decision_taken") == 1

    # the step runs again: the decision comes back, nothing new is asked
    before, events = store.row_counts(), len(case.audit())
    again = case.prepare(DecisionKind.SCREENING)
    assert again.decision is not None and again.decision.id == decision.id
    assert again.request_id == request.id
    assert store.row_counts() == before and len(case.audit()) == events
    assert case.chain().ok


FAILED_ATTEMPTS: list[tuple[str, str, dict[str, Any], str]] = [
    ("wrong-code", LEAD, {"approval_code": "ZZZZ2222"}, "the approval code is wrong"),
    ("unknown-approver", "nobody.here", {}, "not a designated approver"),
    ("member-without-the-role", OBSERVER, {}, "not a designated approver"),
    ("verifier-for-screening", VERIFIER, {}, "not a designated approver"),
    ("form-missing-outcome", LEAD, {"outcome": None}, "the form is incomplete"),
]


@pytest.mark.parametrize(
    ("submitter", "changes", "reason"),
    [r[1:] for r in FAILED_ATTEMPTS],
    ids=[r[0] for r in FAILED_ATTEMPTS],
)
def test_a_submission_that_proves_nothing_is_counted_and_the_round_waits(
    store: Store, submitter: str, changes: dict[str, Any], reason: str
) -> None:
    case = start_sample_case(Clock())
    pending = case.prepare(DecisionKind.SCREENING)
    lead_code = issued_code(pending.request_id, LEAD)
    assert lead_code is not None and lead_code != "ZZZZ2222"
    _, values = script(DecisionKind.SCREENING)
    form = {**values, "approval_code": lead_code, **changes}
    form = {k: v for k, v in form.items() if v is not None}
    code = form.pop("approval_code")
    before = store.row_counts()

    result = case.submit(pending.request_id, submitter, form, code=code)

    assert not result.accepted and result.decision is None and result.attempt_failed
    assert result.reason is not None and reason in result.reason
    # counted, and nothing else: no new round, no message, no audit event for a guess
    after = store.row_counts()
    assert {t: after[t] - before[t] for t in after if after[t] != before[t]} == {
        "approval_attempt": 1
    }
    [request] = requests_of(case, DecisionKind.SCREENING)
    assert (request.id, request.status, request.round) == (
        pending.request_id,
        DecisionRequestStatus.WAITING,
        1,
    )
    assert request.suspend_key == f"{pending.suspend_key}-t1" and SUSPEND_KEY.match(
        request.suspend_key
    )
    [allegation] = rows(Allegation, Allegation.case_id == case.case().id)
    assert allegation.screening_outcome == ScreeningOutcome.PENDING
    # the step asks again under the new key; the lead's code, never presented, still works
    assert case.prepare(DecisionKind.SCREENING).suspend_key == request.suspend_key
    accepted = case.submit(pending.request_id, LEAD, values, code=lead_code)
    assert accepted.accepted, accepted.reason
    assert case.chain().ok


def test_a_refused_submission_is_audited_and_asked_again(store: Store) -> None:
    case = start_sample_case(Clock())
    pending = case.prepare(DecisionKind.SCREENING)
    lead_code = issued_code(pending.request_id, LEAD)
    _, values = script(DecisionKind.SCREENING)
    before = store.row_counts()

    result = case.submit(
        pending.request_id, LEAD, {**values, "outcome": "rejected"}, code=lead_code
    )

    assert not result.accepted and result.decision is None and not result.attempt_failed
    assert result.reason is not None and result.reason.startswith("a reason is required")
    [refused] = audited(case, "decision.refused")
    assert refused.details["reason"] == result.reason
    assert refused.actor == f"stakeholder:{LEAD}"  # proven by her code
    assert refused.subject_id == str(pending.request_id)
    old, new = requests_of(case, DecisionKind.SCREENING)
    assert old.status == DecisionRequestStatus.SUPERSEDED
    assert (new.status, new.round, new.scope) == (DecisionRequestStatus.WAITING, 2, old.scope)
    assert new.suspend_key != old.suspend_key and SUSPEND_KEY.match(new.suspend_key)
    assert new.approver_ids == old.approver_ids
    # the code went through Prefect, which keeps run inputs: it is spent, a fresh one is sent
    [original] = code_rows(old.id).values()
    [fresh_row] = code_rows(new.id).values()
    assert original.used_at is not None and fresh_row.code_hash != original.code_hash
    [notice] = requested_notices(new.id)
    assert notice.recipient_id == stakeholder_id(LEAD)
    after = store.row_counts()
    assert after["decision"] == before["decision"] == 0
    changed = {t: after[t] - before[t] for t in after if after[t] != before[t]}
    assert changed == {
        "decision_request": 1,
        "approval_code": 1,
        "approval_link": 1,
        "audit_event": 2,  # decision.refused, decision.requested
        "notification": 3,  # decision_refused to the lead; her new code by e-mail and chat
    }
    [allegation] = rows(Allegation, Allegation.case_id == case.case().id)
    assert allegation.screening_outcome == ScreeningOutcome.PENDING
    assert case.case().state == CaseState.VERIFYING

    # the CLI and the approval page find the reason and the next round
    assert refusal_reason(old.id) == result.reason
    assert [r.id for r in waiting_requests(case.ref)] == [new.id]
    assert "Screen the allegation" in describe_request(new.id)
    assert case.prepare(DecisionKind.SCREENING).request_id == new.id
    stale = case.submit(new.id, LEAD, values, code=lead_code)
    assert not stale.accepted and stale.reason == "the approval code was used already"
    accepted = case.submit(new.id, LEAD, values, code=issued_code(new.id, LEAD))
    assert accepted.accepted, accepted.reason
    assert rows(Decision, Decision.request_id == new.id)
    assert case.chain().ok


def test_an_approver_who_lost_the_role_is_refused(store: Store) -> None:
    case = start_sample_case(Clock())
    case.decide(DecisionKind.SCREENING)
    pending = case.prepare(DecisionKind.SAFETY)
    remove_role(case.ref, Role.CASE_LEAD, LEAD)
    who, values = script(DecisionKind.SAFETY)
    result = case.submit(pending.request_id, LEAD, values)
    assert not result.accepted
    assert result.reason == "the approver no longer holds a role that may take this decision"
    assert audited(case, "decision.refused")[-1].details["reason"] == result.reason
    assert count(Decision, Decision.kind == DecisionKind.SAFETY) == 0
    # the other designated approver still decides, on the new round
    _, new = requests_of(case, DecisionKind.SAFETY)
    assert case.submit(new.id, who, values).accepted
    assert case.chain().ok


def test_a_replaced_approver_is_asked_on_the_next_round(store: Store) -> None:
    case = start_sample_case(Clock())
    case.decide(DecisionKind.SCREENING)
    case.decide(DecisionKind.SAFETY)
    pending = case.prepare(DecisionKind.VERIFICATION)
    # the verifier leaves the case while the decision waits; another takes the role over
    remove_role(case.ref, Role.VERIFIER, VERIFIER)
    add_member(case.ref, OBSERVER, Role.VERIFIER, actor="test", now=case.clock.tick())
    _, values = script(DecisionKind.VERIFICATION)
    left = case.submit(pending.request_id, VERIFIER, values)
    assert not left.accepted and left.reason is not None and "no longer holds" in left.reason

    # the next round is the new verifier's: otherwise nobody could ever take the decision
    _, new = requests_of(case, DecisionKind.VERIFICATION)
    assert new.approver_ids == [str(stakeholder_id(OBSERVER))]
    assert [n.recipient_id for n in requested_notices(new.id)] == [stakeholder_id(OBSERVER)]
    assert case.submit(new.id, OBSERVER, values).accepted
    assert case.case().state == CaseState.DETERMINING_RESPONSE
    assert case.chain().ok


def test_a_used_code_does_not_work_again(store: Store) -> None:
    case = start_sample_case(Clock())
    pending = case.prepare(DecisionKind.SCREENING)
    who, values = script(DecisionKind.SCREENING)
    code = issued_code(pending.request_id, who)
    assert case.submit(pending.request_id, who, values, code=code).accepted
    before = store.row_counts()

    again = case.submit(pending.request_id, who, values | {"outcome": "rejected"}, code=code)

    assert not again.accepted and again.reason == "this decision was already taken"
    refused = audited(case, "decision.refused")
    assert [e.details["reason"] for e in refused] == ["this decision was already taken"]
    assert refused[0].actor == f"submitter:{who}"
    after = store.row_counts()
    assert {t: after[t] - before[t] for t in after if after[t] != before[t]} == {"audit_event": 1}
    [request] = requests_of(case, DecisionKind.SCREENING)
    assert request.status == DecisionRequestStatus.DECIDED
    [decision] = rows(Decision, Decision.request_id == request.id)
    assert decision.outcome == "accepted"
    assert case.chain().ok


def test_an_expired_code_is_refused_and_a_fresh_one_sent(store: Store) -> None:
    case = start_sample_case(Clock())
    pending = case.prepare(DecisionKind.SCREENING)
    who, values = script(DecisionKind.SCREENING)
    old_code = issued_code(pending.request_id, who)
    [old_row] = code_rows(pending.request_id).values()
    assert old_row.expires_at == case.clock.now + timedelta(hours=72)
    [old_notice] = requested_notices(pending.request_id)

    late = case.clock.tick(hours=72)
    result = case.submit(pending.request_id, who, values, code=old_code, now=late)

    # the right person, too late: the same round waits, and only they get a fresh code
    assert not result.accepted and result.attempt_failed
    assert result.reason == "the approval code has expired; a new one has been sent"
    assert audited(case, "decision.refused") == []
    [request] = requests_of(case, DecisionKind.SCREENING)
    assert request.id == pending.request_id and request.status == DecisionRequestStatus.WAITING
    [fresh_row] = code_rows(request.id).values()
    assert fresh_row.code_hash != old_row.code_hash and fresh_row.used_at is None
    assert fresh_row.expires_at == late + timedelta(hours=72)
    notices = requested_notices(request.id)
    assert [n.recipient_id for n in notices if n.id != old_notice.id] == [stakeholder_id(who)]
    fresh = issued_code(request.id, who)
    assert fresh is not None and fresh != old_code
    # the old code is no good any more; the fresh one decides
    stale = case.submit(request.id, who, values, code=old_code)
    assert not stale.accepted and stale.reason == "the approval code is wrong"
    assert case.submit(request.id, who, values, code=fresh).accepted
    assert case.chain().ok


def test_nobody_holding_the_role_stops_with_a_clear_error(store: Store) -> None:
    case = start_sample_case(Clock())
    remove_role(case.ref, Role.VERIFIER)
    before = store.row_counts()
    with pytest.raises(NoApproverError, match=r"verification.*roles: verifier") as err:
        case.prepare(DecisionKind.VERIFICATION)
    assert case.ref in str(err.value)
    assert store.row_counts() == before


# --- concurrency ---------------------------------------------------------------------------------


def race(request_id: uuid.UUID, forms: dict[str, dict[str, Any]], at: datetime) -> dict[str, Any]:
    """Submit each form from its own thread, all released at the same moment."""
    barrier = threading.Barrier(len(forms))
    results: dict[str, Any] = {}

    def submit(who: str, form: dict[str, Any]) -> None:
        barrier.wait()
        results[who] = record_submission(request_id, form, now=at)

    threads = [threading.Thread(target=submit, args=item) for item in forms.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_two_approvers_at_once_record_one_decision(store: Store) -> None:
    clock = Clock()
    for attempt in range(4):
        case = to_closing(clock, variant=f"(report {attempt})", directory=attempt == 0)
        pending = case.prepare(DecisionKind.CLOSURE)
        _, values = script(DecisionKind.CLOSURE, closure_type="no_basis")
        forms = {
            who: {**values, "approver": who, "approval_code": issued_code(pending.request_id, who)}
            for who in (LEAD, SENIOR)
        }

        results = race(pending.request_id, forms, clock.tick())

        accepted = [w for w, r in results.items() if r.accepted]
        refused = [w for w, r in results.items() if not r.accepted]
        assert len(accepted) == 1 and len(refused) == 1, results
        assert results[refused[0]].reason == "this decision was already taken"
        [decision] = rows(Decision, Decision.request_id == pending.request_id)
        assert decision.approver_id == stakeholder_id(accepted[0])
        [request] = requests_of(case, DecisionKind.CLOSURE)
        assert request.status == DecisionRequestStatus.DECIDED
        [refusal] = audited(case, "decision.refused")
        assert refusal.actor == f"submitter:{refused[0]}"
        assert audited(case, "decision.taken")[-1].details["outcome"] == "no_basis"
        assert case.chain().ok


# --- closure: four eyes --------------------------------------------------------------------------


def test_closure_needs_a_second_different_approver(store: Store) -> None:
    case = to_closing(Clock())
    proposal = case.decide(DecisionKind.CLOSURE, closure_type="no_basis")
    assert proposal.approver == LEAD
    scope = case.confirmation_scope(proposal)

    pending = case.prepare(
        DecisionKind.CLOSURE_CONFIRMATION, scope=scope, exclude=[proposal.approver_id]
    )
    [request] = requests_of(case, DecisionKind.CLOSURE_CONFIRMATION)
    assert request.approver_ids == [str(stakeholder_id(SENIOR))]
    assert issued_code(pending.request_id, LEAD) is None
    assert "lena.lead proposes to close the case as **no_basis**" in pending.description

    # the proposer confirms anyway, with the code of her proposal: refused
    _, values = script(DecisionKind.CLOSURE_CONFIRMATION)
    own = case.submit(pending.request_id, LEAD, values, code="ABCD2345")
    assert not own.accepted and own.reason is not None and "designated" in own.reason
    assert case.case().state == CaseState.CLOSING

    # and if a confirmation were asked of her anyway, the rule itself refuses her
    unguarded = case.prepare(DecisionKind.CLOSURE_CONFIRMATION, scope=f"{scope}-x")
    assert sorted(requests_of(case, DecisionKind.CLOSURE_CONFIRMATION)[-1].approver_ids) == sorted(
        [str(stakeholder_id(LEAD)), str(stakeholder_id(SENIOR))]
    )
    self_confirmed = case.submit(unguarded.request_id, LEAD, values)
    assert not self_confirmed.accepted
    assert self_confirmed.reason == "the closure must be confirmed by a second, different approver"
    assert count(Decision, Decision.kind == DecisionKind.CLOSURE_CONFIRMATION) == 0
    assert case.case().state == CaseState.CLOSING

    # the senior approver confirms: closed, with two distinct approvers on record
    current = case.prepare(
        DecisionKind.CLOSURE_CONFIRMATION, scope=scope, exclude=[proposal.approver_id]
    )
    assert case.submit(current.request_id, SENIOR, values).accepted
    closed = case.case()
    assert closed.state == CaseState.CLOSED and closed.closure_type is not None
    assert closed.closure_type.value == "no_basis"
    assert case.chain().ok


def test_a_rejected_confirmation_sends_the_proposal_back(store: Store) -> None:
    case = to_closing(Clock())
    # a screened-out case has no plan: it cannot be closed as resolved
    pending = case.prepare(DecisionKind.CLOSURE)
    who, values = script(DecisionKind.CLOSURE)
    resolved = case.submit(pending.request_id, who, values)
    assert not resolved.accepted and resolved.reason is not None
    assert resolved.reason.startswith(
        "the closure criteria are not met: The plan has no milestones"
    )
    proposal = case.decide(DecisionKind.CLOSURE, closure_type="no_basis")
    scope = case.confirmation_scope(proposal)

    # rejecting needs a reason
    pending = case.prepare(
        DecisionKind.CLOSURE_CONFIRMATION, scope=scope, exclude=[proposal.approver_id]
    )
    bare = case.submit(pending.request_id, SENIOR, {"confirm": False})
    assert not bare.accepted and bare.reason == "give a reason when rejecting the closure"

    rejection = case.decide(
        DecisionKind.CLOSURE_CONFIRMATION,
        scope=scope,
        exclude=[proposal.approver_id],
        confirm=False,
        reason="The reporter was not heard; ask the NGO first.",
    )
    assert rejection.outcome == "rejected"
    assert case.case().state == CaseState.CLOSING
    _, first = requests_of(case, DecisionKind.CLOSURE)
    assert first.status == DecisionRequestStatus.SUPERSEDED

    # the closure is asked again, in a new round; the new proposal is confirmed separately
    again = case.prepare(DecisionKind.CLOSURE)
    assert again.decision is None and again.round == 3
    assert again.suspend_key != first.suspend_key
    second = case.submit(
        again.request_id, LEAD, script(DecisionKind.CLOSURE, closure_type="no_basis")[1]
    )
    assert second.accepted and second.decision is not None
    confirmed = case.decide(
        DecisionKind.CLOSURE_CONFIRMATION,
        scope=case.confirmation_scope(second.decision),
        exclude=[second.decision.approver_id],
    )
    assert confirmed.outcome == "confirmed" and case.case().state == CaseState.CLOSED
    assert case.chain().ok


def test_a_submission_to_a_replaced_round_is_refused_as_such(store: Store) -> None:
    case = start_sample_case(Clock())
    first = case.prepare(DecisionKind.SCREENING)
    who, values = script(DecisionKind.SCREENING)
    code = issued_code(first.request_id, who)
    refused = case.submit(first.request_id, who, {**values, "outcome": "rejected"}, code=code)
    assert not refused.accepted and not refused.attempt_failed
    late = case.submit(first.request_id, who, values, code=code)
    assert not late.accepted
    assert late.reason == "this request was replaced by a newer one; use the latest notification"
    # the round that replaced it is decided with the code sent for it
    current = case.prepare(DecisionKind.SCREENING)
    assert current.request_id != first.request_id
    assert case.submit(current.request_id, who, values).accepted


def test_an_inactive_approver_is_refused(store: Store) -> None:
    from models.tables import Stakeholder
    from tasks.store.db import unit_of_work

    case = start_sample_case(Clock())
    pending = case.prepare(DecisionKind.SCREENING)
    who, values = script(DecisionKind.SCREENING)
    code = issued_code(pending.request_id, who)
    with unit_of_work() as session:
        person = session.exec(select(Stakeholder).where(Stakeholder.key == who)).one()
        person.active = False
        session.add(person)
    result = case.submit(pending.request_id, who, values, code=code)
    assert not result.accepted
    assert result.reason == "the submitter is not a designated approver of this decision"
    assert rows(Decision, Decision.case_id == case.case().id) == []
