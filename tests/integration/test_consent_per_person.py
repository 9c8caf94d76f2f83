"""Consent is each person's own, on real stores: one person's withdrawal holds their actions and
silences every message about them, while the plan goes on for the others; the whole case holds
only when nobody's consent stands, or when the policy says any withdrawal holds it; a renewal
resumes what was held; the closure records each person's outcome.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from demo.catchers import MailCatcher
from demo.scripted import REPRESENTATIVE, settle
from flows.local.stack import free_port
from models.enums import (
    CaseState,
    CaseStatus,
    ClosureType,
    ConsentMethod,
    ConsentPurpose,
    DecisionKind,
    MilestoneStatus,
    NotificationStatus,
    Step,
)
from models.tables import AffectedPerson, Notification, PlanAction
from tasks.case_state import begin_case, open_step
from tasks.controls import ControlResult, renew_consent, withdraw_consent
from tasks.drain import deliver_due
from tasks.intake import open_case, read_report
from tasks.markdown import md_text
from tasks.monitoring.sweep import check_case, find_due
from tasks.reports.case_view import case_view
from tasks.steps.implement import MilestoneUpdateError, activate_plan, update_milestone
from tasks.store.db import read_only
from tasks.store.ledger import waive
from tasks.store.ledger_view import ledger_summary
from tests.conftest import ROOT, Store
from tests.integration.factories import (
    ADVOCATE,
    LEAD,
    SAMPLE_REPORT,
    Clock,
    SampleCase,
    load_sample_directory,
    plan,
    respond,
    rows,
    verify,
)


@pytest.fixture
def mail(monkeypatch: pytest.MonkeyPatch) -> Iterator[MailCatcher]:
    from tests.conftest import _clear_caches

    catcher = MailCatcher(port=free_port()).start()
    monkeypatch.setenv("REMEDY_SMTP_URL", catcher.url())
    monkeypatch.delenv("REMEDY_CHAT_OPS", raising=False)
    _clear_caches()
    yield catcher
    catcher.stop()


def hold_whole_case_policy(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Use the shipped policy with `hold_whole_case_on_withdrawal = true`."""
    from tests.conftest import _clear_caches

    shipped = (ROOT / "models" / "policy.toml").read_text(encoding="utf-8")
    changed = shipped.replace(
        "hold_whole_case_on_withdrawal = false", "hold_whole_case_on_withdrawal = true"
    )
    assert changed != shipped, "the shipped policy no longer says hold_whole_case_on_withdrawal"
    path = folder / "policy-hold-whole-case.toml"
    path.write_text(changed, encoding="utf-8")
    monkeypatch.setenv("REMEDY_POLICY_FILE", str(path))
    _clear_caches()


def two_person_case(clock: Clock) -> SampleCase:
    """The sample case with two affected persons (P-01, P-02), its plan under way."""
    load_sample_directory(clock.now)
    report = read_report(SAMPLE_REPORT, now=clock.now)
    report = report.model_copy(update={"affected_persons": report.affected_persons[:2]})
    ref = open_case(report, now=clock.tick(), actor="test").reference
    begin_case(ref, now=clock.tick())
    run_id = uuid.uuid4()
    ctx = open_step(ref, Step.VERIFY, flow_run_id=run_id, now=clock.tick())
    case = SampleCase(ref=ref, clock=clock, ctx=ctx, run_id=run_id)
    verify(case)
    respond(case)
    plan(case)
    case.enter(Step.IMPLEMENT)
    activate_plan(case.ref, now=clock.tick())
    assert case.case().state == CaseState.IMPLEMENTING
    return case


def actions(case: SampleCase) -> dict[str, PlanAction]:
    """The approved plan's actions by key (a revision would add versions; none here)."""
    return {a.key: a for a in rows(PlanAction, PlanAction.case_id == case.case().id)}


def persons(case: SampleCase) -> dict[uuid.UUID, str]:
    found = rows(AffectedPerson, AffectedPerson.case_id == case.case().id)
    return {p.id: p.pseudonym for p in found}


def statuses_of(case: SampleCase, pseudonym: str | None) -> dict[str, MilestoneStatus]:
    """The statuses of the actions for one person (None: the case's own actions)."""
    names = persons(case)
    return {
        k: a.status
        for k, a in actions(case).items()
        if (names.get(a.person_id) if a.person_id else None) == pseudonym
    }


def withdraw(case: SampleCase, pseudonym: str) -> ControlResult:
    return withdraw_consent(
        case.ref, pseudonym, purpose=ConsentPurpose.CASE_HANDLING, by=LEAD, now=case.clock.tick()
    )


def renew(case: SampleCase, pseudonym: str) -> ControlResult:
    return renew_consent(
        case.ref,
        pseudonym,
        purpose=ConsentPurpose.CASE_HANDLING,
        by=ADVOCATE,
        method=ConsentMethod.WRITTEN,
        now=case.clock.tick(),
    )


def sweep(now: datetime) -> list[str]:
    """One monitoring sweep (the flow's work without Prefect): the threshold keys it acted on."""
    found = find_due(now=now)
    sent: list[str] = []
    for ref, items in sorted(found.by_case.items()):
        sent += check_case(ref, items, now=now).sent
    return sent


def late(case: SampleCase) -> datetime:
    """A moment when every milestone of the plan is overdue and escalated."""
    last: date = max(a.due_on for a in actions(case).values())
    day = last + timedelta(days=5)
    return datetime(day.year, day.month, day.day, 9, tzinfo=UTC)


def about(keys: list[str], case: SampleCase, pseudonym: str) -> list[str]:
    """The sweep keys that name an action for this person."""
    ids = {str(a.id) for a in actions(case).values() if persons(case).get(a.person_id) == pseudonym}
    return [k for k in keys if k.split(":")[1] in ids]


def text_of(message: EmailMessage) -> str:
    parts = [str(message["Subject"])]
    for part in message.walk():
        if part.get_content_maintype() == "text":
            parts.append(str(part.get_content()))
    return "\n".join(parts)


def test_one_withdrawal_holds_that_persons_actions_and_the_plan_goes_on_for_the_other(
    store: Store, mail: MailCatcher
) -> None:
    case = two_person_case(Clock())
    p1, p2, own = (
        statuses_of(case, "P-01"),
        statuses_of(case, "P-02"),
        statuses_of(case, None),
    )
    assert p1 and p2 and own, "the sample plan has actions for each person and for the case"
    # reminders about both are in the outbox when P-01 withdraws: P-01's will be stopped
    first_due = min(a.due_on for a in actions(case).values()) - timedelta(days=1)
    early = sweep(datetime(first_due.year, first_due.month, first_due.day, 9, tzinfo=UTC))
    assert about(early, case, "P-01") and about(early, case, "P-02")

    result = withdraw(case, "P-01")
    assert not result.moved and result.state == CaseState.IMPLEMENTING
    assert sorted(result.milestones) == sorted(p1)
    assert (case.case().state, case.case().status) == (CaseState.IMPLEMENTING, CaseStatus.ACTIVE)
    assert set(statuses_of(case, "P-01").values()) == {MilestoneStatus.HELD}
    assert set(statuses_of(case, "P-02").values()) == {MilestoneStatus.ACTIVE}
    assert set(statuses_of(case, None).values()) == {MilestoneStatus.ACTIVE}

    # the sweep reminds and escalates the others' milestones, never the held ones
    sent = sweep(late(case))
    assert about(sent, case, "P-02") and not about(sent, case, "P-01")
    kinds = {k.split(":")[0] for k in about(sent, case, "P-02")}
    assert kinds == {"overdue", "escalated"}
    # a held milestone cannot move, only be given up; the other's can be verified
    held_key = sorted(p1)[0]
    with pytest.raises(MilestoneUpdateError, match="held"):
        update_milestone(
            case.ref, held_key, status=MilestoneStatus.DONE, by=LEAD, now=case.clock.tick()
        )
    other_key = sorted(p2)[0]
    update_milestone(
        case.ref,
        other_key,
        status=MilestoneStatus.VERIFIED,
        by=LEAD,
        evidence=["doc:1"],
        now=case.clock.tick(),
    )
    assert actions(case)[other_key].status == MilestoneStatus.VERIFIED

    # the case view shows the held milestones as held
    view = case_view(case.ref, now=case.clock.now, link=lambda _request: None)
    [row] = [line for line in view.splitlines() if line.startswith(f"| {md_text(held_key)} |")]
    assert row.endswith("| held |")

    # every message about P-01 is stopped, reminders included; messages about P-02 go out, and
    # none names P-01
    deliver_due(now=case.clock.tick())
    notes = rows(Notification, Notification.case_id == case.case().id)
    assert all(n.status == NotificationStatus.SUPPRESSED for n in notes if "P-01" in n.mentions)
    stopped = {n.event for n in notes if "P-01" in n.mentions}
    assert {"milestone_assigned", "milestone_due_soon"} <= stopped
    assert [n for n in notes if "P-02" in n.mentions and n.status == NotificationStatus.DELIVERED]
    assert mail.messages and not [m for m in mail.messages if "P-01" in text_of(m)]
    assert any("P-02" in text_of(m) for m in mail.messages)

    # renewal resumes what was held: active again, the owners told, reminded again
    result = renew(case, "P-01")
    assert not result.moved and sorted(result.milestones) == sorted(p1)
    assert set(statuses_of(case, "P-01").values()) == {MilestoneStatus.ACTIVE}
    resumed = [
        n
        for n in rows(Notification, Notification.case_id == case.case().id)
        if n.event == "milestone_assigned"
        and "P-01" in n.mentions
        and n.status == NotificationStatus.PENDING
    ]
    assert resumed
    sent = sweep(late(case) + timedelta(days=1))
    assert about(sent, case, "P-01")
    assert "milestones.resumed" in case.actions() and case.chain().ok


def test_the_last_withdrawal_holds_the_whole_case_and_a_renewal_resumes_it(store: Store) -> None:
    case = two_person_case(Clock())
    assert not withdraw(case, "P-01").moved
    result = withdraw(case, "P-02")
    assert result.moved and result.state == CaseState.ON_HOLD
    assert case.case().held_from == CaseState.IMPLEMENTING
    assert set(statuses_of(case, "P-02").values()) == {MilestoneStatus.HELD}
    assert sweep(late(case)) == []  # a held case is not reminded of anything

    result = renew(case, "P-02")
    assert result.moved and result.state == CaseState.IMPLEMENTING
    assert set(statuses_of(case, "P-02").values()) == {MilestoneStatus.ACTIVE}
    assert set(statuses_of(case, "P-01").values()) == {MilestoneStatus.HELD}
    sent = sweep(late(case))
    assert about(sent, case, "P-02") and not about(sent, case, "P-01")

    assert not renew(case, "P-01").moved
    assert set(statuses_of(case, "P-01").values()) == {MilestoneStatus.ACTIVE}
    assert case.chain().ok


def test_the_policy_can_hold_the_whole_case_on_any_withdrawal(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hold_whole_case_policy(tmp_path, monkeypatch)
    case = two_person_case(Clock())
    result = withdraw(case, "P-01")
    assert result.moved and result.state == CaseState.ON_HOLD
    assert set(statuses_of(case, "P-01").values()) == {MilestoneStatus.HELD}
    withdraw(case, "P-02")
    # under this policy the case resumes only once nobody's consent stands withdrawn
    assert renew(case, "P-01").state == CaseState.ON_HOLD
    assert set(statuses_of(case, "P-01").values()) == {MilestoneStatus.ACTIVE}
    assert set(statuses_of(case, "P-02").values()) == {MilestoneStatus.HELD}
    result = renew(case, "P-02")
    assert result.moved and result.state == CaseState.IMPLEMENTING
    assert set(statuses_of(case, "P-02").values()) == {MilestoneStatus.ACTIVE}


def test_the_closure_records_each_persons_outcome_withdrawal_included(store: Store) -> None:
    case = two_person_case(Clock())
    withdraw(case, "P-01")
    names = persons(case)
    # what P-01 is owed is waived with the reason; P-02's payments are made and confirmed
    with read_only() as session:
        owed = ledger_summary(session, case.case().id).lines
    for line in owed:
        if line.pseudonym == "P-01":
            waive(
                case.ref,
                "P-01",
                line.kind,
                line.currency,
                reason="P-01 withdrew consent for case handling.",
                by=LEAD,
                now=case.clock.tick(),
            )
    for key in actions(case):
        settle(case.ref, key, payer=LEAD, representative=REPRESENTATIVE, now=case.clock.tick())
    for key, action in sorted(actions(case).items()):
        if names.get(action.person_id) == "P-01":
            update_milestone(
                case.ref,
                key,
                status=MilestoneStatus.WAIVED,
                by=LEAD,
                note="P-01 withdrew consent for case handling.",
                now=case.clock.tick(),
            )
        else:
            update_milestone(
                case.ref,
                key,
                status=MilestoneStatus.VERIFIED,
                by=LEAD,
                evidence=[f"doc:{key}"],
                now=case.clock.tick(),
            )
    assert case.case().state == CaseState.CLOSING
    case.enter(Step.CLOSE)
    proposal = case.decide(DecisionKind.CLOSURE, closure_type=ClosureType.RESOLVED_ACCEPTED.value)
    case.decide(
        DecisionKind.CLOSURE_CONFIRMATION,
        scope=case.confirmation_scope(proposal),
        exclude=[proposal.approver_id],
    )
    assert case.case().state == CaseState.CLOSED
    [event] = [e for e in case.audit() if e.action == "closure.person_outcomes"]
    outcomes = event.details["persons"]
    assert outcomes["P-01"]["outcome"] == "withdrew_consent"
    assert outcomes["P-01"]["consent_withdrawn"] is True and outcomes["P-01"]["verified"] == 0
    assert outcomes["P-02"]["outcome"] == "remedied" and outcomes["P-02"]["undone"] == 0
    assert case.chain().ok
