"""The approval page's links on real stores, without a Prefect server: what a link shows, why one
is refused (in the page's words and status), and the audit rows a refusal leaves.

Showing a valid link writes nothing; a refused one adds one `link.refused` row to the case's
chain and changes nothing else. A token that names no link of ours is junk: it writes nothing when
refused, and is counted for the aggregated `link.junk` event of the `web` chain.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlmodel import col, select

from models.enums import DecisionKind, DecisionRequestStatus, LinkPurpose, MilestoneStatus
from models.tables import ApprovalLink, AuditEvent, DecisionRequest, PlanAction, Stakeholder
from tasks.decisions.requests import cancel_waiting, describe_request
from tasks.steps.implement import activate_plan, update_milestone
from tasks.store.audit import SYSTEM_CHAIN, verify_chain
from tasks.store.cases import get_case
from tasks.store.db import read_only, unit_of_work
from tasks.store.links import create_link, link_token
from tasks.web.ratelimit import OFFLINE, WEB_CHAIN
from tasks.web.refusals import ACTOR, LinkRefusedError
from tasks.web.resolve import (
    LinkView,
    claim,
    claim_link,
    decision_markdown,
    release_link,
    resolve_link,
)
from tests.conftest import Store
from tests.integration.factories import (
    LEAD,
    OBSERVER,
    SUPPLIER,
    Clock,
    SampleCase,
    script,
    stakeholder_id,
    start_sample_case,
    to_implementing,
)

# --- helpers (the page's other tests use them too) -----------------------------------------------


def decide_link(request_id: uuid.UUID, key: str) -> ApprovalLink:
    """The decide link a request's approver received."""
    with read_only() as session:
        return session.exec(
            select(ApprovalLink).where(
                ApprovalLink.request_id == request_id,
                ApprovalLink.stakeholder_id == stakeholder_id(key),
                ApprovalLink.purpose == LinkPurpose.DECIDE,
            )
        ).one()


def token_of(link: ApprovalLink) -> str:
    return link_token(link.id, link.expires_at)


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


def refusals(chain: str) -> list[AuditEvent]:
    """The `link.refused` rows of one audit chain, oldest first."""
    with read_only() as session:
        return list(
            session.exec(
                select(AuditEvent)
                .where(AuditEvent.chain == chain, AuditEvent.action == "link.refused")
                .order_by(col(AuditEvent.seq))
            ).all()
        )


def changed(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {t: after[t] - before[t] for t in after if after[t] != before[t]}


def waiting_screening(clock: Clock) -> tuple[SampleCase, uuid.UUID, ApprovalLink]:
    """A sample case waiting for its screening; the lead's link to it."""
    case = start_sample_case(clock)
    request_id = case.prepare(DecisionKind.SCREENING).request_id
    return case, request_id, decide_link(request_id, LEAD)


def owned_milestone(clock: Clock) -> tuple[SampleCase, PlanAction, ApprovalLink]:
    """A case implementing its plan; the supplier's document-return milestone and its link."""
    case = to_implementing(clock)
    assert activate_plan(case.ref, now=clock.tick()) > 0
    with read_only() as session:
        action = session.exec(
            select(PlanAction).where(
                PlanAction.case_id == case.case().id, PlanAction.key == "document-return"
            )
        ).one()
        link = session.exec(
            select(ApprovalLink).where(
                ApprovalLink.action_id == action.id, ApprovalLink.purpose == LinkPurpose.PROGRESS
            )
        ).one()
    assert action.owner_id == stakeholder_id(SUPPLIER) == link.stakeholder_id
    return case, action, link


def refused(token: str, clock: Clock) -> LinkRefusedError:
    with pytest.raises(LinkRefusedError) as caught:
        resolve_link(token, now=clock.now)
    return caught.value


# --- valid links ---------------------------------------------------------------------------------


def test_a_decide_link_shows_its_decision_and_writes_nothing(store: Store) -> None:
    clock = Clock()
    case, request_id, link = waiting_screening(clock)
    before = store.row_counts()

    view = resolve_link(token_of(link), now=clock.tick())

    request = request_row(request_id)
    assert view == LinkView(
        link_id=link.id,
        purpose=LinkPurpose.DECIDE,
        case_ref=case.ref,
        stakeholder_key=LEAD,
        expires_at=link.expires_at,
        title="Screen the allegation",
        request_id=request_id,
        kind=DecisionKind.SCREENING,
        round=1,
        due_at=request.due_at,
    )
    assert store.row_counts() == before and link_row(link.id).used_at is None


def test_a_progress_link_shows_its_milestone(store: Store) -> None:
    clock = Clock()
    case, action, link = owned_milestone(clock)
    before = store.row_counts()

    view = resolve_link(token_of(link), now=clock.tick())

    assert (view.purpose, view.case_ref, view.stakeholder_key) == (
        LinkPurpose.PROGRESS,
        case.ref,
        SUPPLIER,
    )
    assert view.title == "Report progress on milestone document-return"
    assert view.request_id is None and view.kind is None and view.round is None
    assert view.milestone is not None
    assert (view.milestone.key, view.milestone.title, view.milestone.due_on) == (
        action.key,
        action.title,
        action.due_on,
    )
    assert view.milestone.verification_method == action.verification_method
    assert (view.milestone.status, view.milestone.evidence) == (MilestoneStatus.ACTIVE, 0)
    assert store.row_counts() == before


def test_the_page_names_neither_approvers_nor_code(store: Store) -> None:
    clock = Clock()
    _, request_id, link = waiting_screening(clock)
    view = resolve_link(token_of(link), now=clock.now)
    full = describe_request(request_id).strip()
    assert "one-time approval code" in full.rpartition("\n\n")[2] and LEAD in full

    shown = decision_markdown(view)

    # the page knows whose link it is: it never hints at the key or code it could ask for
    assert "one-time approval code" not in shown and "Screen the allegation" in shown
    assert LEAD not in shown and "Decided by the case's case lead. Due " in shown


# --- tokens that are not ours --------------------------------------------------------------------


def _flip(text: str, index: int) -> str:
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1 :]


TAMPERINGS: dict[str, Callable[[str, str], str]] = {
    "another-body": lambda body, sig: f"{_flip(body, 5)}.{sig}",
    "forged-signature": lambda body, sig: f"{body}.{_flip(sig, len(sig) - 1)}",
    "no-signature": lambda body, sig: f"{body}{sig}",
    "no-body": lambda body, sig: f".{sig}",
    "non-ascii-body": lambda body, sig: f"ü{body[1:]}.{sig}",
    "non-ascii-signature": lambda body, sig: f"{body}.{sig[:-1]}é",
    "garbage": lambda body, sig: "%%%.<script>",
    "overlong": lambda body, sig: f"{body}.{sig}{'A' * 400}",
}


def junk_written(clock: Clock) -> list[AuditEvent]:
    """Write what was counted outside a served request; return the `web` chain's events."""
    OFFLINE.flush(clock.tick(), force=True)
    with read_only() as session:
        assert verify_chain(session, WEB_CHAIN).ok
        return list(
            session.exec(
                select(AuditEvent)
                .where(AuditEvent.chain == WEB_CHAIN)
                .order_by(col(AuditEvent.seq))
            ).all()
        )


@pytest.fixture
def no_junk_yet() -> None:
    """Forget junk other tests counted outside a served request (the tally is per process)."""
    OFFLINE.clear()


@pytest.mark.parametrize("make", TAMPERINGS.values(), ids=TAMPERINGS.keys())
def test_a_token_we_did_not_issue_is_refused_and_counted_as_junk(
    store: Store, no_junk_yet: None, make: Callable[[str, str], str]
) -> None:
    clock = Clock()
    case, request_id, link = waiting_screening(clock)
    body, _, signature = token_of(link).partition(".")
    before, refused_at = store.row_counts(), clock.now

    error = refused(make(body, signature), clock)

    assert (error.status, error.title, error.reason) == (400, "This link is not valid", "tampered")
    assert "Open the link from your message again" in error.message
    assert store.row_counts() == before  # junk writes nothing when refused
    [row] = junk_written(clock)
    assert (row.action, row.actor) == ("link.junk", ACTOR)
    assert row.subject_id is None and row.subject_type is None
    assert row.details == {
        "address": "-",  # refused outside a request the page serves
        "count": 1,
        "reasons": {"tampered": 1},
        "limited": 0,
        "since": refused_at.isoformat(timespec="seconds"),
    }
    assert refusals(case.ref) == [] and refusals(SYSTEM_CHAIN) == []
    assert link_row(link.id).used_at is None
    assert request_row(request_id).status == DecisionRequestStatus.WAITING


def test_a_signed_token_for_a_link_we_do_not_hold_is_refused_as_junk(
    store: Store, no_junk_yet: None
) -> None:
    clock = Clock()
    waiting_screening(clock)
    unknown = uuid.uuid4()
    before = store.row_counts()

    for _ in range(3):
        error = refused(link_token(unknown, clock.now + timedelta(days=1)), clock)
        assert (error.status, error.reason) == (400, "unknown-link")
    assert store.row_counts() == before
    [row] = junk_written(clock)
    assert (row.details["count"], row.details["reasons"]) == (3, {"unknown-link": 3})
    assert str(unknown) not in str(row.details)


# --- links that were ours ------------------------------------------------------------------------


def test_an_expired_link_is_refused(store: Store) -> None:
    clock = Clock()
    case, request_id, link = waiting_screening(clock)
    # the token's own expiry counts as much as the row's
    early = link_token(link.id, clock.now + timedelta(minutes=5))
    clock.tick(minutes=10)
    before = store.row_counts()

    first = refused(early, clock)
    clock.now = link.expires_at
    second = refused(token_of(link), clock)

    for error in (first, second):
        assert (error.status, error.title, error.reason) == (
            410,
            "This link has expired",
            "expired",
        )
    assert changed(before, store.row_counts()) == {"audit_event": 2}
    rows = refusals(case.ref)
    assert [r.details for r in rows] == [{"reason": "expired", "purpose": "decide"}] * 2
    assert all(r.subject_id == str(link.id) and r.actor == ACTOR for r in rows)
    assert link_row(link.id).used_at is None
    assert request_row(request_id).status == DecisionRequestStatus.WAITING


def test_a_used_link_is_refused_and_a_released_one_works_again(store: Store) -> None:
    clock = Clock()
    case, _, link = waiting_screening(clock)
    view = resolve_link(token_of(link), now=clock.tick())

    assert claim_link(link.id, now=clock.tick())
    assert link_row(link.id).used_at == clock.now
    assert not claim_link(link.id, now=clock.tick())  # only once, whoever comes second
    error = refused(token_of(link), clock)
    assert (error.status, error.title, error.reason) == (
        410,
        "This link was used already",
        "replayed",
    )
    with pytest.raises(LinkRefusedError, match="replayed"):
        claim(view, now=clock.tick())  # a form shown before it was used, sent after
    assert [r.details["reason"] for r in refusals(case.ref)] == ["replayed"] * 2

    release_link(link.id)
    assert link_row(link.id).used_at is None
    assert resolve_link(token_of(link), now=clock.tick()) == view


def test_a_link_to_a_decided_request_says_so(store: Store) -> None:
    clock = Clock()
    case, request_id, link = waiting_screening(clock)
    who, values = script(DecisionKind.SCREENING)
    assert who == LEAD and case.submit(request_id, LEAD, values).accepted

    error = refused(token_of(link), clock)

    assert (error.status, error.title, error.hint) == (409, "This decision was taken already", None)
    assert error.reason == "not-waiting:decided"
    [row] = refusals(case.ref)
    assert row.details == {"reason": "not-waiting:decided", "purpose": "decide"}


def test_a_link_to_a_superseded_request_points_to_the_newer_round(store: Store) -> None:
    clock = Clock()
    case, request_id, link = waiting_screening(clock)
    # a submission the rules refuse (rejected, with no reason) opens the next round
    _, values = script(DecisionKind.SCREENING, outcome="rejected", reason="")
    assert not case.submit(request_id, LEAD, values).accepted
    assert request_row(request_id).status == DecisionRequestStatus.SUPERSEDED

    error = refused(token_of(link), clock)

    assert (error.status, error.title) == (409, "A newer request replaced this one")
    assert error.reason == "not-waiting:superseded"
    assert error.hint is not None and "(round 2) is waiting for you" in error.hint
    assert [r.details["reason"] for r in refusals(case.ref)] == ["not-waiting:superseded"]
    # the lead's link to the new round works
    newer = case.prepare(DecisionKind.SCREENING).request_id
    view = resolve_link(token_of(decide_link(newer, LEAD)), now=clock.now)
    assert (view.request_id, view.round) == (newer, 2)


def test_a_link_to_a_cancelled_request_says_it_is_no_longer_needed(store: Store) -> None:
    clock = Clock()
    case, _, link = waiting_screening(clock)
    with unit_of_work() as session:
        stored = get_case(session, case.ref, lock=True)
        cancel_waiting(session, stored, now=clock.tick(), actor="test", why="put on hold")

    error = refused(token_of(link), clock)

    assert (error.status, error.title) == (409, "This decision is no longer needed")
    assert "The case left the step that asked for it" in error.message
    assert error.reason == "not-waiting:cancelled" and error.hint is None
    assert [r.details["reason"] for r in refusals(case.ref)] == ["not-waiting:cancelled"]


def test_a_link_made_out_to_someone_who_may_not_decide_is_refused(store: Store) -> None:
    clock = Clock()
    case, request_id, link = waiting_screening(clock)
    with unit_of_work() as session:
        foreign = create_link(
            session,
            purpose=LinkPurpose.DECIDE,
            case_id=case.case().id,
            stakeholder_id=stakeholder_id(OBSERVER),
            request_id=request_id,
            now=clock.now,
            expires_at=link.expires_at,
            code="NOTACODE",
        )
    before = store.row_counts()

    error = refused(token_of(foreign), clock)

    assert error.status == 403 and error.reason == "wrong-recipient"
    assert error.title == "This link was sent to someone who may not take this decision"
    assert changed(before, store.row_counts()) == {"audit_event": 1}
    [row] = refusals(case.ref)
    assert row.details == {"reason": "wrong-recipient", "purpose": "decide"}
    assert row.subject_id == str(foreign.id)

    # a designated approver who left the directory may not use theirs either
    with unit_of_work() as session:
        lead = session.get(Stakeholder, stakeholder_id(LEAD))
        assert lead is not None
        lead.active = False
        session.add(lead)
    assert refused(token_of(link), clock).reason == "wrong-recipient"


def test_a_progress_link_for_someone_else_or_a_settled_milestone_is_refused(
    store: Store,
) -> None:
    clock = Clock()
    case, action, link = owned_milestone(clock)
    with unit_of_work() as session:
        foreign = create_link(
            session,
            purpose=LinkPurpose.PROGRESS,
            case_id=action.case_id,
            stakeholder_id=stakeholder_id(OBSERVER),
            action_id=action.id,
            now=clock.now,
            expires_at=link.expires_at,
        )

    error = refused(token_of(foreign), clock)
    assert (error.status, error.reason) == (403, "wrong-recipient")
    assert error.title == "This link was sent to someone who may not report on this milestone"

    for status, by, evidence in (
        (MilestoneStatus.DONE, SUPPLIER, ["doc:receipts"]),
        (MilestoneStatus.VERIFIED, LEAD, []),
    ):
        update_milestone(
            case.ref, action.key, status=status, by=by, evidence=evidence, now=clock.tick()
        )
    error = refused(token_of(link), clock)
    assert (error.status, error.reason) == (409, "milestone-closed")
    assert error.title == "This milestone is not open for progress reports"
    assert error.message.startswith("Milestone document-return is verified and the case is")
    assert [r.details for r in refusals(case.ref)] == [
        {"reason": "wrong-recipient", "purpose": "progress"},
        {"reason": "milestone-closed", "purpose": "progress"},
    ]
