"""`make demo`: the sample case through all six steps against the embedded stack.

Sets up a fresh demo home (var/demo: case store, key, Prefect server data, a local mail catcher
writing var/demo/mail/*.eml and a chat receiver logging var/demo/chat.jsonl), starts a Prefect
server, the runner and the approval page, takes in the sample report, and lets scripted
stakeholders take every decision through the Prefect API as the UI's Resume button does, except
the first: the case lead takes it on the approval page, from the link in her e-mail, with a
passkey. The policy has the page take no decision without one, so she first enrols one as a
person would: `remedy passkey invite`, the link from her e-mail, the one-time code from her chat,
and a software authenticator (demo/softkey.py) answering as her browser's would. Meanwhile a
second, anonymous report comes in through the public report page (an HTTP POST, as a browser
without script sends it, demo/reporter.py); the case lead answers its reporter and screens it,
and the reporter's follow-up page is printed as it reads with the receipt code. Then a
monitoring sweep on an accelerated clock finds a milestone overdue and escalates it, the plan is
completed, the case closes, and the lessons report is printed. Stops what it started.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from demo.reporter import PageReceipt
    from demo.softkey import SoftAuthenticator

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
HOME = ROOT / "var" / "demo"
LEAD, LEAD_MAIL = "lena.lead", "lena.lead@acme.example"  # the case lead in examples/
ADVOCATE, ADVOCATE_MAIL = "grace.advocate", "grace.advocate@safepassage.example"


def _remedy(*argv: str) -> None:
    from flows.cli import main as remedy

    print(f"\n$ remedy {shlex.join(argv)}", flush=True)
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
    # a host name, not an IP: passkeys are bound to one (the page listens on 127.0.0.1 only)
    os.environ["REMEDY_APPROVAL_BASE_URL"] = f"http://localhost:{page_port}"
    prepare_store()
    _remedy("directory", "load", str(_directory_mapping_me_to(LEAD)))
    port = 4200 if not port_open(4200) else free_port()
    started = time.monotonic()
    stack = start_stack(HOME, port, print, approval_port=page_port)
    try:
        from prefect.settings import temporary_settings

        os.environ["PREFECT_API_URL"] = stack.api_url
        with temporary_settings(stack.prefect_settings()):
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
    # a store made for trying things out: its sweeps may run on an accelerated clock (below)
    _remedy("db", "simulation", "on")
    report = read_report(EXAMPLES / "reports" / "tin-kivu.yaml", now=utcnow())
    reference = open_case(report, now=utcnow(), actor="demo").reference
    _remedy("show", reference)
    _remedy("start", reference)

    print("\nThe case lead adds a passkey first: the approval page takes no decision without one:")
    device = _enrol_passkey(mail, chat, reference, LEAD, LEAD_MAIL)
    receipt = _report_on_the_page()  # after the invitation: `passkey invite` names the newest case

    print("\nThe case lead decides the screening from the link in her e-mail, with her passkey:")
    _decide_on_the_page(mail, reference, (LEAD, LEAD_MAIL), device)
    _answer_the_reporter(receipt, ui)

    print("\nScripted stakeholders take the next decisions as they come (Prefect API, as the UI):")
    people = ScriptedStakeholders(
        on_step=lambda s: print(f"  {s.what:<44} by {s.who:<15} {_link(ui, s.where)}", flush=True)
    )
    people.drive(reference, until=CaseState.DESIGNING_PLAN, timeout=900)
    _show_the_agreement_page(mail, reference)
    people.drive(reference, until=CaseState.IMPLEMENTING, timeout=900)
    _remedy("ledger", "show", reference)
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
    print(f"The UI asks for the API credential: the line in {HOME / 'prefect-api.auth'}")
    return 0


def _show_the_agreement_page(mail: object, reference: str) -> None:
    """Open the victims' representative's agreement page (from her e-mail) and print the amounts
    it shows each worker: the remedy ledger, by pseudonym, with the total."""
    import httpx

    from models.enums import DecisionKind
    from tasks.decisions.requests import describe_request, waiting_requests

    deadline = time.monotonic() + 300
    while not any(r.kind == DecisionKind.PLAN_AGREEMENT for r in waiting_requests(reference)):
        if time.monotonic() > deadline:
            raise TimeoutError("the plan agreement was not asked for")
        time.sleep(0.5)
    _remedy("notifications", "deliver", "--case", reference)
    link = _mail_link(mail, ADVOCATE_MAIL, "Approuver le plan d'action")  # she reads French
    page = httpx.get(link, timeout=30)
    seen = "it shows" if page.status_code == 200 else "it asks for a passkey she has not added"
    print(f"\n{ADVOCATE} opens the agreement page from her e-mail: {seen} ({page.status_code}).")
    print("What the page shows each worker is owed (the agreement's description, by pseudonym):")
    [request] = [r for r in waiting_requests(reference) if r.kind == DecisionKind.PLAN_AGREEMENT]
    for line in describe_request(request.id, for_page=True).splitlines():
        if line.startswith("| P-") or "Total owed" in line or "to 3 persons" in line:
            print(f"  {' '.join(line.split())}")


def _report_on_the_page() -> PageReceipt:
    """A worker's relative reports on the public page, as a browser without script would: the
    form's GET for its CSRF token, then the POST. The page stores the case and starts its run."""
    from demo.reporter import SAMPLE_FIELDS, file_through_page

    base = os.environ["REMEDY_APPROVAL_BASE_URL"]
    print(f"\nA worker's relative reports on the public page, anonymously ({base}/report):")
    print(f"  GET  {base}/report  (the form and its CSRF token)")
    receipt = file_through_page(base, SAMPLE_FIELDS)
    print(f"  POST the form: HTTP {receipt.status}; the receipt shown once:")
    print(f"  receipt code {receipt.code}  (proof of filing: {receipt.receipt_ref})")
    return receipt


def _answer_the_reporter(receipt: PageReceipt, ui: str) -> None:
    """The case lead answers the page's reporter and screens the report; the reporter then
    opens the follow-up page with the receipt code and reads what it says."""
    from demo.reporter import case_of_receipt, follow_up_page
    from demo.scripted import ScriptedStakeholders
    from models.enums import DecisionKind
    from tasks.decisions.requests import waiting_requests

    ref = case_of_receipt(receipt.receipt_ref)
    print(f"\nThe page's report is case {ref}; the case lead answers its reporter:")
    _remedy("reporter", "reply", ref, "--text", "Thank you. We are checking what you told us.")
    deadline = time.monotonic() + 180
    while not (waiting := waiting_requests(ref)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the screening of {ref} did not wait")
        time.sleep(0.5)
    people = ScriptedStakeholders(
        on_step=lambda s: print(f"  {s.what:<44} by {s.who:<15} {_link(ui, s.where)}", flush=True)
    )
    assert waiting[0].kind == DecisionKind.SCREENING
    people.decide(waiting[0])
    base = os.environ["REMEDY_APPROVAL_BASE_URL"]
    print(f"\nThe reporter opens {base}/follow-up with the receipt code and reads:")
    for line in follow_up_page(base, receipt.code).splitlines():
        print(f"  | {line}")


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


def _directory_mapping_me_to(key: str) -> Path:
    """Write the demo's copy of the sample directory, mapping the account running it to `key`.

    `remedy` commands act as the operating-system account that runs them, as the directory maps
    it (os_users, tasks/actors.py); the sample maps the account `lena` to lena.lead. Whoever runs
    the demo plays her, so `remedy passkey invite` below is hers; nobody else's entry keeps them.
    """
    import yaml

    from flows.cli.common import os_user

    me = os_user()
    data = yaml.safe_load((EXAMPLES / "stakeholders.yaml").read_text(encoding="utf-8"))
    for person in data["stakeholders"]:
        users = [u for u in person.get("os_users", []) if u != me]
        if person["key"] == key:
            users.append(me)
        if users or "os_users" in person:
            person["os_users"] = users
    path = HOME / "stakeholders.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# examples/stakeholders.yaml, with the account running the demo ({me}) as {key}\n"
    path.write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True), "utf-8")
    print(f"\nThe demo runs as the operating-system user {me}; its copy of the directory maps")
    print(f"{me} to {key} (os_users, {path}): the `remedy` commands below act as {key}.")
    return path


def _mail_link(mail: object, to: str, subject: str, timeout: float = 180) -> str:
    """Return the approval page link in the newest e-mail to `to` whose subject has `subject`."""
    from demo.catchers import MailCatcher

    assert isinstance(mail, MailCatcher)
    pattern = re.escape(os.environ["REMEDY_APPROVAL_BASE_URL"]) + r"/a/\S+"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in reversed(mail.messages):
            if str(message["To"]) == to and subject in str(message["Subject"]):
                text = message.get_body(("plain",))
                found = re.search(pattern, text.get_content() if text else "")
                if found:
                    return found.group(0)
        time.sleep(0.5)
    raise TimeoutError(f"no e-mail '{subject}' with an approval page link arrived")


def _chat_code(chat: object, timeout: float = 60) -> str:
    """Return the passkey enrolment code in the newest chat message that carries one."""
    from demo.catchers import ChatReceiver

    assert isinstance(chat, ChatReceiver)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for call in reversed(chat.delivered()):
            found = re.search(r"code to add a passkey: ([A-Z0-9]{8})", call["body"])
            if found:
                return found.group(1)
        time.sleep(0.5)
    raise TimeoutError("the chat message with the enrolment code did not arrive")


def _browser_post(url: str, form: dict[str, str]) -> Any:
    """POST a form as the page's script does from the page: its origin, same-origin."""
    import httpx

    base = os.environ["REMEDY_APPROVAL_BASE_URL"]
    headers = {"Origin": base, "Sec-Fetch-Site": "same-origin"}
    return httpx.post(url, data=form, headers=headers, timeout=90)


def _form_csrf(url: str, passkey_mode: str) -> str:
    """Open a link (GET changes nothing) and return its form's CSRF token."""
    import httpx

    page = httpx.get(url, timeout=30)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None, f"the page shows no form (HTTP {page.status_code})"
    assert f'data-passkey="{passkey_mode}"' in page.text, "the page does not ask for a passkey"
    return csrf.group(1)


def _enrol_passkey(
    mail: object, chat: object, reference: str, key: str, to: str
) -> SoftAuthenticator:
    """Invite `key` to add a passkey and add it from the invitation, as the page's script would
    (flows/web/static/passkey.js): the code and CSRF token to /options for a challenge, the
    authenticator's answer in the form. Return the device that holds the new passkey."""
    from urllib.parse import urlsplit

    from demo.softkey import SoftAuthenticator

    _remedy("passkey", "invite", key)
    print("  (the outbox is drained every minute; the demo sends now)")
    _remedy("notifications", "deliver", "--case", reference)
    print(f"\n  {key} enrols a passkey (link by e-mail, code by chat):")
    link = _mail_link(mail, to, "Add a passkey")
    code = _chat_code(chat)
    print(f"  GET  {link[:60]}...  (the enrolment page; changes nothing)")
    csrf = _form_csrf(link, "create")
    options = _browser_post(f"{link.rstrip('/')}/options", {"csrf": csrf, "code": code})
    assert options.status_code == 200, f"no registration challenge ({options.status_code})"
    print("  POST the code from the chat to .../options: a registration challenge")
    base = os.environ["REMEDY_APPROVAL_BASE_URL"]
    device = SoftAuthenticator(rp_id=urlsplit(base).hostname or "localhost", origin=base)
    form = {"code": code, "passkey": device.create(options.text), "csrf": csrf}
    added = _browser_post(link, form)
    assert added.status_code == 200 and "Passkey added" in added.text, "the passkey was not added"
    print(f"  POST the passkey her device (demo/softkey.py) made: HTTP {added.status_code}")
    return device


def _decide_on_the_page(
    mail: object, reference: str, who: tuple[str, str], device: SoftAuthenticator
) -> None:
    """Open the approval link from the e-mail, read the form, and submit it with the passkey's
    answer to this link's challenge, as a person's browser would."""
    from models.enums import DecisionRequestStatus
    from tasks.decisions.requests import waiting_requests
    from tasks.decisions.resume import load_request

    key, to = who
    link = _mail_link(mail, to, "Screen the allegation")
    [request] = waiting_requests(reference)
    print(f"  GET  {link[:60]}...  (shows the decision; changes nothing)")
    csrf = _form_csrf(link, "get")
    options = _browser_post(f"{link.rstrip('/')}/options", {"csrf": csrf})
    assert options.status_code == 200, f"no passkey challenge ({options.status_code})"
    form = {"csrf": csrf, "stakeholder_key": key, "outcome": "accepted"}
    answer = _browser_post(link, {**form, "passkey": device.get(options.text)})
    print("  POST .../options: a challenge for this link, which her passkey answers")
    print(f"  POST the form with the answer: HTTP {answer.status_code}")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if load_request(request.id).status == DecisionRequestStatus.DECIDED:
            print(f"  screening (accepted)                         by {key:<15} approval page")
            print(f"  {key} decided with her passkey on the approval page")
            return
        time.sleep(0.5)
    raise TimeoutError("the decision from the approval page was not recorded")


def _accelerated_monitoring(reference: str, mail: object) -> None:
    """Sweep as if days had passed: a milestone goes overdue, then is escalated."""
    from demo.catchers import MailCatcher
    from flows.monitor_milestones import simulated_sweep
    from tasks.context import utcnow

    assert isinstance(mail, MailCatcher)
    first_due = _first_due(reference)
    print(f"\nMonitoring on an accelerated clock (the first milestone is due {first_due}):")
    for days in (1, 4):
        now = utcnow().replace(
            year=first_due.year, month=first_due.month, day=first_due.day
        ) + timedelta(days=days)
        seen = len(mail.messages)
        summary = simulated_sweep(now=now)  # `remedy monitor --now`, on a simulation store
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
