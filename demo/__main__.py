"""`make demo`: the sample case through all six steps against the embedded stack.

Sets up a fresh demo home (var/demo: case store, key, Prefect server data, a local mail catcher
writing var/demo/mail/*.eml and a chat receiver logging var/demo/chat.jsonl), starts a Prefect
server, the runner and the approval page, takes in the sample report, and lets scripted
stakeholders take every decision through the Prefect API as the UI's Resume button does, except
the first: the case lead takes it from the link in her e-mail, on the approval page. Then a
monitoring sweep on an accelerated clock finds a milestone overdue and escalates it, the plan is
completed, the case closes, and the lessons report is printed. Stops what it started.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
HOME = ROOT / "var" / "demo"


def _remedy(*argv: str) -> None:
    from flows.cli import main as remedy

    print(f"\n$ remedy {' '.join(argv)}", flush=True)
    try:
        remedy(list(argv))
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise


def main() -> int:
    """Run the demo end to end; return the exit status."""
    shutil.rmtree(HOME, ignore_errors=True)
    os.environ["REMEDY_HOME"] = str(HOME)
    for name in ("REMEDY_DATABASE_URL", "REMEDY_DATABASE_SCHEMA", "PREFECT_API_URL"):
        os.environ.pop(name, None)
    from demo.catchers import ChatReceiver, MailCatcher
    from flows.local.stack import free_port, port_open
    from flows.local.up import prepare_store, start_stack

    mail = MailCatcher(port=free_port(), folder=HOME / "mail").start()
    chat = ChatReceiver(port=free_port(), log=HOME / "chat.jsonl").start()
    os.environ["REMEDY_SMTP_URL"] = mail.url()
    os.environ["REMEDY_CHAT_OPS"] = f"json://127.0.0.1:{chat.port}/hooks/remedy-ops"
    page_port = 8686 if not port_open(8686) else free_port()
    os.environ["REMEDY_APPROVAL_BASE_URL"] = f"http://127.0.0.1:{page_port}"
    prepare_store()
    _remedy("directory", "load", str(EXAMPLES / "stakeholders.yaml"))
    port = 4200 if not port_open(4200) else free_port()
    started = time.monotonic()
    stack = start_stack(HOME, port, print, approval_port=page_port)
    try:
        from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

        os.environ["PREFECT_API_URL"] = stack.api_url
        with temporary_settings({PREFECT_API_URL: stack.api_url, PREFECT_UI_URL: stack.ui_url}):
            return _run_case(stack.ui_url, mail, chat, started)
    finally:
        print("\nStopping the demo stack ...", flush=True)
        stack.stop()
        mail.stop()
        chat.stop()


def _run_case(ui: str, mail: object, chat: object, started: float) -> int:
    from demo.catchers import ChatReceiver, MailCatcher
    from demo.scripted import ScriptedStakeholders
    from models.enums import CaseState
    from tasks.context import utcnow
    from tasks.intake import open_case, read_report

    assert isinstance(mail, MailCatcher) and isinstance(chat, ChatReceiver)
    report = read_report(EXAMPLES / "reports" / "tin-kivu.yaml", now=utcnow())
    reference = open_case(report, now=utcnow(), actor="demo").reference
    _remedy("show", reference)
    _remedy("start", reference)

    print("\nThe case lead decides the screening from the link in her e-mail:")
    _decide_on_the_page(mail, reference, "lena.lead@acme.example")

    print("\nScripted stakeholders take the next decisions as they come (Prefect API, as the UI):")
    people = ScriptedStakeholders(
        on_step=lambda s: print(f"  {s.what:<44} by {s.who:<15} {_link(ui, s.where)}", flush=True)
    )
    people.drive(reference, until=CaseState.IMPLEMENTING, timeout=900)
    _accelerated_monitoring(reference, mail)
    people.drive(reference, until=CaseState.LESSONS_CAPTURED, timeout=900)
    _wait_for_runs(reference)

    _remedy("show", reference)
    _remedy("audit", "verify", reference)
    _remedy("report", "lessons")
    subjects = [str(m["Subject"]) for m in mail.messages]
    print(f"\n{len(subjects)} e-mails arrived in {HOME / 'mail'} (one .eml each), for example:")
    for subject in subjects[:6]:
        print(f"  {subject}")
    print(f"{len(chat.delivered())} chat messages arrived, logged in {HOME / 'chat.jsonl'}.")
    print(f"\nCase {reference} went through all six steps in {time.monotonic() - started:.0f} s.")
    print(f"Its runs in the Prefect UI: {ui}/runs?tags=case:{reference}")
    print(f"Its case view (artifact):   {ui}/artifacts/key/case-{reference.lower()}")
    print(f"The portfolio (artifact):   {ui}/artifacts/key/remedy-portfolio")
    print(f"To browse it again later:   REMEDY_HOME={HOME} .venv/bin/remedy up")
    return 0


def _wait_for_runs(reference: str, timeout: float = 120.0) -> None:
    """Let the case's last run finish its work (its messages) before the demo counts and stops."""
    from tasks.orchestration.runs import case_runs

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = case_runs(reference)
        if runs and all(r.state is not None and r.state.is_final() for r in runs):
            return
        time.sleep(0.5)
    print(f"(some runs of {reference} were still going after {timeout:.0f} s)")


def _decide_on_the_page(mail: object, reference: str, to: str) -> None:
    """Open the approval link from the e-mail, read the form, and submit it, as a person would."""
    import httpx

    from demo.catchers import MailCatcher
    from models.enums import DecisionRequestStatus
    from tasks.decisions.requests import waiting_requests
    from tasks.decisions.resume import load_request

    assert isinstance(mail, MailCatcher)
    deadline = time.monotonic() + 180
    link = None
    while time.monotonic() < deadline and link is None:
        for message in reversed(mail.messages):
            if str(message["To"]) == to and "Screen the allegation" in str(message["Subject"]):
                text = message.get_body(("plain",))
                found = re.search(
                    r"https?://127\.0\.0\.1:\d+/a/\S+", text.get_content() if text else ""
                )
                link = found.group(0) if found else None
                break
        time.sleep(0.5)
    if link is None:
        raise TimeoutError("the screening e-mail did not arrive")
    [request] = waiting_requests(reference)
    print(f"  GET  {link[:60]}...  (shows the decision; changes nothing)")
    page = httpx.get(link, timeout=30)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None, "the approval page shows no form"
    form = {"csrf": csrf.group(1), "stakeholder_key": "lena.lead", "outcome": "accepted"}
    answer = httpx.post(link, data=form, timeout=90)
    print(f"  POST the form: HTTP {answer.status_code}")
    while time.monotonic() < deadline:
        if load_request(request.id).status == DecisionRequestStatus.DECIDED:
            print("  screening (accepted)                         by lena.lead       approval page")
            return
        time.sleep(0.5)
    raise TimeoutError("the decision from the approval page was not recorded")


def _accelerated_monitoring(reference: str, mail: object) -> None:
    """Sweep as if days had passed: a milestone goes overdue, then is escalated."""
    from demo.catchers import MailCatcher
    from flows.monitor_milestones import monitor_milestones
    from tasks.context import utcnow

    assert isinstance(mail, MailCatcher)
    first_due = _first_due(reference)
    print(f"\nMonitoring on an accelerated clock (the first milestone is due {first_due}):")
    for days in (1, 4):
        now = utcnow().replace(
            year=first_due.year, month=first_due.month, day=first_due.day
        ) + timedelta(days=days)
        seen = len(mail.messages)
        summary = monitor_milestones(now=now)
        # the sweep's own messages: their idempotency keys name the threshold
        sent = [
            f"{m['To']}: {m['Subject']}"
            for m in mail.messages[seen:]
            if str(m["X-Remedy-Key"]).startswith(("due-", "overdue:", "escalated:"))
        ]
        print(f"  sweep as of {now:%Y-%m-%d}: {summary['reminders_sent']} reminder(s), e.g.")
        for line in sent[:4]:
            print(f"    {line}")


def _first_due(reference: str) -> date:
    from sqlmodel import col, select

    from models.enums import PlanStatus
    from models.tables import PlanAction
    from tasks.case_state import current_plan
    from tasks.store.cases import get_case
    from tasks.store.db import read_only

    with read_only() as session:
        case = get_case(session, reference)
        plan = current_plan(session, case.id, PlanStatus.APPROVED)
        assert plan is not None
        first = session.exec(
            select(col(PlanAction.due_on))
            .where(PlanAction.plan_id == plan.id)
            .order_by(col(PlanAction.due_on))
        ).first()
        assert first is not None
        return first


def _link(ui: str, where: str) -> str:
    if where.startswith("flow run "):
        return f"{ui}/runs/flow-run/{where.removeprefix('flow run ')}"
    return where


if __name__ == "__main__":
    sys.exit(main())
