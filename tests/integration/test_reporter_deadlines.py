"""Deadlines that protect reporters, on real SQLite and PostgreSQL stores and a real SMTP server.

The monitoring sweep, driven with an explicit `now` (an accelerated clock), reminds the case lead
before a reporter's acknowledgement or feedback deadline and escalates once it is missed, each
once; it tells a reporter who agreed to it that there is news when the status they see changes,
once per change. The case view, the portfolio and the lessons report show on time or late.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlmodel import select

from demo.catchers import MailCatcher
from flows.local.stack import free_port
from models.enums import DecisionKind, NotificationChannel, NotificationEvent, ReporterStatus, Step
from models.policy import ReporterDeadlines, load_policy, reporter_deadlines
from models.tables import Notification, ReminderSent, ReporterReceipt
from tasks.monitoring.sweep import check_case, find_due
from tasks.reporter.receipts import Filed
from tasks.reporter.staff import acknowledge, reply
from tasks.reports.case_view import case_view
from tasks.reports.lessons import lessons_figures
from tasks.reports.lessons_render import render_lessons
from tasks.reports.portfolio import portfolio
from tasks.store.db import read_only, unit_of_work
from tests.conftest import Store
from tests.integration.factories import (
    LEAD,
    SENIOR,
    Clock,
    SampleCase,
    dump_store,
    rows,
    stakeholder_id,
    start_sample_case,
    verify,
)
from tests.integration.test_reporter import CANARY, CONTACT, filed_on

REMIND = load_policy().reporters.remind_days_before


@pytest.fixture
def mail(monkeypatch: pytest.MonkeyPatch) -> Iterator[MailCatcher]:
    from tests.conftest import _clear_caches

    catcher = MailCatcher(port=free_port()).start()
    monkeypatch.setenv("REMEDY_SMTP_URL", catcher.url())
    monkeypatch.delenv("REMEDY_CHAT_OPS", raising=False)
    _clear_caches()
    yield catcher
    catcher.stop()


def sweep(now: datetime) -> list[str]:
    """One sweep's reporter keys (the flow's work, without Prefect): find, then check each case."""
    plan = find_due(now=now)
    sent: list[str] = []
    for ref, items in sorted(plan.by_case.items()):
        sent += check_case(ref, items, now=now).sent
    return [k for k in sent if k.startswith("reporter-")]


def kinds(keys: list[str]) -> list[str]:
    return [k.split(":")[0] for k in keys]


def news(keys: list[str]) -> list[str]:
    """The status news among a sweep's keys (a deadline's reminder may come in the same sweep)."""
    return [k for k in kinds(keys) if k == "reporter-news"]


def receipt_of(filed: Filed) -> ReporterReceipt:
    with read_only() as session:
        return session.exec(
            select(ReporterReceipt).where(ReporterReceipt.receipt_ref == filed.receipt_ref)
        ).one()


def deadlines_of(case: SampleCase, filed: Filed) -> ReporterDeadlines:
    return reporter_deadlines(filed.filed_at, case.case().severity, load_policy())


def notices(event: NotificationEvent) -> list[Notification]:
    return [
        n
        for n in rows(Notification, Notification.event == event.value)
        if n.channel == NotificationChannel.EMAIL
    ]


def deliver(now: datetime) -> None:
    from tasks.drain import deliver_due

    deliver_due(now=now)


def walk(timeline: list[tuple[datetime, list[str]]]) -> None:
    for now, expected in timeline:
        assert kinds(sweep(now)) == expected, now
        assert sweep(now) == []  # the same moment again sends nothing new
        deliver(now)


# --- the policy ---------------------------------------------------------------------------------


def test_the_policy_gives_seven_days_and_three_months_never_later_than_the_severity() -> None:
    policy = load_policy()
    filed = datetime.fromisoformat("2027-01-04T10:00:00+00:00")
    plain = reporter_deadlines(filed, None, policy)
    assert plain.acknowledge_by == filed + timedelta(days=7)
    assert plain.feedback_by == filed + timedelta(days=90)
    for severity, rules in policy.deadlines.items():
        due = reporter_deadlines(filed, severity, policy).acknowledge_by
        assert due == filed + min(timedelta(days=7), timedelta(hours=rules.acknowledge_hours))


# --- acknowledgement ----------------------------------------------------------------------------


def test_a_missed_acknowledgement_is_reminded_then_escalated_once_each(
    store: Store, mail: MailCatcher
) -> None:
    clock = Clock()
    case = start_sample_case(clock)
    filed = filed_on(case)
    due = deadlines_of(case, filed).acknowledge_by
    remind = max(due - timedelta(days=REMIND), filed.filed_at)
    walk(
        [
            (remind - timedelta(minutes=1), []),
            (remind, ["reporter-ack-due"]),
            (due - timedelta(minutes=1), []),
            (due + timedelta(minutes=1), ["reporter-ack-missed"]),
            (due + timedelta(days=20), []),
        ]
    )
    [reminded] = notices(NotificationEvent.REPORTER_ACK_DUE)
    assert reminded.recipient_id == stakeholder_id(LEAD)
    escalated = notices(NotificationEvent.REPORTER_ACK_MISSED)
    assert {n.recipient_id for n in escalated} == {stakeholder_id(SENIOR), stakeholder_id(LEAD)}
    assert len(escalated) == 2
    subjects = [str(m["Subject"]) for m in mail.messages]
    assert f"[{case.ref}] A reporter waits for an acknowledgement" in subjects
    assert f"[{case.ref}] Escalation: a reporter was not acknowledged in time" in subjects
    to_senior = [m for m in mail.messages if str(m["To"]) == "sofia.senior@acme.example"]
    assert [str(m["Subject"]) for m in to_senior] == [
        f"[{case.ref}] Escalamiento: una denuncia no recibió acuse de recibo a tiempo"
    ]
    text = "\n".join(m.as_string() for m in mail.messages)
    assert filed.receipt_ref in text and CONTACT not in text and filed.code not in text
    # nothing went to the reporter about a deadline of theirs
    assert notices(NotificationEvent.REPORTER_NEWS) == []
    # the acknowledgement comes late: nothing more about it, ever
    acknowledge(case.ref, by=LEAD, now=due + timedelta(days=21))
    assert sweep(due + timedelta(days=40)) == []


def test_an_acknowledged_report_sends_no_acknowledgement_reminder(store: Store) -> None:
    clock = Clock()
    case = start_sample_case(clock)
    filed = filed_on(case)
    acknowledge(case.ref, by=LEAD, now=clock.tick())
    due = deadlines_of(case, filed)
    for now in (due.acknowledge_by - timedelta(hours=1), due.acknowledge_by + timedelta(days=3)):
        assert sweep(now) == []
    assert notices(NotificationEvent.REPORTER_ACK_DUE) == []
    assert notices(NotificationEvent.REPORTER_ACK_MISSED) == []


# --- feedback -----------------------------------------------------------------------------------


def test_missed_feedback_is_reminded_then_escalated_once_each(
    store: Store, mail: MailCatcher
) -> None:
    clock = Clock()
    case = start_sample_case(clock)
    filed = filed_on(case)
    # the first reply acknowledges: it is not feedback yet
    reply(case.ref, "We received your report.", by=LEAD, now=clock.tick())
    due = deadlines_of(case, filed).feedback_by
    remind = due - timedelta(days=REMIND)
    walk(
        [
            (remind - timedelta(minutes=1), []),
            (remind, ["reporter-feedback-due"]),
            (due, []),
            (due + timedelta(minutes=1), ["reporter-feedback-missed"]),
            (due + timedelta(days=30), []),
        ]
    )
    assert len(notices(NotificationEvent.REPORTER_FEEDBACK_DUE)) == 1
    assert len(notices(NotificationEvent.REPORTER_FEEDBACK_MISSED)) == 2
    assert notices(NotificationEvent.REPORTER_ACK_DUE) == []  # the reply acknowledged it
    subjects = [str(m["Subject"]) for m in mail.messages]
    assert f"[{case.ref}] A reporter waits for feedback" in subjects
    assert f"[{case.ref}] Escalation: a reporter was not given feedback in time" in subjects


def test_a_reply_after_the_acknowledgement_is_feedback(store: Store) -> None:
    clock = Clock()
    case = start_sample_case(clock)
    filed = filed_on(case)
    acknowledge(case.ref, by=LEAD, now=clock.tick())
    reply(case.ref, "We are checking the site.", by=LEAD, now=clock.tick(days=10))
    due = deadlines_of(case, filed).feedback_by
    assert sweep(due - timedelta(hours=1)) == []
    assert sweep(due + timedelta(days=1)) == []


def test_a_status_that_moves_on_is_feedback(store: Store) -> None:
    clock = Clock()
    case = start_sample_case(clock)
    filed = filed_on(case, contact_ok=False)
    acknowledge(case.ref, by=LEAD, now=clock.tick())
    verify(case)  # remedy being planned: the reporter sees it on the follow-up page
    due = deadlines_of(case, filed).feedback_by
    assert kinds(sweep(due - timedelta(hours=1))) == ["reporter-news"]  # recorded, not told
    assert sweep(due + timedelta(days=1)) == []
    receipt = receipt_of(filed)
    assert receipt.status_told == ReporterStatus.PLANNING
    assert receipt.status_feedback_at is not None
    assert receipt.status_feedback_at <= clock.now  # when the case moved, not when it was seen


# --- news when the status changes ---------------------------------------------------------------


def test_a_status_change_is_news_once_and_only_with_contact_and_consent(
    store: Store, mail: MailCatcher
) -> None:
    clock = Clock()
    case = start_sample_case(clock)
    agreed = filed_on(case)  # an e-mail contact and consent
    silent = filed_on(case, contact_ok=False)
    # received -> being verified is where every report starts: no news
    assert news(sweep(clock.tick())) == []
    verify(case)
    assert news(sweep(clock.tick())) == ["reporter-news", "reporter-news"]  # both recorded...
    assert sweep(clock.tick()) == []
    [told] = [n for n in notices(NotificationEvent.REPORTER_NEWS)]  # ...one told
    assert told.receipt_id == receipt_of(agreed).id and told.recipient_id is None
    assert receipt_of(silent).status_told == ReporterStatus.PLANNING
    deliver(clock.tick())
    [message] = [m for m in mail.messages if str(m["To"]) == CONTACT]
    body = message.as_string()  # headers too: the outbox key travels as X-Remedy-Key
    assert case.ref not in body and "planning" not in body.lower() and CANARY not in body
    assert "follow-up" in body
    # nothing changed for the reporter: nothing more
    assert news(sweep(clock.tick(days=3))) == []
    assert len(notices(NotificationEvent.REPORTER_NEWS)) == 1
    assert CONTACT not in dump_store(store)


def test_an_unsubstantiated_verdict_is_news_once_even_after_the_case_closes(
    store: Store, mail: MailCatcher
) -> None:
    clock = Clock()
    case = start_sample_case(clock)
    filed = filed_on(case)
    case.decide(DecisionKind.SCREENING)
    case.decide(DecisionKind.SAFETY)
    case.decide(DecisionKind.VERIFICATION, outcome="unsubstantiated", reason="No evidence.")
    close(case)
    assert case.case().status.value == "closed"
    # the sweep first runs after the case closed: still told, once
    assert kinds(sweep(clock.tick())) == ["reporter-news"]
    assert sweep(clock.tick(days=1)) == []
    [told] = notices(NotificationEvent.REPORTER_NEWS)
    assert told.receipt_id == receipt_of(filed).id
    assert receipt_of(filed).status_told == ReporterStatus.CLOSED
    with read_only() as session:
        assert session.get(ReminderSent, f"reporter-news:{told.receipt_id}:closed") is not None


def test_a_crash_before_the_commit_leaves_the_news_for_the_next_sweep(store: Store) -> None:
    clock = Clock()
    case = start_sample_case(clock)
    filed = filed_on(case)
    verify(case)
    plan = find_due(now=clock.tick())
    [item] = [i for i in plan.by_case[case.ref] if i.key.startswith("reporter-news")]
    # a sweep that found the change but died before acting: nothing was recorded or told
    assert receipt_of(filed).status_told is None
    assert news(sweep(clock.tick())) == ["reporter-news"]
    assert len(notices(NotificationEvent.REPORTER_NEWS)) == 1
    # a stale plan handed to check_case again acts on nothing twice
    assert check_case(case.ref, [item], now=clock.tick()).sent == []
    assert len(notices(NotificationEvent.REPORTER_NEWS)) == 1


# --- the case view, the portfolio and the lessons report ----------------------------------------


def close(case: SampleCase) -> None:
    """Step 5: propose and confirm the closure the verdict asked for."""
    case.enter(Step.CLOSE)
    stored = case.case().closure_type
    proposal = case.decide(
        DecisionKind.CLOSURE, **({"closure_type": stored.value} if stored else {})
    )
    case.decide(
        DecisionKind.CLOSURE_CONFIRMATION,
        scope=case.confirmation_scope(proposal),
        exclude=[proposal.approver_id],
    )


def test_the_case_view_and_the_portfolio_show_on_time_and_late(store: Store) -> None:
    clock = Clock()
    case = start_sample_case(clock)
    late = filed_on(case)
    on_time = filed_on(case)
    due = deadlines_of(case, late).acknowledge_by
    acknowledge(case.ref, by=LEAD, now=clock.tick(), receipt_ref=on_time.receipt_ref)
    now = due + timedelta(days=2, hours=1)
    view = case_view(case.ref, now=now, link=lambda _: None)
    assert "## Reporters" in view
    [late_line] = [line for line in view.splitlines() if late.receipt_ref in line]
    [on_time_line] = [line for line in view.splitlines() if on_time.receipt_ref in line]
    assert "overdue by 2 days" in late_line and "on time" in on_time_line
    [row] = [r for r in portfolio(now=now)[0] if r["case"] == case.ref]
    assert row["reporter acknowledged"] == "overdue by 2 days"
    assert row["reporter feedback"].startswith("due ")
    acknowledge(case.ref, by=LEAD, now=now, receipt_ref=late.receipt_ref)
    view = case_view(case.ref, now=now, link=lambda _: None)
    [late_line] = [line for line in view.splitlines() if late.receipt_ref in line]
    assert "late by 2 days" in late_line
    [row] = [r for r in portfolio(now=now)[0] if r["case"] == case.ref]
    assert row["reporter acknowledged"] == "late by 2 days"
    # a case with no report filed through the page has nothing to show
    other = start_sample_case(clock, variant="(another site)", directory=False)
    [row] = [r for r in portfolio(now=now)[0] if r["case"] == other.ref]
    assert row["reporter acknowledged"] == "-" and row["reporter feedback"] == "-"
    assert "No report was filed with a receipt." in case_view(
        other.ref, now=now, link=lambda _: None
    )


def test_the_lessons_report_counts_reporters_on_time_and_late(store: Store) -> None:
    clock = Clock()
    case = start_sample_case(clock)
    prompt = filed_on(case)
    slow = filed_on(case)
    due = deadlines_of(case, slow).acknowledge_by
    acknowledge(case.ref, by=LEAD, now=clock.tick(), receipt_ref=prompt.receipt_ref)
    clock.now = due + timedelta(days=3, hours=2)
    acknowledge(case.ref, by=LEAD, now=clock.tick(), receipt_ref=slow.receipt_ref)
    case.decide(DecisionKind.SCREENING)
    case.decide(DecisionKind.SAFETY)
    case.decide(
        DecisionKind.VERIFICATION,
        outcome="unsubstantiated",
        reason="No evidence.",
        palermo_act="absent",
    )
    close(case)
    figures = lessons_figures(since=None, now=clock.tick())
    r = figures.reporters
    assert r.receipts == 2
    assert (r.acknowledged_on_time, r.acknowledged_late, r.not_acknowledged) == (1, 1, 0)
    assert r.worst_acknowledgement_days_late == 3
    # both were told the verdict (closed) before three months: feedback on time
    assert (r.feedback_on_time, r.feedback_late, r.no_feedback) == (2, 0, 0)
    for fmt in ("md", "html"):
        text = render_lessons(figures, fmt)  # type: ignore[arg-type]
        assert "Reporters answered on time" in text
        assert "1 late (at worst 3 days)" in text
    # a report acknowledged by nobody still counts, as not acknowledged
    with unit_of_work() as session:
        receipt = session.get(ReporterReceipt, receipt_of(slow).id)
        assert receipt is not None
        receipt.acknowledged_at = None
        session.add(receipt)
    r = lessons_figures(since=None, now=clock.tick()).reporters
    assert (r.acknowledged_on_time, r.acknowledged_late, r.not_acknowledged) == (1, 0, 1)
