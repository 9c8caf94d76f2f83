"""A reporter's receipt and way back, on real SQLite and PostgreSQL stores and a real SMTP server.

Filing gives a receipt whose code (and only it) opens the follow-up; the status follows the case
in the reporter's words; the thread is encrypted at rest; the case team hears that the reporter
wrote, the reporter that there is news, and neither message carries what was written.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import select

from demo.catchers import MailCatcher
from flows.local.stack import free_port
from models.enums import (
    CaseState,
    ClosedReason,
    ClosureType,
    DecisionKind,
    NotificationEvent,
    NotificationStatus,
    ReporterStatus,
    ScreeningOutcome,
    Step,
)
from models.intake import ReportIn
from models.tables import AuditEvent, Notification, ReporterMessage, ReporterReceipt
from tasks.actors import Operator
from tasks.intake import read_report
from tasks.reporter.receipts import (
    MESSAGE_MAX_CHARS,
    Filed,
    file_report,
    follow_up,
    new_code,
    reporter_writes,
)
from tasks.reporter.staff import ReporterError, ReporterNotAllowed, acknowledge, reply, set_note
from tasks.reporter.status import closed_reason, reporter_status
from tasks.steps.implement import activate_plan
from tasks.store.db import read_only
from tests.conftest import Store
from tests.integration.factories import (
    ADVOCATE,
    LEAD,
    SAMPLE_REPORT,
    SENIOR,
    Clock,
    SampleCase,
    dump_store,
    load_sample_directory,
    plan,
    respond,
    rows,
    stakeholder_id,
    start_sample_case,
    verify,
)
from tests.integration.test_cli_actor import map_me
from tests.integration.test_intake import run_cli

CANARY = "Canary-Tshibanda-7731 saw the guards"
CONTACT = "intake@safepassage.example"  # the sample report's reporter contact
CODE_SHAPE = re.compile(r"^[A-Z2-7]{4}(-[A-Z2-7]{4}){6}$")
REF_SHAPE = re.compile(r"^R-\d{4}-[A-Z2-7]{4}-[A-Z2-7]{4}$")


@pytest.fixture
def mail(monkeypatch: pytest.MonkeyPatch) -> Iterator[MailCatcher]:
    from tests.conftest import _clear_caches

    catcher = MailCatcher(port=free_port()).start()
    monkeypatch.setenv("REMEDY_SMTP_URL", catcher.url())
    _clear_caches()
    yield catcher
    catcher.stop()


def sample_report(clock: Clock, **changes: object) -> ReportIn:
    report = read_report(SAMPLE_REPORT, now=clock.now)
    return report.model_copy(update=changes) if changes else report


def file_sample(clock: Clock, *, contact_ok: bool = True, **changes: object) -> Filed:
    return file_report(
        sample_report(clock, **changes), now=clock.tick(), actor="test", contact_ok=contact_ok
    )


def case_of(filed: Filed) -> str:
    with read_only() as session:
        receipt = session.exec(
            select(ReporterReceipt).where(ReporterReceipt.receipt_ref == filed.receipt_ref)
        ).one()
        from models.tables import RemediationCase

        case = session.get(RemediationCase, receipt.case_id)
        assert case is not None
        return case.reference


def filed_on(case: SampleCase, *, contact_ok: bool = True) -> Filed:
    """A report filed again through the page: it joins the sample case with a receipt."""
    filed = file_sample(case.clock, contact_ok=contact_ok)
    assert case_of(filed) == case.ref
    return filed


def status(filed: Filed) -> tuple[ReporterStatus, ClosedReason | None]:
    seen = follow_up(filed.code, now=Clock().now)
    assert seen is not None
    return seen.status, seen.closed_reason


def deliver(clock: Clock) -> None:
    from tasks.drain import deliver_due

    deliver_due(now=clock.tick())


def bodies(message: object) -> str:
    from email.message import EmailMessage

    assert isinstance(message, EmailMessage)
    parts = [p.get_content() for p in message.walk() if p.get_content_maintype() == "text"]
    return f"{message['Subject']}\n" + "\n".join(parts)


# --- filing and the code -------------------------------------------------------------------------


def test_filing_gives_a_receipt_whose_code_opens_the_follow_up(store: Store) -> None:
    clock = Clock()
    load_sample_directory(clock.now)
    filed = file_sample(clock)
    assert CODE_SHAPE.match(filed.code) and REF_SHAPE.match(filed.receipt_ref)
    assert filed.filed_at.tzinfo is not None
    seen = follow_up(filed.code, now=clock.tick())
    assert seen is not None
    assert seen.receipt_ref == filed.receipt_ref and seen.status == ReporterStatus.RECEIVED
    assert seen.closed_reason is None and seen.acknowledged_at is None and seen.messages == []
    # typed as a person types it: lower case, spaces instead of dashes, 0 for O
    typed = filed.code.lower().replace("-", " ").replace("o", "0")
    assert follow_up(f"  {typed} ", now=clock.tick()) == seen
    # the code is kept only as a keyed hash; the contact only encrypted
    everything = dump_store(store)
    assert filed.code not in everything and filed.code.replace("-", "") not in everything
    assert CONTACT not in everything
    [event] = [e for e in rows(AuditEvent) if e.action == "reporter.filed"]
    assert event.chain == case_of(filed) and filed.code not in str(event.details)
    assert event.details["receipt_ref"] == filed.receipt_ref


def test_a_wrong_code_and_an_unknown_code_give_nothing(store: Store) -> None:
    clock = Clock()
    load_sample_directory(clock.now)
    filed = file_sample(clock)
    last = filed.code[-1]
    wrong = filed.code[:-1] + ("A" if last != "A" else "B")
    for code in (wrong, new_code(), "", "R-2026-AAAA-BBBB", filed.receipt_ref):
        assert follow_up(code, now=clock.tick()) is None
        assert reporter_writes(code, "hello", now=clock.tick()) is False
    assert rows(ReporterMessage) == []


def test_a_duplicate_report_gets_its_own_receipt_on_the_case_it_joins(store: Store) -> None:
    clock = Clock()
    load_sample_directory(clock.now)
    first, second = file_sample(clock), file_sample(clock)
    assert case_of(first) == case_of(second)
    assert first.code != second.code and first.receipt_ref != second.receipt_ref
    assert len(rows(ReporterReceipt)) == 2
    # each code opens its own thread only
    assert reporter_writes(first.code, CANARY, now=clock.tick())
    assert [m.text for m in follow_up(first.code, now=clock.now).messages] == [CANARY]  # type: ignore[union-attr]
    assert follow_up(second.code, now=clock.now).messages == []  # type: ignore[union-attr]
    # with two receipts, a reply must name one
    with pytest.raises(ReporterError, match="--receipt"):
        reply(case_of(first), "Thank you.", by=LEAD, now=clock.tick())
    reply(case_of(first), "Thank you.", by=LEAD, now=clock.tick(), receipt_ref=second.receipt_ref)
    assert [m.text for m in follow_up(second.code, now=clock.now).messages] == ["Thank you."]  # type: ignore[union-attr]


# --- the status ----------------------------------------------------------------------------------


def test_the_status_follows_the_case_through_its_states(store: Store) -> None:
    clock = Clock()
    case = start_sample_case(clock)
    filed = filed_on(case)
    assert case.case().state == CaseState.VERIFYING
    assert status(filed) == (ReporterStatus.BEING_VERIFIED, None)
    verify(case)
    assert status(filed) == (ReporterStatus.PLANNING, None)
    respond(case)
    assert case.case().state == CaseState.DESIGNING_PLAN
    assert status(filed) == (ReporterStatus.PLANNING, None)
    plan(case)
    assert case.case().state == CaseState.IMPLEMENTING  # the approved plan is under way
    assert status(filed) == (ReporterStatus.UNDER_WAY, None)
    case.enter(Step.IMPLEMENT)
    activate_plan(case.ref, now=clock.tick())
    assert status(filed) == (ReporterStatus.UNDER_WAY, None)


def test_an_unsubstantiated_verdict_closes_for_the_reporter_with_the_note(store: Store) -> None:
    clock = Clock()
    case = start_sample_case(clock)
    filed = filed_on(case)
    case.decide(DecisionKind.SCREENING)
    case.decide(DecisionKind.SAFETY)
    case.decide(DecisionKind.VERIFICATION, outcome="unsubstantiated", reason="No evidence.")
    assert case.case().state == CaseState.CLOSING
    assert status(filed) == (ReporterStatus.CLOSED, ClosedReason.NOT_SUBSTANTIATED)
    set_note(case.ref, "We found no sign of forced labour at the site.", by=LEAD, now=clock.tick())
    seen = follow_up(filed.code, now=clock.tick())
    assert seen is not None
    assert seen.reason_note == "We found no sign of forced labour at the site."
    assert "forced labour" not in dump_store(store)  # the note is encrypted too


def test_a_screened_out_duplicate_closes_as_a_duplicate(store: Store) -> None:
    clock = Clock()
    first = start_sample_case(clock)
    case = start_sample_case(clock, variant="(reported again)", directory=False)
    filed = file_sample(clock, description=f"{sample_report(clock).description} (reported again)")
    assert case_of(filed) == case.ref
    case.decide(
        DecisionKind.SCREENING, outcome="duplicate", duplicate_of=first.ref, reason="Same site."
    )
    assert status(filed) == (ReporterStatus.CLOSED, ClosedReason.DUPLICATE)


@pytest.mark.parametrize(
    ("held_from", "seen"),
    [
        (CaseState.VERIFYING, ReporterStatus.BEING_VERIFIED),
        (CaseState.DESIGNING_PLAN, ReporterStatus.PLANNING),
        (CaseState.IMPLEMENTING, ReporterStatus.UNDER_WAY),
        (None, ReporterStatus.BEING_VERIFIED),
    ],
)
def test_a_held_case_shows_the_state_it_was_held_in(
    held_from: CaseState | None, seen: ReporterStatus
) -> None:
    held = reporter_status(CaseState.ON_HOLD, held_from=held_from, closure_type=None)
    assert held == seen
    assert closed_reason(held, closure_type=None, screening=None) is None


def test_a_closing_case_is_closed_for_the_reporter_only_with_a_closure_type() -> None:
    closing = reporter_status(CaseState.CLOSING, held_from=None, closure_type=None)
    assert closing == ReporterStatus.UNDER_WAY  # a completed plan under review
    for closure, reason in [
        (ClosureType.NO_BASIS, ClosedReason.NOT_SUBSTANTIATED),
        (ClosureType.RESOLVED_ACCEPTED, ClosedReason.REMEDY_DELIVERED),
        (ClosureType.REFERRED_EXTERNAL, ClosedReason.REFERRED_ELSEWHERE),
        (ClosureType.INCONCLUSIVE_NO_CONTACT, ClosedReason.NO_CONTACT),
        (ClosureType.CONSENT_WITHDRAWN, ClosedReason.OTHER),
    ]:
        status_ = reporter_status(CaseState.CLOSING, held_from=None, closure_type=closure)
        assert status_ == ReporterStatus.CLOSED
        assert closed_reason(status_, closure_type=closure, screening=None) == reason
    closed = reporter_status(CaseState.LESSONS_CAPTURED, held_from=None, closure_type=None)
    assert closed_reason(closed, closure_type=None, screening=ScreeningOutcome.DUPLICATE) == (
        ClosedReason.DUPLICATE
    )


# --- the thread ----------------------------------------------------------------------------------


def test_messages_round_trip_and_are_encrypted_in_the_table(store: Store) -> None:
    clock = Clock()
    case = start_sample_case(clock)
    filed = filed_on(case)
    assert reporter_writes(filed.code, f"  {CANARY}\n", now=clock.tick())
    answer = "Merci. Pouvez-vous nous dire quand ? (Canary-Reply-4410)"
    replied = reply(case.ref, answer, by=LEAD, now=clock.tick())
    assert replied.acknowledged and replied.receipt_ref == filed.receipt_ref
    assert reporter_writes(filed.code, "Last week.", now=clock.tick())
    seen = follow_up(filed.code, now=clock.tick())
    assert seen is not None
    assert [(m.from_reporter, m.text) for m in seen.messages] == [
        (True, CANARY),
        (False, answer),
        (True, "Last week."),
    ]
    assert seen.acknowledged_at is not None and seen.can_reply
    with store.engine().connect() as conn:
        raw: list[str] = list(
            conn.execute(sa.text("SELECT text_ciphertext FROM reporter_message")).scalars()
        )
        conn.rollback()
    assert len(raw) == 3
    assert not any("Canary" in value or "Last week" in value for value in raw)
    everything = dump_store(store)
    assert "Canary-Tshibanda" not in everything and "Canary-Reply" not in everything


def test_a_message_must_be_neither_empty_nor_too_long(store: Store) -> None:
    clock = Clock()
    case = start_sample_case(clock)
    filed = filed_on(case)
    for text in ("   ", "x" * (MESSAGE_MAX_CHARS + 1)):
        with pytest.raises(ValueError) as refused:
            reporter_writes(filed.code, text, now=clock.tick())
        assert "xxxx" not in str(refused.value)
        with pytest.raises(ValueError):
            reply(case.ref, text, by=LEAD, now=clock.tick())
    assert reporter_writes(filed.code, "x" * MESSAGE_MAX_CHARS, now=clock.tick())
    assert len(rows(ReporterMessage)) == 1


def test_only_the_case_lead_and_the_victims_representative_may_write(store: Store) -> None:
    clock = Clock()
    case = start_sample_case(clock)
    filed = filed_on(case)
    for who in (SENIOR, "nobody.known"):
        with pytest.raises(ReporterNotAllowed):
            reply(case.ref, "Hello from the wrong person.", by=who, now=clock.tick())
        with pytest.raises(ReporterNotAllowed):
            acknowledge(case.ref, by=who, now=clock.tick())
        with pytest.raises(ReporterNotAllowed):
            set_note(case.ref, "A note.", by=who, now=clock.tick())
    assert rows(ReporterMessage) == []
    seen = follow_up(filed.code, now=clock.tick())
    assert seen is not None and seen.acknowledged_at is None and seen.reason_note is None
    reply(case.ref, "Hello from the advocate.", by=ADVOCATE, now=clock.tick())
    [message] = rows(ReporterMessage)
    assert message.author_id == stakeholder_id(ADVOCATE)


def test_an_explicit_acknowledgement_comes_before_the_first_reply(store: Store) -> None:
    clock = Clock()
    case = start_sample_case(clock)
    filed = filed_on(case)
    acked_at = clock.tick()
    assert acknowledge(case.ref, by=LEAD, now=acked_at).acknowledged
    assert not acknowledge(case.ref, by=ADVOCATE, now=clock.tick()).acknowledged
    assert not reply(case.ref, "We are looking at it.", by=LEAD, now=clock.tick()).acknowledged
    seen = follow_up(filed.code, now=clock.tick())
    assert seen is not None and seen.acknowledged_at == acked_at
    actions = [e.action for e in case.audit() if e.action.startswith("reporter.")]
    assert actions == ["reporter.filed", "reporter.acknowledged", "reporter.reply"]


# --- notifications -------------------------------------------------------------------------------


def test_the_case_team_is_told_of_a_message_without_its_content(
    store: Store, mail: MailCatcher
) -> None:
    clock = Clock()
    case = start_sample_case(clock)
    filed = filed_on(case)
    deliver(clock)
    mail.messages.clear()
    assert reporter_writes(filed.code, CANARY, now=clock.tick())
    told = rows(Notification, Notification.event == NotificationEvent.REPORTER_MESSAGE.value)
    assert {n.recipient_id for n in told} == {stakeholder_id(LEAD)}  # the case lead only
    assert all(CANARY not in str(n.context) for n in told)
    deliver(clock)
    [message] = [m for m in mail.messages if "reporter" in str(m["Subject"])]
    assert "lena.lead@acme.example" in str(message["To"])
    text = bodies(message)
    assert case.ref in text and filed.receipt_ref in text
    assert "Canary" not in text and CONTACT not in text


def test_the_reporter_is_emailed_only_with_a_contact_and_their_agreement_without_content(
    store: Store, mail: MailCatcher
) -> None:
    clock = Clock()
    case = start_sample_case(clock)
    agreed = filed_on(case, contact_ok=True)
    declined = filed_on(case, contact_ok=False)
    anonymous = file_sample(clock, anonymous=True, reporter=None)
    deliver(clock)
    mail.messages.clear()
    answer = f"Answer with a canary: {CANARY}"
    for filed in (agreed, declined):
        assert reply(
            case.ref, answer, by=LEAD, now=clock.tick(), receipt_ref=filed.receipt_ref
        ).reporter_told == (filed is agreed)
    assert not reply(case_of(anonymous), answer, by=LEAD, now=clock.tick()).reporter_told
    news = rows(Notification, Notification.event == NotificationEvent.REPORTER_NEWS.value)
    assert len(news) == 1 and news[0].recipient_id is None
    assert CONTACT not in str(news[0].context) and CANARY not in str(news[0].context)
    deliver(clock)
    to_reporter = [m for m in mail.messages if CONTACT in str(m["To"])]
    assert len(to_reporter) == 1
    text = bodies(to_reporter[0])
    assert agreed.receipt_ref in text and "/follow-up" in text
    assert "Canary" not in text and case.ref not in text and "RC-" not in text
    assert agreed.code not in text
    [sent] = rows(Notification, Notification.event == NotificationEvent.REPORTER_NEWS.value)
    assert sent.status == NotificationStatus.DELIVERED
    # a later acknowledgement changes nothing: the reply acknowledged already
    assert not acknowledge(
        case.ref, by=LEAD, now=clock.tick(), receipt_ref=agreed.receipt_ref
    ).reporter_told


def test_no_audit_event_names_the_content_or_the_contact(store: Store) -> None:
    clock = Clock()
    case = start_sample_case(clock)
    filed = filed_on(case)
    reporter_writes(filed.code, CANARY, now=clock.tick())
    reply(case.ref, f"Re: {CANARY}", by=LEAD, now=clock.tick())
    set_note(case.ref, f"Note {CANARY}", by=LEAD, now=clock.tick())
    events = [e for e in case.audit() if e.action.startswith("reporter.")]
    assert {e.action for e in events} == {
        "reporter.filed",
        "reporter.message",
        "reporter.reply",
        "reporter.acknowledged",
        "reporter.note",
    }
    for event in rows(AuditEvent):
        assert "Canary" not in str(event.details) and CONTACT not in str(event.details)
    assert case.chain().ok


# --- the command line ----------------------------------------------------------------------------


def test_the_reporter_commands(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = Clock()
    case = start_sample_case(clock)
    filed = filed_on(case)
    reporter_writes(filed.code, CANARY, now=clock.tick())
    map_me(tmp_path, LEAD)
    capsys.readouterr()
    assert run_cli("reporter", "show", case.ref) == 0
    shown = capsys.readouterr().out
    assert filed.receipt_ref in shown and CANARY in shown and "not yet" in shown
    assert run_cli("reporter", "ack", case.ref) == 0
    assert "Acknowledged" in capsys.readouterr().out
    answer = tmp_path / "answer.txt"
    answer.write_text("Thank you; we will visit the site.\nSecond line.", encoding="utf-8")
    assert run_cli("reporter", "reply", case.ref, "--file", str(answer)) == 0
    assert run_cli("reporter", "reply", case.ref, "--text", "And one more thing.") == 0
    assert run_cli("reporter", "reply", case.ref) == 2  # neither --text nor --file
    assert run_cli("reporter", "note", case.ref, "--text", "Verification is under way.") == 0
    capsys.readouterr()
    assert run_cli("reporter", "show", case.ref) == 0
    shown = capsys.readouterr().out
    assert "Acknowledged: " in shown and "not yet" not in shown
    assert "Second line." in shown and "Verification is under way." in shown
    seen = follow_up(filed.code, now=clock.tick())
    assert seen is not None
    assert [m.text for m in seen.messages][1:] == [
        "Thank you; we will visit the site.\nSecond line.",
        "And one more thing.",
    ]
    assert seen.reason_note == "Verification is under way."
    ack = [e for e in case.audit() if e.action == "reporter.acknowledged"]
    assert len(ack) == 1 and ack[0].details["os_user"]


def test_the_reporter_commands_refuse_someone_without_the_role(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = Clock()
    case = start_sample_case(clock)
    filed_on(case)
    assert run_cli("reporter", "show", case.ref) == 1  # this account is nobody yet
    map_me(tmp_path, SENIOR)
    capsys.readouterr()
    assert run_cli("reporter", "reply", case.ref, "--text", "Hello.") == 1
    assert run_cli("reporter", "show", case.ref) == 1
    assert "case_lead" in capsys.readouterr().err
    assert rows(ReporterMessage) == []


def test_an_operator_is_named_in_the_audit(store: Store) -> None:
    clock = Clock()
    case = start_sample_case(clock)
    filed_on(case)
    who = Operator(os_user="lena", key=LEAD)
    reply(case.ref, "Hello.", by=LEAD, now=clock.tick() + timedelta(0), operator=who)
    [event] = [e for e in case.audit() if e.action == "reporter.reply"]
    assert event.actor == f"stakeholder:{LEAD}" and event.details["os_user"] == "lena"
