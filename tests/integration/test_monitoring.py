"""The monitoring sweep's work on real stores, with a controllable clock and a real SMTP server."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import select

from demo.catchers import MailCatcher
from flows.local.stack import free_port
from models.enums import CaseState, DecisionKind, MilestoneStatus, NotificationChannel
from models.tables import AuditEvent, Notification, PlanAction, ReminderSent
from tasks.monitoring.sweep import SWEEP, check_case, completed_plans, find_due
from tasks.reports.portfolio import plan_progress, portfolio
from tasks.steps.implement import (
    activate_plan,
    decide_extension,
    move_to_closure,
    request_extension,
    update_milestone,
)
from tests.conftest import Store
from tests.integration.factories import (
    LEAD,
    SENIOR,
    Clock,
    SampleCase,
    milestones,
    rows,
    start_sample_case,
    to_implementing,
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


def at(day: date, hour: int = 9) -> datetime:
    from datetime import UTC

    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def sweep(now: datetime) -> list[str]:
    """One sweep's reminders (the flow's work, without Prefect): find, then check each case."""
    plan = find_due(now=now)
    sent: list[str] = []
    for ref, items in sorted(plan.by_case.items()):
        sent += check_case(ref, items, now=now).sent
    return sent


def only_milestone(case: SampleCase, key: str, due: date) -> PlanAction:
    """Keep one milestone in play: every other one is due far in the future."""
    activate_plan(case.ref, now=case.clock.tick())
    from tasks.store.db import unit_of_work

    with unit_of_work() as session:
        for action in session.exec(select(PlanAction).where(PlanAction.case_id == case.case().id)):
            action.due_on = due if action.key == key else due + timedelta(days=400)
            session.add(action)
    [action] = rows(PlanAction, PlanAction.key == key, PlanAction.case_id == case.case().id)
    return action


def kinds(keys: list[str]) -> list[str]:
    return [
        k.split(":")[0] + (":" + k.split(":")[-1] if k.startswith("escalated") else "")
        for k in keys
    ]


def notices(event: str) -> list[Notification]:
    return [
        n
        for n in rows(Notification, Notification.event == event)
        if n.channel == NotificationChannel.EMAIL
    ]


def test_a_milestone_walks_through_due_soon_overdue_escalated_and_done(
    store: Store, mail: MailCatcher
) -> None:
    from tasks.drain import deliver_due

    case = to_implementing(Clock())
    key = "document-return"
    due = date(2027, 1, 15)
    action = only_milestone(case, key, due)
    owner_id = action.owner_id
    # grace 2 days, repeat every 7 (models/policy.toml [milestones])
    timeline = [
        (due - timedelta(days=10), []),
        (due - timedelta(days=2), ["due-soon"]),
        (due - timedelta(days=1), []),
        (due, ["due-today"]),
        (due + timedelta(days=1), ["overdue"]),
        (due + timedelta(days=2), []),
        (due + timedelta(days=3), ["escalated:1"]),
        (due + timedelta(days=9), []),
        (due + timedelta(days=10), ["escalated:2"]),
    ]
    for day, expected in timeline:
        now = at(day)
        assert kinds(sweep(now)) == expected, day
        assert sweep(now) == []  # the same moment again sends nothing new
        deliver_due(now=now)
    assert len(notices("milestone_due_soon")) == 2  # due soon, due today: to the owner
    assert {n.recipient_id for n in notices("milestone_due_soon")} == {owner_id}
    overdue = notices("milestone_overdue")
    assert len(overdue) == 2  # the owner and the case lead, once
    escalated = notices("milestone_escalated")
    assert Counter(n.context["level"] for n in escalated if n.recipient_id) == Counter(
        {1: 2, 2: 2}  # senior approver and case lead, per level
    )
    subjects = [str(m["Subject"]) for m in mail.messages]
    assert any("Milestone due soon" in s for s in subjects)
    assert any("Escalation: milestone overdue" in s for s in subjects)
    to_senior = [m for m in mail.messages if str(m["To"]) == "sofia.senior@acme.example"]
    # in her locale (es), twice: escalation 1 and 2
    assert sum("Escalamiento: hito atrasado" in str(m["Subject"]) for m in to_senior) == 2

    # it is done: nothing more, ever
    update_milestone(
        case.ref,
        key,
        status=MilestoneStatus.DONE,
        by=LEAD,
        evidence=["doc:x"],
        now=at(due + timedelta(days=11)),
    )
    assert sweep(at(due + timedelta(days=30))) == []
    assert case.chain().ok
    checks = [e for e in case.audit() if e.action == "monitoring.checked"]
    assert len(checks) == 5  # one per sweep that sent something


def test_an_extension_moves_the_reminders_to_the_new_date(store: Store) -> None:
    case = to_implementing(Clock())
    key = "document-return"
    due = date(2027, 1, 15)
    action = only_milestone(case, key, due)
    owner = {k: o for k, o in milestones(case.ref)}[key]
    assert owner is not None and action.owner_id is not None
    assert kinds(sweep(at(due + timedelta(days=1)))) == ["overdue"]
    new_due = due + timedelta(days=20)
    with pytest.raises(Exception, match="only the milestone's owner"):
        request_extension(case.ref, key, to=new_due, reason="x", by=LEAD, now=at(due))
    request_extension(
        case.ref,
        key,
        to=new_due,
        reason="Documents held by a court",
        by=owner,
        now=at(due + timedelta(days=1)),
    )
    with pytest.raises(Exception, match="only the case lead"):
        decide_extension(case.ref, key, approve=True, by=owner, now=at(due + timedelta(days=1)))
    assert (
        decide_extension(case.ref, key, approve=True, by=LEAD, now=at(due + timedelta(days=2)))
        == new_due
    )
    # no escalation for the old date; reminders follow the new one
    assert sweep(at(due + timedelta(days=5))) == []
    assert kinds(sweep(at(new_due - timedelta(days=1)))) == ["due-soon"]
    actions = [e.action for e in case.audit()]
    assert "milestone.extension_requested" in actions and "milestone.extended" in actions


def test_a_waiting_decision_is_reminded_then_escalated_once_per_threshold(store: Store) -> None:
    clock = Clock()
    case = start_sample_case(clock)
    pending = case.prepare(DecisionKind.SCREENING)
    assert pending.due_at is not None
    assert sweep(pending.due_at - timedelta(hours=1)) == []
    assert kinds(sweep(pending.due_at + timedelta(hours=1))) == ["decision-reminder"]
    assert sweep(pending.due_at + timedelta(hours=2)) == []
    escalations = kinds(sweep(pending.due_at + timedelta(days=3)))
    assert escalations == ["decision-escalated"]
    reminder = notices("decision_reminder")
    assert [n.recipient_id for n in reminder] == [rows_key(LEAD)]
    assert "link_id" in reminder[0].context and "code_ciphertext" in reminder[0].context
    escalated = notices("decision_escalated")
    assert {n.recipient_id for n in escalated} == {rows_key(SENIOR), rows_key(LEAD)}
    # decided: the sweep lets it be
    case.decide(DecisionKind.SCREENING)
    assert sweep(pending.due_at + timedelta(days=30)) == []


def rows_key(key: str):  # type: ignore[no-untyped-def]
    from tests.integration.factories import stakeholder_id

    return stakeholder_id(key)


def test_a_sweep_with_nothing_due_sends_nothing(store: Store) -> None:
    clock = Clock()
    refs = []
    for n in range(3):
        case = to_implementing(clock) if n == 0 else None
        if case is None:
            from tests.integration.factories import plan, respond, verify

            case = start_sample_case(clock, variant=f"case {n}", directory=False)
            verify(case)
            respond(case)
            plan(case)
        activate_plan(case.ref, now=clock.tick())
        refs.append(case.ref)
    before = store.row_counts()
    far = clock.now - timedelta(days=5)  # every milestone is due beyond the 3-day horizon
    plan_ = find_due(now=far)
    assert plan_.by_case == {} and plan_.candidates == 0
    assert sweep(far) == []
    assert store.row_counts() == before
    table, total = portfolio(now=far)
    assert total == 3 and {r["case"] for r in table} == set(refs)
    assert all(r["overdue"] == 0 and r["step"] == 4 for r in table)
    assert all(r["milestones done"].startswith("0/") for r in table)
    assert plan_progress(refs[0]) == 0.0


def test_a_completed_plan_moves_to_closure_once(store: Store) -> None:
    from tasks.store.db import unit_of_work

    case = to_implementing(Clock())
    activate_plan(case.ref, now=case.clock.tick())
    with unit_of_work() as session:  # every milestone verified, but the move did not happen
        session.execute(
            sa.update(PlanAction)
            .where(PlanAction.case_id == case.case().id)  # type: ignore[arg-type]
            .values(status=MilestoneStatus.VERIFIED)
        )
    assert completed_plans() == [case.ref]
    assert move_to_closure(case.ref, now=case.clock.tick(), actor=SWEEP)
    assert case.case().state == CaseState.CLOSING
    assert completed_plans() == [] and not move_to_closure(
        case.ref, now=case.clock.tick(), actor=SWEEP
    )
    assert plan_progress(case.ref) == 100.0


# --- a chosen moment, only on a store that says it is a simulation -------------------------------


def _simulation_marks() -> list[AuditEvent]:
    return [
        e
        for e in rows(AuditEvent, AuditEvent.chain == "system")
        if e.action.startswith("store.simulation")
    ]


def test_a_store_becomes_a_simulation_only_on_purpose_and_the_mark_is_audited(
    store: Store,
) -> None:
    from flows.cli.common import actor
    from tasks.store.audit import verify_chain
    from tasks.store.db import read_only
    from tasks.store.settings import store_is_simulation
    from tests.integration.test_intake import run_cli

    assert not store_is_simulation()
    start_sample_case(Clock())
    assert run_cli("db", "simulation", "on") == 1  # the store holds a case: --force, or nothing
    assert not store_is_simulation() and _simulation_marks() == []
    assert run_cli("db", "simulation", "on", "--force") == 0
    assert store_is_simulation()
    assert run_cli("db", "simulation", "on", "--force") == 0  # already one: nothing to record
    assert run_cli("db", "simulation") == 0  # says which it is
    assert run_cli("db", "simulation", "off") == 0
    assert not store_is_simulation()
    marks = _simulation_marks()
    assert [(e.action, e.details) for e in marks] == [
        ("store.simulation_on", {"cases": 1, "forced": True}),
        ("store.simulation_off", {"cases": 1, "forced": False}),
    ]
    assert all(e.actor == actor() for e in marks)  # the account that typed the command
    with read_only() as session:
        assert verify_chain(session, "system").ok


def test_a_sweep_at_a_chosen_moment_needs_a_simulation_store(store: Store) -> None:
    from tasks.context import utcnow
    from tasks.orchestration.sweep_tasks import _simulated_time
    from tasks.store.settings import SimulationNotAllowed, mark_simulation
    from tests.integration.test_intake import run_cli

    case = to_implementing(Clock())
    due = date(2027, 1, 15)
    only_milestone(case, "document-return", due)
    later = at(due + timedelta(days=5))
    before = store.row_counts()
    assert run_cli("monitor", "--now", later.isoformat()) == 1
    with pytest.raises(SimulationNotAllowed, match="not a simulation"):
        _simulated_time(later)
    assert store.row_counts() == before  # refused before anything was written

    assert mark_simulation(True, actor="test", now=utcnow(), force=True)
    assert _simulated_time(later) == later


def test_a_reminder_key_records_when_it_was_really_sent(store: Store) -> None:
    """A simulated sweep acts as of its moment; the key says when the reminder went out."""
    from tasks.context import utcnow

    case = to_implementing(Clock())
    due = date(2031, 6, 1)
    action = only_milestone(case, "document-return", due)
    started = utcnow()
    assert kinds(sweep(at(due + timedelta(days=1)))) == ["overdue"]
    [key] = rows(ReminderSent, ReminderSent.case_id == case.case().id)
    assert key.key == f"overdue:{action.id}:{due}"
    assert started <= key.sent_at <= utcnow()
    [check] = [e for e in case.audit() if e.action == "monitoring.checked"]
    assert check.at == at(due + timedelta(days=1))  # the audit tells the simulated moment


def test_no_deployment_takes_a_moment_from_whoever_starts_it() -> None:
    """An API client starts sweeps, steps and drains; each runs on the wall clock."""
    from flows.serve import load_flow
    from tasks.orchestration.deployments import DEPLOYMENTS

    for deployment in DEPLOYMENTS:
        parameters = set(load_flow(deployment).parameters.properties)
        assert not parameters & {"now", "at", "today", "moment"}, deployment.name
