"""Deciding in another's name, tried as an attacker would (issue 10; docs/security.md).

The step records what a resumed run carries (tasks.decisions.submissions.record_submission), so
these tests submit through it exactly as a resume through the Prefect API does: whatever Prefect
holds of an earlier submission must be worth nothing, and a wrong guess must cost nobody else.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from models.enums import DecisionKind, DecisionRequestStatus, NotificationEvent
from models.security import ApprovalAttempt, SubmissionTicket
from models.tables import AuditEvent, Decision, DecisionRequest, Notification
from tasks.decisions.resume import issued_code
from tasks.decisions.tickets import (
    TICKET_PREFIX,
    AttemptFailedError,
    issue_ticket,
    redeem_code,
    reissue,
)
from tests.conftest import Store
from tests.integration.factories import (
    LEAD,
    SENIOR,
    Clock,
    SampleCase,
    count,
    rows,
    script,
    stakeholder_id,
    start_sample_case,
    to_closing,
)


def _requests(case: SampleCase, kind: DecisionKind) -> list[DecisionRequest]:
    found = rows(DecisionRequest, DecisionRequest.case_id == case.case().id)
    return sorted((r for r in found if r.kind == kind), key=lambda r: (r.round, r.tries))


def _audited(case: SampleCase, action: str) -> list[AuditEvent]:
    return [e for e in case.audit() if e.action == action]


def test_a_refused_submissions_code_cannot_be_replayed(store: Store) -> None:
    """The lead types her code into the Prefect UI with a decision the rules refuse; the code
    stays in Prefect's run input. Presented again (by anyone), it decides nothing."""
    case = start_sample_case(Clock())
    pending = case.prepare(DecisionKind.SCREENING)
    code = issued_code(pending.request_id, LEAD)
    assert code is not None
    _, values = script(DecisionKind.SCREENING)

    refused = case.submit(pending.request_id, LEAD, {**values, "outcome": "rejected"}, code=code)
    assert not refused.accepted and refused.reason is not None
    assert refused.reason.startswith("a reason is required")

    # the replay, on the round the refusal opened: what was read from Prefect is spent
    _, new = _requests(case, DecisionKind.SCREENING)
    replay = case.submit(new.id, LEAD, values, code=code)

    assert not replay.accepted and replay.attempt_failed
    assert replay.reason == "the approval code was used already"
    assert rows(Decision, Decision.case_id == case.case().id) == []
    [audited] = _audited(case, "decision.replay_refused")
    assert audited.actor == "system:remedy" and audited.details["named"] == LEAD
    assert case.chain().ok


def test_two_refused_submissions_cannot_make_one_persons_four_eyes(store: Store) -> None:
    """The senior approver's refused confirmation leaves her code in Prefect; the proposer, who
    can read run inputs, presents it in the senior's name to confirm her own proposal."""
    case = to_closing(Clock())
    proposal = case.decide(DecisionKind.CLOSURE, closure_type="no_basis")
    scope = case.confirmation_scope(proposal)
    pending = case.prepare(
        DecisionKind.CLOSURE_CONFIRMATION, scope=scope, exclude=[proposal.approver_id]
    )
    senior_code = issued_code(pending.request_id, SENIOR)
    assert senior_code is not None
    bare = case.submit(pending.request_id, SENIOR, {"confirm": False}, code=senior_code)
    assert not bare.accepted and bare.reason == "give a reason when rejecting the closure"

    _, _, values = (None, None, script(DecisionKind.CLOSURE_CONFIRMATION)[1])
    current = case.prepare(
        DecisionKind.CLOSURE_CONFIRMATION, scope=scope, exclude=[proposal.approver_id]
    )
    forged = case.submit(current.request_id, SENIOR, values, code=senior_code)

    assert not forged.accepted
    assert count(Decision, Decision.kind == DecisionKind.CLOSURE_CONFIRMATION) == 0
    assert case.case().state.value == "closing"
    assert len(_audited(case, "decision.replay_refused")) == 1


def test_a_wrong_code_changes_no_round_and_sends_nothing(store: Store) -> None:
    case = start_sample_case(Clock())
    pending = case.prepare(DecisionKind.SCREENING)
    _, values = script(DecisionKind.SCREENING)
    before = store.row_counts()

    wrong = case.submit(pending.request_id, LEAD, values, code="ZZZZ2222")

    assert not wrong.accepted and wrong.attempt_failed
    assert wrong.reason == "the approval code is wrong"
    [request] = _requests(case, DecisionKind.SCREENING)
    assert request.id == pending.request_id and request.status == DecisionRequestStatus.WAITING
    assert request.round == 1 and request.tries == 1
    assert request.suspend_key == f"{pending.suspend_key}-t1"  # Prefect takes no key twice
    after = store.row_counts()
    changed = {t: after[t] - before[t] for t in after if after[t] != before[t]}
    assert changed == {"approval_attempt": 1}  # no message, no audit event, no new round
    # the step asks again: the same request, under its new key; the right code still works
    again = case.prepare(DecisionKind.SCREENING)
    assert again.request_id == pending.request_id and again.suspend_key == request.suspend_key
    assert case.submit(pending.request_id, LEAD, values).accepted


def test_the_attempt_after_the_limit_is_locked_with_one_audit_event(store: Store) -> None:
    case = start_sample_case(Clock())
    pending = case.prepare(DecisionKind.SCREENING)
    _, values = script(DecisionKind.SCREENING)
    limit = 5  # models/policy.toml max_failed_attempts
    for attempt in range(limit):
        result = case.submit(pending.request_id, LEAD, values, code=f"WRONG{attempt:03d}")
        assert result.attempt_failed and result.reason == "the approval code is wrong"
    [locked] = _audited(case, "decision.attempts_locked")
    assert locked.details["failures"] == limit and locked.details["named"] == LEAD

    # the right code, the N+1th attempt: locked out of this request
    right = case.submit(pending.request_id, LEAD, values)
    assert not right.accepted and right.attempt_failed
    assert right.reason is not None and right.reason.startswith("too many failed attempts")
    assert len(_audited(case, "decision.attempts_locked")) == 1  # one event per lock
    assert count(Notification, Notification.event == NotificationEvent.DECISION_REFUSED) == 0
    [attempts] = rows(ApprovalAttempt, ApprovalAttempt.request_id == pending.request_id)
    assert attempts.failures == limit + 1
    # other approvers of the request are not locked out by it
    assert attempts.submitter == LEAD

    # the case lead's way out: a new code for the person, sent to them alone
    reissue(pending.request_id, LEAD, by=LEAD, now=case.clock.tick())
    assert rows(ApprovalAttempt, ApprovalAttempt.request_id == pending.request_id) == []
    fresh = issued_code(pending.request_id, LEAD)
    assert fresh is not None
    assert case.submit(pending.request_id, LEAD, values, code=fresh).accepted
    [reissued] = _audited(case, "decision.code_reissued")
    assert reissued.actor == f"stakeholder:{LEAD}" and reissued.details["was_locked"] is True
    assert case.chain().ok


def test_a_ticket_works_once_for_its_own_request_and_person(store: Store) -> None:
    clock = Clock()
    case = start_sample_case(clock)
    pending = case.prepare(DecisionKind.SCREENING)
    _, values = script(DecisionKind.SCREENING)
    ticket = issue_ticket(pending.request_id, LEAD, channel="approval-page", now=clock.tick())
    assert ticket.startswith(TICKET_PREFIX)
    [row] = rows(SubmissionTicket, SubmissionTicket.request_id == pending.request_id)
    assert row.token_hash != ticket and ticket not in row.token_hash  # only a keyed hash kept

    # in another approver's name, the ticket proves nothing
    other = case.submit(pending.request_id, SENIOR, values, code=ticket)
    assert not other.accepted and other.attempt_failed

    refused = case.submit(pending.request_id, LEAD, {**values, "outcome": "rejected"}, code=ticket)
    assert not refused.accepted and not refused.attempt_failed  # the rules refused it

    _, new = _requests(case, DecisionKind.SCREENING)
    replay = case.submit(new.id, LEAD, values, code=ticket)
    assert replay.attempt_failed and not replay.accepted
    assert rows(Decision, Decision.case_id == case.case().id) == []
    [taken] = [e for e in case.audit() if e.action == "decision.refused"][-1:]
    assert taken.actor == f"stakeholder:{LEAD}" and taken.details.get("reason")

    # a fresh ticket, from the page, decides; the audit says how the person proved themselves
    ok = issue_ticket(new.id, LEAD, channel="approval-page+passkey", now=clock.tick())
    assert case.submit(new.id, LEAD, values, code=ok).accepted
    [decided] = _audited(case, "decision.taken")
    assert decided.details["via"] == "approval-page+passkey"


def test_an_expired_ticket_proves_nothing(store: Store) -> None:
    clock = Clock()
    case = start_sample_case(clock)
    pending = case.prepare(DecisionKind.SCREENING)
    _, values = script(DecisionKind.SCREENING)
    ticket = issue_ticket(pending.request_id, LEAD, channel="approval-page", now=clock.now)
    late = case.submit(
        pending.request_id, LEAD, values, code=ticket, now=clock.now + timedelta(hours=1)
    )
    assert late.attempt_failed and late.reason is not None and "expired" in late.reason


def test_the_command_line_proves_the_code_to_remedy_not_prefect(store: Store) -> None:
    clock = Clock()
    case = start_sample_case(clock)
    pending = case.prepare(DecisionKind.SCREENING)
    _, values = script(DecisionKind.SCREENING)
    code = issued_code(pending.request_id, LEAD)
    assert code is not None

    # a wrong code goes no further than the case store: counted, nothing else
    before = count(Notification)
    try:
        redeem_code(pending.request_id, LEAD, "ZZZZ2222", channel="command-line", now=clock.now)
    except AttemptFailedError as exc:
        assert exc.reason == "the approval code is wrong"
    else:
        raise AssertionError("a wrong code was exchanged for a ticket")
    assert count(Notification) == before

    ticket = redeem_code(
        pending.request_id, LEAD, code, channel="command-line", now=clock.tick(), os_user="root"
    )
    assert ticket.startswith(TICKET_PREFIX) and code not in ticket
    assert case.submit(pending.request_id, LEAD, values, code=ticket).accepted
    [decided] = _audited(case, "decision.taken")
    assert decided.details["via"] == "command-line" and decided.details["os_user"] == "root"
    [decision] = rows(Decision, Decision.case_id == case.case().id)
    assert decision.approver_id == stakeholder_id(LEAD)
    assert uuid.UUID(str(decision.request_id)) == pending.request_id


def test_remedy_decide_with_a_wrong_code_submits_nothing_and_a_lead_reissues(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    from sqlmodel import select

    from flows.cli.common import os_user
    from models.tables import Stakeholder
    from tasks.store.db import unit_of_work
    from tests.integration.test_intake import run_cli

    case = start_sample_case(Clock())
    pending = case.prepare(DecisionKind.SCREENING)
    before = store.row_counts()

    code = run_cli(
        "decide", case.ref, "--as", LEAD, "--code", "ZZZZ2222", "--set", "outcome=accepted"
    )

    assert code == 1
    assert "nothing was submitted: the approval code is wrong" in capsys.readouterr().err
    after = store.row_counts()
    assert {t: after[t] - before[t] for t in after if after[t] != before[t]} == {
        "approval_attempt": 1
    }

    # only a case lead, as the directory maps the account running the command, may reissue
    refused = run_cli("decide", case.ref, "--reissue-for", LEAD)
    assert refused == 1 and "not a stakeholder in the directory" in capsys.readouterr().err
    with unit_of_work() as session:
        lead = session.exec(select(Stakeholder).where(Stakeholder.key == LEAD)).one()
        lead.os_users = [os_user()]
        session.add(lead)
    old = issued_code(pending.request_id, LEAD)
    assert run_cli("decide", case.ref, "--reissue-for", LEAD) == 0
    fresh = issued_code(pending.request_id, LEAD)
    assert fresh is not None and fresh != old
    [event] = _audited(case, "decision.code_reissued")
    assert event.actor == f"stakeholder:{LEAD}" and event.details["os_user"] == os_user()


def test_an_account_mapped_to_one_person_decides_only_as_them(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    from sqlmodel import select

    from flows.cli.common import os_user
    from models.tables import Stakeholder
    from tasks.store.db import unit_of_work
    from tests.integration.test_intake import run_cli

    case = start_sample_case(Clock())
    pending = case.prepare(DecisionKind.SCREENING)
    with unit_of_work() as session:
        lead = session.exec(select(Stakeholder).where(Stakeholder.key == LEAD)).one()
        lead.os_users = [os_user()]
        session.add(lead)
    senior_code = issued_code(pending.request_id, SENIOR) or "ABCD2345"
    before = store.row_counts()

    # lena's account, with a code someone forwarded her, in another approver's name
    code = run_cli(
        "decide", case.ref, "--as", SENIOR, "--code", senior_code, "--set", "outcome=accepted"
    )

    assert code == 1 and "decides only as them" in capsys.readouterr().err
    assert store.row_counts() == before
