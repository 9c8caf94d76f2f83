"""Drain N pending notifications to a local SMTP server and chat receiver: messages per second,
and the ratio to a bare loop sending the same messages with apprise directly (target <= 1.5x).

The outbox's work per message beyond apprise: claim (in batches), read, render (Jinja2), and
record the attempt with its audit event, each in its own transaction.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import EXAMPLES, say

ROOT = Path(__file__).resolve().parent.parent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--messages", type=int, default=2000, help="notifications to drain")


def run(args: argparse.Namespace) -> int:
    """Seed, drain, compare with a bare apprise loop, print the figures."""
    from cryptography.fernet import Fernet

    from demo.catchers import ChatReceiver, MailCatcher
    from flows.local.stack import free_port

    tmp = Path(tempfile.mkdtemp(prefix="remedy-bench-outbox-"))
    mail = MailCatcher(port=free_port()).start()
    chat = ChatReceiver(port=free_port()).start()
    os.environ.update(
        {
            "REMEDY_HOME": str(tmp),
            "REMEDY_DATABASE_URL": f"sqlite:///{tmp / 'remedy.db'}",
            "REMEDY_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "REMEDY_SMTP_URL": mail.url(),
            "REMEDY_CHAT_OPS": f"json://127.0.0.1:{chat.port}/hooks/bench",
        }
    )
    os.environ.pop("PREFECT_API_URL", None)
    from bench.common import clear_remedy_caches

    clear_remedy_caches()
    try:
        return _measure(args.messages, mail, chat)
    finally:
        mail.stop()
        chat.stop()


def _measure(n: int, mail: object, chat: object) -> int:
    import apprise
    import yaml
    from alembic import command

    from demo.catchers import ChatReceiver, MailCatcher
    from migrations import alembic_config
    from models.enums import Locale, NotificationChannel, NotificationStatus
    from models.intake import DirectoryIn
    from models.settings import get_settings
    from models.tables import Notification, Stakeholder
    from notifications.render import render
    from notifications.send import chat_url, email_url, send
    from tasks.drain import deliver_due
    from tasks.store.db import unit_of_work
    from tasks.store.directory import load_directory

    assert isinstance(mail, MailCatcher) and isinstance(chat, ChatReceiver)
    settings = get_settings()
    command.upgrade(alembic_config(settings.resolved_database_url()), "head")
    now = datetime.now(UTC)
    data = yaml.safe_load((EXAMPLES / "stakeholders.yaml").read_text())
    load_directory(DirectoryIn.model_validate(data), now=now, actor="bench")
    context = {
        "case_ref": "RC-2099-0001",
        "step": 4,
        "milestone": "document-return",
        "title": "Return identity documents",
        "due_on": "2027-01-15",
        "verification_method": "Receipt signed by the worker; off-site interview",
    }
    with unit_of_work() as session:
        from sqlmodel import select

        lead = session.exec(select(Stakeholder).where(Stakeholder.key == "lena.lead")).one()
        for i in range(n):
            channel = NotificationChannel.EMAIL if i % 2 == 0 else NotificationChannel.CHAT
            session.add(
                Notification(
                    event="milestone_due_soon",
                    recipient_id=lead.id,
                    channel=channel,
                    locale=Locale.EN,
                    template="milestone_due_soon",
                    context=context,
                    idempotency_key=f"bench:{i}",
                    status=NotificationStatus.PENDING,
                    created_at=now,
                    next_attempt_at=now,
                )
            )
    import tasks.orchestration.runs  # noqa: F401  (a drain runs inside a flow: Prefect is loaded)

    say(f"draining {n} notifications ({n // 2} e-mails, {n - n // 2} chat) through the outbox")
    t0 = time.perf_counter()
    report = deliver_due(now=now, limit=n)
    outbox = time.perf_counter() - t0
    assert report.delivered == n, report
    assert len(mail.messages) == n // 2 and len(chat.delivered()) == n - n // 2

    say("sending the same messages with apprise directly (rendered once, outside the loop)")
    smtp = settings.smtp_url.get_secret_value() if settings.smtp_url else ""
    webhook = os.environ["REMEDY_CHAT_OPS"]
    rendered = {
        "html": render("milestone_due_soon", fmt="html", locale=Locale.EN, context=_ctx(context)),
        "md": render("milestone_due_soon", fmt="md", locale=Locale.EN, context=_ctx(context)),
    }
    t0 = time.perf_counter()
    for i in range(n):
        if i % 2 == 0:
            url = email_url(smtp, to="lena.lead@acme.example", key=f"bare:{i}")
            r = rendered["html"]
        else:
            from models.enums import ChatKind

            url = chat_url(webhook, kind=ChatKind.JSON, key=f"bare:{i}")
            r = rendered["md"]
        send(url, channel="bench", subject=r.subject, body=r.body, fmt=r.format)
    bare = time.perf_counter() - t0
    del apprise
    ratio = outbox / bare
    print()
    print("| drain of the outbox | messages | seconds | messages/s |")
    print("|---|---:|---:|---:|")
    print(
        f"| outbox (claim, render, send, record, audit) | {n} | {outbox:.2f} | {n / outbox:.0f} |"
    )
    print(f"| bare apprise loop (same messages) | {n} | {bare:.2f} | {n / bare:.0f} |")
    print(f"| ratio outbox / bare | | {ratio:.2f}x | target <= 1.5x |")
    return 0


def _ctx(context: dict[str, object]) -> dict[str, object]:
    from tasks.drain import BASE_CONTEXT

    return {**BASE_CONTEXT, **context, "visibility": "narrative"}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
