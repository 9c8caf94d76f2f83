"""Delivery with real parts: an SMTP server (aiosmtpd) and an HTTP chat receiver on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from demo.catchers import ChatReceiver, MailCatcher
from flows.local.stack import free_port
from models.enums import (
    ConsentMethod,
    ConsentPurpose,
    DecisionKind,
    NotificationChannel,
    NotificationStatus,
)
from models.tables import Notification
from tests.conftest import ROOT, Store
from tests.integration.factories import (
    Clock,
    rows,
    script,
    start_sample_case,
    to_implementing,
)

PASSWORD = "s3cret-smtp-pass"


@pytest.fixture
def mail(monkeypatch: pytest.MonkeyPatch) -> Iterator[MailCatcher]:
    catcher = MailCatcher(port=free_port()).start()
    monkeypatch.setenv("REMEDY_SMTP_URL", catcher.url())
    yield catcher
    catcher.stop()


@pytest.fixture
def chat(monkeypatch: pytest.MonkeyPatch) -> Iterator[ChatReceiver]:
    receiver = ChatReceiver(port=free_port()).start()
    monkeypatch.setenv("REMEDY_CHAT_OPS", f"json://127.0.0.1:{receiver.port}/hooks/ops")
    yield receiver
    receiver.stop()


def settings_changed() -> None:
    from tests.conftest import _clear_caches

    _clear_caches()


def deliver(now: datetime):  # type: ignore[no-untyped-def]
    from tasks.drain import deliver_due

    return deliver_due(now=now)


def by_key(messages: list[EmailMessage]) -> Counter[str]:
    return Counter(str(m["X-Remedy-Key"]) for m in messages)


def parts(message: EmailMessage) -> dict[str, str]:
    found = {}
    for part in message.walk():
        if part.get_content_maintype() == "text":
            found[part.get_content_type()] = part.get_content()
    return found


def test_messages_arrive_as_mime_in_the_recipients_locale_and_the_code_works_once(
    store: Store, mail: MailCatcher, chat: ChatReceiver
) -> None:
    settings_changed()
    clock = Clock()
    case = start_sample_case(clock)
    pending = case.prepare(DecisionKind.SCREENING)
    report = deliver(clock.tick())
    assert report.gave_up == 0 and report.failed == 0 and report.delivered >= 3

    subjects = {
        str(m["To"]): str(m["Subject"])
        for m in mail.messages
        if "opened" in str(m["Subject"]) or "ouvert" in str(m["Subject"])
    }
    assert subjects["amani.verifier@audit.example"] == f"[{case.ref}] Nouveau dossier ouvert"
    assert subjects["lena.lead@acme.example"] == f"[{case.ref}] New case opened"
    [request_mail] = [m for m in mail.messages if "Decision needed" in str(m["Subject"])]
    assert str(request_mail["To"]) == "lena.lead@acme.example"
    assert request_mail.get_content_type() == "multipart/alternative"
    body = parts(request_mail)
    assert set(body) == {"text/plain", "text/html"}
    assert "Screen the allegation" in body["text/html"]
    assert "http://localhost:8686/a/" in body["text/html"]  # the approval page link
    assert "http://localhost:8686/a/" in body["text/plain"]  # in both parts
    # the code in the message is the one the step accepts, once
    from tasks.decisions.resume import issued_code

    found = re.search(r"one-time code: ([A-Z0-9]{8})", body["text/plain"])
    assert found is not None
    code = found.group(1)
    assert code == issued_code(pending.request_id, "lena.lead")
    key = str(request_mail["X-Remedy-Key"])
    [row] = rows(Notification, Notification.idempotency_key == key)
    assert row.status == NotificationStatus.DELIVERED and row.attempts == 1
    assert "code_ciphertext" not in row.context  # delivered: the code leaves the store
    who, values = script(DecisionKind.SCREENING)
    assert case.submit(pending.request_id, who, values, code=code).accepted
    assert not case.submit(pending.request_id, who, values, code=code).accepted

    # chat: apprise's JSON format, the case reference and links only
    calls = chat.delivered()
    assert len(calls) == 2  # case_opened and decision_requested to the lead's chat
    for call in calls:
        data = json.loads(call["body"])
        assert set(data) >= {"version", "title", "message", "type"}
        assert call["headers"]["x-remedy-key"].endswith(":chat")
        assert case.ref in data["title"] and "P-0" not in data["message"]
        assert call["path"] == "/hooks/ops"
    # the audit chain records each delivery
    sent = [e for e in case.audit() if e.action == "notification.sent"]
    assert len(sent) == report.delivered
    assert case.chain().ok


def test_user_text_is_data_in_every_format(store: Store, mail: MailCatcher) -> None:
    settings_changed()
    clock = Clock()
    case = start_sample_case(clock, variant="{{ 7*7 }} <script>alert('x')</script> {% if 1 %}")
    deliver(clock.tick())
    lead = [m for m in mail.messages if str(m["To"]) == "lena.lead@acme.example"]
    body = parts(lead[0])
    assert "{{ 7*7 }}" in body["text/html"] and "49" not in body["text/html"]
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in body["text/html"]
    assert "<script>" not in body["text/html"]
    assert "{% if 1 %}" in body["text/html"]
    del case


def test_outage_then_recovery_delivers_each_message_once(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    smtp_port, chat_port = free_port(), free_port()
    monkeypatch.setenv(
        "REMEDY_SMTP_URL",
        f"mailto://127.0.0.1:{smtp_port}?from=r@example.org&mode=insecure",
    )
    monkeypatch.setenv("REMEDY_CHAT_OPS", f"json://127.0.0.1:{chat_port}/hooks/ops")
    monkeypatch.setenv("REMEDY_DELIVERY_BACKOFF_SECONDS", "2")  # real seconds: 2, then 4
    settings_changed()
    receiver = ChatReceiver(port=chat_port, statuses=[500, 500, 500]).start()
    try:
        t0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
        clock = Clock(now=t0)
        case = start_sample_case(clock)
        case.prepare(DecisionKind.SCREENING)
        first = deliver(clock.tick())  # SMTP down: connection refused; webhook: 500
        assert first.delivered == 0 and first.failed == first.claimed > 0
        failed = rows(Notification)
        assert all(n.attempts == 1 and n.status == NotificationStatus.PENDING for n in failed)
        errors = {n.channel: n.last_error for n in failed}
        assert errors[NotificationChannel.EMAIL] == "email: connection refused"
        assert errors[NotificationChannel.CHAT] == "chat: the receiver answered HTTP 500"
        for n in failed:
            assert "127.0.0.1" not in (n.last_error or "")
        # not due yet (by the wall clock, whatever the drain is told): nothing is tried again
        assert deliver(clock.now + timedelta(hours=1)).claimed == 0
        catcher = MailCatcher(port=smtp_port).start()
        try:
            time.sleep(2.1)
            second = deliver(clock.tick())
            emails = [n for n in rows(Notification) if n.channel == NotificationChannel.EMAIL]
            assert all(n.status == NotificationStatus.DELIVERED for n in emails)
            assert second.failed == 1  # the webhook answers 500 a third time
            assert deliver(clock.tick()).claimed == 0  # backing off 4 s now
            time.sleep(4.1)
            third = deliver(clock.tick())
            assert third.delivered == second.failed
            assert deliver(clock.tick()).claimed == 0
            done = rows(Notification)
            assert all(n.status == NotificationStatus.DELIVERED for n in done)
            assert by_key(catcher.messages) == Counter(
                {n.idempotency_key: 1 for n in done if n.channel == NotificationChannel.EMAIL}
            )
            chat_keys = Counter(r["headers"]["x-remedy-key"] for r in receiver.delivered())
            assert chat_keys == Counter(
                {n.idempotency_key: 1 for n in done if n.channel == NotificationChannel.CHAT}
            )
            assert max(n.attempts for n in done) == 3  # the chat message: 500, 500, 500(!), ok
        finally:
            catcher.stop()
    finally:
        receiver.stop()


def test_delivery_gives_up_after_the_last_attempt(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "REMEDY_SMTP_URL",
        f"mailto://remedy:{PASSWORD}@127.0.0.1:{free_port()}?from=r@example.org&mode=insecure",
    )
    monkeypatch.setenv("REMEDY_DELIVERY_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("REMEDY_DELIVERY_BACKOFF_SECONDS", "0.5")
    monkeypatch.delenv("REMEDY_CHAT_OPS", raising=False)
    settings_changed()
    clock = Clock()
    case = start_sample_case(clock)
    deliver(clock.tick())
    time.sleep(0.6)
    report = deliver(clock.tick())
    assert report.gave_up == report.claimed > 0
    emails = [n for n in rows(Notification) if n.channel == NotificationChannel.EMAIL]
    assert all(n.status == NotificationStatus.FAILED for n in emails)
    failed = [e for e in case.audit() if e.action == "notification.failed"]
    assert len(failed) == len(rows(Notification))  # the chat copy too: its secret is not set
    errors = {n.channel: n.last_error for n in rows(Notification)}
    assert errors == {
        NotificationChannel.EMAIL: "email: connection refused",
        NotificationChannel.CHAT: "the chat secret env:REMEDY_CHAT_OPS is not set",
    }
    # the SMTP credential is nowhere: not in errors, the outbox or the audit chain
    for n in rows(Notification):
        assert PASSWORD not in str(n.context)
    assert all(PASSWORD not in str(e.details) for e in case.audit())


def test_withdrawn_consent_suppresses_messages_that_mention_the_person(
    store: Store, mail: MailCatcher
) -> None:
    from tasks.controls import withdraw_consent

    settings_changed()
    clock = Clock()
    case = start_sample_case(clock)  # case_opened mentions P-01..P-03
    withdraw_consent(
        case.ref, "P-02", purpose=ConsentPurpose.CASE_HANDLING, by="lena.lead", now=clock.tick()
    )
    report = deliver(clock.tick())
    opened = [n for n in rows(Notification) if n.event == "case_opened"]
    assert opened and all(n.status == NotificationStatus.SUPPRESSED for n in opened)
    assert report.suppressed == len(opened)
    assert not [m for m in mail.messages if "opened" in str(m["Subject"]).lower()]
    assert case.case().state.value == "verifying"  # the case goes on for P-01 and P-03
    assert all("sealed" not in n.context for n in opened)


def test_renewed_consent_lets_new_messages_about_the_person_through(
    store: Store, mail: MailCatcher
) -> None:
    from tasks.controls import renew_consent, withdraw_consent
    from tasks.steps.implement import activate_plan

    settings_changed()
    clock = Clock()
    case = to_implementing(clock)
    withdraw_consent(
        case.ref, "P-02", purpose=ConsentPurpose.CASE_HANDLING, by="lena.lead", now=clock.tick()
    )
    renew_consent(
        case.ref,
        "P-02",
        purpose=ConsentPurpose.CASE_HANDLING,
        by="grace.advocate",
        method=ConsentMethod.WRITTEN,
        now=clock.tick(),
    )
    assert case.case().state.value == "implementing"  # never held: P-01 and P-03 remained
    activate_plan(case.ref, now=clock.tick())
    deliver(clock.tick())
    about_p02 = [
        n for n in rows(Notification) if n.event == "milestone_assigned" and "P-02" in n.mentions
    ]
    assert about_p02 and all(n.status == NotificationStatus.DELIVERED for n in about_p02)


def _lease_runs_out() -> None:
    """Let the two minutes of every lease pass (the store's side of waiting for them)."""
    import sqlalchemy as sa

    from tasks.store.db import unit_of_work

    with unit_of_work() as session:
        session.execute(
            sa.update(Notification)
            .where(Notification.claimed_until.is_not(None))  # type: ignore[union-attr]
            .values(claimed_until=datetime.now(UTC) - timedelta(seconds=1))
        )


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)  # one backend is enough here
def test_a_crash_between_send_and_record_duplicates_at_most_the_message_in_flight(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REMEDY_CHAT_OPS", raising=False)
    killed: list[int] = []
    proc_holder: list[subprocess.Popen[bytes]] = []

    def kill_sender(_message: EmailMessage) -> None:
        # the second message has reached the server; its sender never hears "250 OK"
        if len(catcher.messages) == 2 and proc_holder and not killed:
            os.kill(proc_holder[0].pid, signal.SIGKILL)
            killed.append(proc_holder[0].pid)

    catcher = MailCatcher(port=free_port(), on_message=kill_sender).start()
    monkeypatch.setenv("REMEDY_SMTP_URL", catcher.url())
    settings_changed()
    try:
        clock = Clock(now=datetime.now(UTC) - timedelta(minutes=5))
        case = start_sample_case(clock)
        case.prepare(DecisionKind.SCREENING)
        expected = {
            n.idempotency_key for n in rows(Notification) if n.channel == NotificationChannel.EMAIL
        }
        assert len(expected) >= 3
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "notifications", "deliver"],
            cwd=ROOT,
            env=os.environ.copy(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        proc_holder.append(proc)
        assert proc.wait(timeout=120) == -signal.SIGKILL
        assert killed
        # the dead drain's lease holds on the wall clock, whatever moment a drain is told
        assert deliver(datetime.now(UTC) + timedelta(minutes=3)).claimed == 0
        _lease_runs_out()
        # after a restart, once the dead drain's lease has run out
        report = deliver(datetime.now(UTC))
        assert report.gave_up == 0
        counts = by_key(catcher.messages)
        assert set(counts) == expected  # nothing lost
        duplicated = [k for k, n in counts.items() if n > 1]
        assert len(duplicated) <= 1 and all(counts[k] == 2 for k in duplicated)
        if duplicated:  # it is the message that was in flight when the sender died
            assert duplicated[0] == str(catcher.messages[1]["X-Remedy-Key"])
        assert all(
            n.status == NotificationStatus.DELIVERED
            for n in rows(Notification)
            if n.channel == NotificationChannel.EMAIL
        )
        del case
    finally:
        catcher.stop()


def test_check_command_reports_missing_translations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.integration.test_intake import run_cli

    assert run_cli("notifications", "check") == 0
    locales = tmp_path / "locales"
    locales.mkdir()
    source = (ROOT / "notifications" / "locales" / "fr.toml").read_text(encoding="utf-8")
    lines = [ln for ln in source.splitlines() if not ln.startswith('"Case closed"')]
    (locales / "fr.toml").write_text("\n".join(lines), encoding="utf-8")
    (locales / "es.toml").write_text(
        (ROOT / "notifications" / "locales" / "es.toml").read_text(encoding="utf-8"),
        encoding="utf-8",
    )
    monkeypatch.setenv("REMEDY_LOCALES_DIR", str(locales))
    settings_changed()
    assert run_cli("notifications", "check") == 1
    from models.enums import Locale
    from notifications.render import render

    fallback = render(
        "case_closed",
        fmt="text",
        locale=Locale.FR,
        context={
            "case_ref": "RC-2026-0001",
            "step": 5,
            "closure_type": "resolved_accepted",
            "case_view_link": None,
            "visibility": "case",
        },
    )
    assert fallback.subject == "[RC-2026-0001] Case closed"  # English, not nothing
    assert "Étape 5 sur 6" in fallback.body


@pytest.mark.parametrize(
    ("kind", "url", "path", "text_of"),
    [
        ("json", "json://127.0.0.1:{port}/hooks/ops", "/hooks/ops", lambda b: b["message"]),
        (
            "mattermost",
            "mmost://127.0.0.1:{port}/abcdefghijklmnopqrstuvwxyz",
            "/hooks/abcdefghijklmnopqrstuvwxyz",
            lambda b: b["text"],
        ),
        (
            "matrix",
            "matrix://remedy:pw@127.0.0.1:{port}/?mode=slack&token=roomhook",
            "/api/v1/matrix/hook/roomhook",
            lambda b: b["attachments"][0]["text"],
        ),
    ],
)
def test_chat_bodies_match_each_services_format(
    store: Store, monkeypatch: pytest.MonkeyPatch, kind: str, url: str, path: str, text_of: Any
) -> None:
    from models.enums import ChatKind
    from models.tables import Stakeholder
    from tasks.store.db import unit_of_work

    receiver = ChatReceiver(port=free_port()).start()
    monkeypatch.setenv("REMEDY_CHAT_OPS", url.format(port=receiver.port))
    monkeypatch.delenv("REMEDY_SMTP_URL", raising=False)
    settings_changed()
    try:
        clock = Clock()
        case = start_sample_case(clock)
        with unit_of_work() as session:
            from sqlmodel import select

            lead = session.exec(select(Stakeholder).where(Stakeholder.key == "lena.lead")).one()
            lead.chat_kind = ChatKind(kind)
            session.add(lead)
        deliver(clock.tick())
        [call] = receiver.delivered()
        assert call["path"] == path
        body = json.loads(call["body"])
        text = text_of(body)
        assert case.ref in text and "A new remediation case was opened" in text
        assert "P-0" not in call["body"] and "Kivu" not in call["body"]
    finally:
        receiver.stop()


def test_chat_never_names_a_pseudonym_even_for_a_persons_milestone(
    store: Store, chat: ChatReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlmodel import select

    from models.tables import PlanAction, Stakeholder
    from tasks.steps.implement import activate_plan
    from tasks.store.db import unit_of_work
    from tests.integration.factories import to_implementing

    monkeypatch.delenv("REMEDY_SMTP_URL", raising=False)
    settings_changed()
    case = to_implementing(Clock())
    with unit_of_work() as session:  # the lead, who has a chat webhook, owns P-01's check-up
        lead = session.exec(select(Stakeholder).where(Stakeholder.key == "lena.lead")).one()
        action = session.exec(
            select(PlanAction).where(PlanAction.key == "medical-check-p-01")
        ).one()
        action.owner_id = lead.id
        session.add(action)
    activate_plan(case.ref, now=case.clock.tick())
    deliver(case.clock.tick())
    bodies = [r["body"] for r in chat.delivered()]
    assert any("medical" in b.lower() or "milestone" in b.lower() for b in bodies)
    assert all("P-0" not in b for b in bodies)


# --- leases and backoff run on the wall clock, whatever moment the caller names ------------------

LATER = datetime(2031, 6, 1, tzinfo=UTC)  # a moment a forged or simulated sweep might name


def _smtp_down(monkeypatch: pytest.MonkeyPatch) -> int:
    port = free_port()
    monkeypatch.setenv(
        "REMEDY_SMTP_URL", f"mailto://127.0.0.1:{port}?from=r@example.org&mode=insecure"
    )
    monkeypatch.delenv("REMEDY_CHAT_OPS", raising=False)
    return port


def test_messages_written_for_a_later_moment_are_due_on_the_wall_clock(
    store: Store, mail: MailCatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change recorded as of 2031 (a simulation's) is sent by today's drain, not in 2031."""
    monkeypatch.delenv("REMEDY_CHAT_OPS", raising=False)
    settings_changed()
    start_sample_case(Clock(now=LATER))
    deliver(datetime.now(UTC))
    emails = [n for n in rows(Notification) if n.channel == NotificationChannel.EMAIL]
    assert emails and all(n.status == NotificationStatus.DELIVERED for n in emails)
    assert by_key(mail.messages) == Counter({n.idempotency_key: 1 for n in emails})


def test_a_drain_told_a_later_moment_backs_off_on_the_wall_clock(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed attempt in a drain told it is 2031 is retried seconds later, not in 2031."""
    port = _smtp_down(monkeypatch)
    monkeypatch.setenv("REMEDY_DELIVERY_BACKOFF_SECONDS", "1")
    settings_changed()
    start_sample_case(Clock())
    first = deliver(LATER)
    assert first.failed == first.claimed > 0
    soon = datetime.now(UTC) + timedelta(seconds=2)
    for n in rows(Notification):
        assert n.next_attempt_at is not None and n.next_attempt_at <= soon
        assert n.claimed_until is None
    catcher = MailCatcher(port=port).start()
    try:
        time.sleep(1.2)
        deliver(datetime.now(UTC))
        emails = [n for n in rows(Notification) if n.channel == NotificationChannel.EMAIL]
        assert emails and all(n.status == NotificationStatus.DELIVERED for n in emails)
        assert by_key(catcher.messages) == Counter({n.idempotency_key: 1 for n in emails})
    finally:
        catcher.stop()


def test_a_drain_told_a_later_moment_leases_on_the_wall_clock(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message in flight is leased for minutes from now: a dead drain cannot hold it for years."""
    from sqlmodel import select

    from tasks.drain import lease_period
    from tasks.store.db import read_only

    leases: list[datetime | None] = []

    def read_lease(message: EmailMessage) -> None:  # the sender waits for "250" meanwhile
        with read_only() as session:
            row = session.exec(
                select(Notification).where(
                    Notification.idempotency_key == str(message["X-Remedy-Key"])
                )
            ).one()
            leases.append(row.claimed_until)

    catcher = MailCatcher(port=free_port(), on_message=read_lease).start()
    monkeypatch.setenv("REMEDY_SMTP_URL", catcher.url())
    monkeypatch.delenv("REMEDY_CHAT_OPS", raising=False)
    settings_changed()
    try:
        start_sample_case(Clock())
        assert deliver(LATER).delivered > 0
        latest = datetime.now(UTC) + lease_period()
        assert leases and all(at is not None and at <= latest for at in leases)
    finally:
        catcher.stop()


# --- text people typed stays text in chat (Markdown) ---------------------------------------------

EVIL_LINK = "[Session expired - sign in](https://evil.example/login)"


def _live_links(markdown: str) -> list[str]:
    """The links a chat service would render from a Markdown body (CommonMark and GFM autolinks)."""
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").enable("table").parse(markdown)
    inline = [c for t in tokens for c in (t.children or [])]
    found = [str(c.attrs.get("href")) for c in inline if c.type == "link_open"]
    # the bare URLs, www. and e-mail addresses GFM services link by themselves
    found += re.findall(r"(?<!\\)https?://\S+|(?<![\\\w])www\.\S+", markdown)
    return found


def test_a_site_written_as_a_link_is_no_link_in_chat(store: Store, chat: ChatReceiver) -> None:
    settings_changed()
    clock = Clock()
    case = start_sample_case(clock, site=EVIL_LINK)
    case.prepare(DecisionKind.SCREENING)

    deliver(clock.tick())

    calls = chat.delivered()
    assert len(calls) == 2  # case_opened and decision_requested to the lead's chat
    for call in calls:
        data = json.loads(call["body"])
        assert _live_links(data["message"]) == [], data["message"]
        assert "evil.example" not in data["title"]


def test_a_milestone_title_typed_as_a_link_arrives_in_chat_as_text(
    store: Store, chat: ChatReceiver
) -> None:
    from markdown_it import MarkdownIt
    from sqlmodel import select

    from models.enums import Locale
    from models.tables import Stakeholder
    from tasks.store.db import unit_of_work

    settings_changed()
    case = start_sample_case(Clock())
    deliver(case.clock.tick())
    chat.requests.clear()
    title = f"Return the documents {EVIL_LINK} **now** <b>x</b> www.evil.example"
    with unit_of_work() as session:  # a chat message whose template quotes a milestone's title
        lead = session.exec(select(Stakeholder).where(Stakeholder.key == "lena.lead")).one()
        session.add(
            Notification(
                case_id=case.case().id,
                event="milestone_verified",
                recipient_id=lead.id,
                channel=NotificationChannel.CHAT,
                locale=Locale.EN,
                template="milestone_verified",
                context={"case_ref": case.ref, "title": title, "milestone": "document-return"},
                idempotency_key="test:typed-title:chat",
                status=NotificationStatus.PENDING,
                created_at=case.clock.now,
                next_attempt_at=case.clock.now,
            )
        )

    assert deliver(case.clock.tick()).delivered == 1

    [call] = chat.delivered()
    message = json.loads(call["body"])["message"]
    assert _live_links(message) == [], message
    # the reader sees the title exactly as typed; the only markup is our own bold prefix
    [paragraph] = [t for t in MarkdownIt("commonmark").parse(message) if t.type == "inline"]
    children = paragraph.children or []
    assert [c.type for c in children].count("strong_open") == 1
    assert {c.type for c in children} == {"text", "strong_open", "strong_close"}
    shown = "".join(c.content for c in children)
    assert shown.endswith(f"was verified: {title}.")


# --- links that survive a repair -----------------------------------------------------------------


def test_a_decision_mail_links_no_run_but_an_address_that_follows_the_repair(
    store: Store, mail: MailCatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uuid
    import warnings

    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings
    from starlette.exceptions import StarletteDeprecationWarning

    from flows.web.app import create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StarletteDeprecationWarning)
        from starlette.testclient import TestClient

    ui = "http://127.0.0.1:4200"  # the Prefect UI as links name it (no API: no run is asked after)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_UI_URL", ui)
    settings_changed()
    with temporary_settings({PREFECT_API_URL: None, PREFECT_UI_URL: ui}):
        case = start_sample_case(Clock())
        case.prepare(DecisionKind.SCREENING)
        deliver(case.clock.tick())
        [request_mail] = [m for m in mail.messages if "Decision needed" in str(m["Subject"])]
        body = parts(request_mail)
        assert all("/runs/flow-run/" not in text for text in body.values())  # no run, ever
        found = re.search(r"http://localhost:8686(/r/[A-Za-z0-9_-]+)", body["text/plain"])
        assert found is not None and found.group(1) in body["text/html"]

        with TestClient(create_app(check_seconds=0)) as page:
            went = page.get(found.group(1), follow_redirects=False)
            assert (went.status_code, went.headers["location"]) == (
                303,
                f"{ui}/runs/flow-run/{case.run_id}",
            )
            case.run_id = uuid.uuid4()  # the run crashed; the repair's run takes the step over
            case.prepare(DecisionKind.SCREENING)
            went = page.get(found.group(1), follow_redirects=False)
            assert went.headers["location"] == f"{ui}/runs/flow-run/{case.run_id}"


# --- a slow drain keeps its claim, or gives it up to the drain that took it over ----------------


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)  # one backend is enough here
def test_a_drain_past_its_lease_sends_nothing_another_drain_has_claimed(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    from tasks.drain import claim_due, keep, lease_period

    monkeypatch.setenv("REMEDY_DELIVERY_LEASE_SECONDS", "60")
    settings_changed()
    assert lease_period() == timedelta(seconds=60)
    start_sample_case(Clock(now=datetime.now(UTC) - timedelta(minutes=5)))
    first, second, *_ = claim_due()
    assert keep(first)  # a fresh claim holds: nothing to renew
    # the slow drain is past its lease (in its memory and in the store); nobody has taken its
    # messages yet
    _lease_runs_out()
    first, second = (
        replace(x, until=datetime.now(UTC) - timedelta(seconds=1)) for x in (first, second)
    )
    assert keep(second)  # so it renews the claim before sending
    [renewed] = rows(Notification, Notification.id == second.id)
    assert renewed.claimed_until is not None
    assert renewed.claimed_until > datetime.now(UTC) + timedelta(seconds=50)
    taken = {lease.id for lease in claim_due()}  # meanwhile another drain claims the others
    assert first.id in taken and second.id not in taken
    assert not keep(first)  # the slow drain lets it go: one sender per message
