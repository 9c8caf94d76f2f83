"""The `remedy` command line: set up the case store, take in reports, look at cases."""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from cyclopts import App, CycloptsError, Parameter
from rich.console import Console
from rich.table import Table

from flows.cli.report import register as register_reports
from models.enums import CaseStatus, ConsentMethod, ConsentPurpose, MilestoneStatus, Role

if TYPE_CHECKING:
    from tasks.controls import ControlResult

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

app = App(name="remedy", help="Remediation cases for victims of trafficking and forced labour.")
db_app = App(name="db", help="The case store's schema.")
key_app = App(name="key", help="The encryption key for identifying data.")
audit_app = App(name="audit", help="The audit chain.")
directory_app = App(name="directory", help="Organisations and stakeholders.")
members_app = App(name="members", help="Who plays which role on a case.")
milestone_app = App(name="milestone", help="Progress on a plan's milestones.")
consent_app = App(name="consent", help="Consent of affected persons.")
case_app = App(name="case", help="Close a case early or reopen a closed one.")
plan_app = App(name="plan", help="A case's action plan.")
notifications_app = App(name="notifications", help="The outbox, its templates and delivery.")
for sub in (
    db_app,
    key_app,
    audit_app,
    directory_app,
    members_app,
    milestone_app,
    consent_app,
    case_app,
    plan_app,
    notifications_app,
):
    app.command(sub)
register_reports(app)


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _fail(message: str, code: int = EXIT_FAILED) -> int:
    err.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    return code


@key_app.command(name="init")
def key_init() -> int:
    """Create the local key file (mode 0600) unless a key is configured already."""
    from models.settings import get_settings
    from tasks.store.vault import init_key_file

    settings = get_settings()
    if settings.encryption_key is not None:
        out.print("An encryption key is set in REMEDY_ENCRYPTION_KEY; no key file needed.")
        return EXIT_OK
    path = settings.resolved_key_file()
    if init_key_file(path):
        out.print(
            f"Created {path} (readable by you only). Back it up: without it, "
            "identifying data cannot be read."
        )
    else:
        out.print(f"Key file {path} already exists; left as it is.")
    return EXIT_OK


@db_app.command(name="upgrade")
def db_upgrade() -> int:
    """Create or migrate the case store to the newest schema."""
    from alembic import command

    from migrations import alembic_config
    from models.settings import get_settings

    settings = get_settings()
    command.upgrade(
        alembic_config(settings.resolved_database_url(), settings.database_schema), "head"
    )
    out.print("Case store is at the newest schema.")
    return EXIT_OK


@directory_app.command(name="load")
def directory_load(file: Path) -> int:
    """Load organisations and stakeholders from a YAML or JSON file (insert or update by key)."""
    from models.intake import DirectoryIn
    from tasks.context import utcnow
    from tasks.inputs import read_document, validate
    from tasks.store.directory import load_directory

    directory = validate(DirectoryIn, read_document(file), source=str(file))
    result = load_directory(directory, now=utcnow(), actor=_actor())
    out.print(
        f"Organisations: {result.organisations_added} added, {result.organisations_updated} "
        f"updated. Stakeholders: {result.stakeholders_added} added, "
        f"{result.stakeholders_updated} updated."
    )
    return EXIT_OK


@app.command(name="intake")
def intake(file: Path, *, start: bool = True) -> int:
    """Validate a report (JSON or YAML), open a case for it, and print the case reference.

    With a Prefect server configured (PREFECT_API_URL), the case's run is started too
    (--no-start leaves that to `remedy start REF`).
    """
    import os

    from tasks.context import utcnow
    from tasks.intake import open_case, read_report

    now = utcnow()
    report = read_report(file, now=now)
    result = open_case(report, now=now, actor=_actor())
    if result.duplicate:
        out.print(f"{result.reference} (this report is already known; nothing new was stored)")
        return EXIT_OK
    out.print(result.reference)
    if start and os.environ.get("PREFECT_API_URL"):
        return case_start(result.reference)
    return EXIT_OK


@app.command(name="start")
def case_start(reference: str) -> int:
    """Start (or find again) the remediation-case run of a case on the Prefect server."""
    from tasks.orchestration.runs import ENTRY_FLOW, flow_run_link, start_flow
    from tasks.store.cases import case_summary

    case_summary(reference)  # the case must exist
    run_id = start_flow(
        ENTRY_FLOW, reference, idempotency_key=f"{reference.lower()}-{ENTRY_FLOW}", step=None
    )
    err.print(f"Started {ENTRY_FLOW} for {reference}: {flow_run_link(run_id) or run_id}")
    return EXIT_OK


@app.command(name="cases")
def cases(status: CaseStatus | None = None) -> int:
    """List cases, newest first."""
    from tasks.store.cases import list_cases

    table = Table("reference", "step", "state", "status", "severity", "opened")
    for row in list_cases(status=status):
        table.add_row(
            row.reference,
            str(row.step),
            row.state.value,
            row.status.value,
            row.severity or "-",
            row.opened_at.strftime("%Y-%m-%d %H:%M"),
        )
    out.print(table)
    return EXIT_OK


@app.command(name="show")
def show(
    reference: str,
    *,
    reveal: bool = False,
    reason: Annotated[
        str | None, Parameter(help="Why identifying data is needed (audited).")
    ] = None,
    as_json: Annotated[bool, Parameter(name="--json")] = False,
) -> int:
    """Print a case's summary; --reveal also decrypts identifying data (audited, needs --reason)."""
    from tasks.context import utcnow
    from tasks.store.cases import case_summary, reveal_identifying_data

    if reveal and not (reason and reason.strip()):
        return _fail(
            "--reveal needs --reason: every read of identifying data is audited", EXIT_BAD_INPUT
        )
    summary = case_summary(reference)
    if as_json:
        out.print_json(summary.model_dump_json())
    else:
        _print_summary(summary)
    if reveal:
        assert reason is not None
        revealed = reveal_identifying_data(
            reference, actor=_actor(), reason=reason.strip()[:200], now=utcnow()
        )
        out.rule("Identifying data (this read is recorded in the audit chain)")
        out.print(json.dumps(revealed.model_dump(), indent=2, ensure_ascii=False), markup=False)
    return EXIT_OK


def _print_summary(s: object) -> None:
    from tasks.store.cases import CaseSummary

    assert isinstance(s, CaseSummary)
    out.rule(f"Case {s.reference}")
    out.print(
        f"Step {s.step} of 6: {s.step_title} (state: {s.state.value}, status: {s.status.value})"
    )
    out.print(
        f"Severity: {s.severity or '-'}   Involvement: {s.involvement or '-'}   "
        f"Response level: {s.response_level or '-'}"
    )
    out.print(
        f"Opened: {s.opened_at:%Y-%m-%d %H:%M} UTC"
        + (f"   Closed: {s.closed_at:%Y-%m-%d %H:%M} UTC" if s.closed_at else "")
    )
    for name, when in s.deadlines.items():
        if when:
            out.print(f"  {name.replace('_', ' ')}: {when:%Y-%m-%d %H:%M} UTC")
    out.print(
        f"Allegation: {s.source_type} via {s.channel}{' (anonymous)' if s.anonymous else ''}, "
        f"received {s.received_at:%Y-%m-%d}, occurred {s.occurred_on or 'unknown'}"
    )
    out.print(f"Where: {s.country}{' / ' + s.site if s.site else ''}   Mineral: {s.mineral}")
    if s.reported_indicators:
        out.print("Reported ILO indicators: " + ", ".join(s.reported_indicators))
    for o in s.organisations:
        out.print(f"  organisation: {o['name']} ({o['type']}, {o['relation']})")
    people = Table(
        "pseudonym", "age band", "minor", "age uncertain", "sex", "nationality", "languages"
    )
    for p in s.persons:
        people.add_row(
            p.pseudonym,
            p.age_band,
            "yes" if p.is_minor else "no",
            "yes" if p.age_uncertain else "no",
            p.sex,
            p.nationality or "-",
            ",".join(p.languages) or "-",
        )
    out.print(people)
    if s.members:
        out.print("Members: " + ", ".join(f"{m['stakeholder']} ({m['role']})" for m in s.members))
    out.print(f"Audit events: {s.audit_events}")


@members_app.command(name="add")
def members_add(reference: str, stakeholder: str, role: Role) -> int:
    """Give a stakeholder a role on a case (audited)."""
    from tasks.context import utcnow
    from tasks.store.directory import MembershipError, add_member

    try:
        added = add_member(reference, stakeholder, role, actor=_actor(), now=utcnow())
    except MembershipError as exc:
        return _fail(str(exc))
    out.print(f"{stakeholder} is {role.value} on {reference}" + ("" if added else " (already)"))
    return EXIT_OK


@members_app.command(name="remove")
def members_remove(reference: str, stakeholder: str, role: Role) -> int:
    """Take a role on a case away from a stakeholder (audited)."""
    from tasks.context import utcnow
    from tasks.store.directory import MembershipError, remove_member

    try:
        removed = remove_member(reference, stakeholder, role, actor=_actor(), now=utcnow())
    except MembershipError as exc:
        return _fail(str(exc))
    out.print(
        f"{stakeholder} is no longer {role.value} on {reference}" if removed else "No change."
    )
    return EXIT_OK


@milestone_app.command(name="update")
def milestone_update(
    reference: str,
    key: str,
    *,
    status: MilestoneStatus,
    by: Annotated[str, Parameter(help="Your stakeholder key (owner or case lead).")],
    note: str = "",
    evidence: Annotated[
        list[str] | None, Parameter(help="Evidence reference (repeatable), e.g. doc:receipt-12.")
    ] = None,
) -> int:
    """Record progress on a milestone: done (owner), verified or waived (case lead)."""
    from tasks.context import utcnow
    from tasks.steps.implement import MilestoneUpdateError, update_milestone

    try:
        result = update_milestone(
            reference, key, status=status, by=by, note=note, evidence=evidence or [], now=utcnow()
        )
    except MilestoneUpdateError as exc:
        return _fail(str(exc))
    out.print(f"{reference} {key}: {result.status.value}; {result.open_milestones} open.")
    if result.plan_completed:
        out.print("Every milestone is verified or waived: the case moves to closure.")
        _hand_over(reference)
    return EXIT_OK


@milestone_app.command(name="extend")
def milestone_extend(
    reference: str,
    key: str,
    *,
    to: date,
    reason: str,
    by: Annotated[str, Parameter(help="Your stakeholder key (the milestone's owner).")],
) -> int:
    """Ask for a later due date for a milestone (its owner); the case lead decides."""
    from tasks.context import utcnow
    from tasks.steps.implement import MilestoneUpdateError, request_extension

    try:
        request_extension(reference, key, to=to, reason=reason, by=by, now=utcnow())
    except MilestoneUpdateError as exc:
        return _fail(str(exc))
    out.print(f"{reference} {key}: extension to {to} asked; the case lead decides.")
    return EXIT_OK


@milestone_app.command(name="extension")
def milestone_extension(
    reference: str,
    key: str,
    *,
    approve: bool = False,
    refuse: bool = False,
    by: Annotated[str, Parameter(help="Your stakeholder key (the case lead).")],
    reason: str = "",
) -> int:
    """Approve or refuse a milestone's requested extension (the case lead)."""
    from tasks.context import utcnow
    from tasks.steps.implement import MilestoneUpdateError, decide_extension

    if approve == refuse:
        return _fail("say --approve or --refuse", EXIT_BAD_INPUT)
    try:
        due = decide_extension(reference, key, approve=approve, by=by, now=utcnow(), reason=reason)
    except MilestoneUpdateError as exc:
        return _fail(str(exc))
    out.print(f"{reference} {key}: due {due}" + (" (extended)" if approve else " (unchanged)"))
    return EXIT_OK


@app.command(name="monitor")
def monitor(*, now: datetime | None = None) -> int:
    """Run one monitoring sweep now (or as of --now), against the configured Prefect server."""
    from flows.monitor_milestones import monitor_milestones

    summary = monitor_milestones(now=now.astimezone(UTC) if now else None)
    out.print(", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in summary.items()))
    return EXIT_OK


def _hand_over(reference: str) -> None:
    """Start the case's next step if a Prefect server is configured (else the sweep will)."""
    import os

    if not os.environ.get("PREFECT_API_URL"):
        err.print("No PREFECT_API_URL: the monitoring sweep starts the next step.")
        return
    from tasks.context import utcnow
    from tasks.orchestration.runs import hand_over

    started = hand_over(reference, now=utcnow())
    if started:
        err.print(f"Started {started} for {reference}.")


def _settle(result: ControlResult) -> None:
    """After a control: cancel the runs left waiting on cancelled decisions, start the new step,
    and show the case's new state in its case view."""
    import os

    if not os.environ.get("PREFECT_API_URL"):
        if result.moved:
            _hand_over(result.case_ref)  # says the sweep will start it
        return
    from tasks.context import utcnow
    from tasks.orchestration.runs import cancel_waiting_runs
    from tasks.reports.case_view import publish_case_view

    try:
        if result.stale_runs:
            n = cancel_waiting_runs(result.stale_runs, why=f"{result.case_ref} left the step")
            err.print(f"Cancelled {n} run(s) that waited on decisions no longer needed.")
        publish_case_view(result.case_ref, now=utcnow())
    except Exception as exc:  # the store is right either way; a resumed stale run ends idle
        err.print(f"Could not update Prefect's side ({type(exc).__name__}); the store is updated.")
    if result.moved:
        _hand_over(result.case_ref)


def _control(call: Callable[[], ControlResult], said: Callable[[ControlResult], str]) -> int:
    """Run a case control, say where the case is now, then settle Prefect's side of it."""
    from tasks.controls import ControlError

    try:
        result = call()
    except ControlError as exc:
        return _fail(str(exc))
    out.print(said(result))
    _settle(result)
    return EXIT_OK


@consent_app.command(name="withdraw")
def consent_withdraw(
    reference: str,
    pseudonym: str,
    *,
    purpose: ConsentPurpose = ConsentPurpose.CASE_HANDLING,
    by: Annotated[str, Parameter(help="Your stakeholder key (who records the withdrawal).")],
) -> int:
    """Record a person's withdrawn consent: messages mentioning them stop; the case holds."""
    from tasks.context import utcnow
    from tasks.controls import withdraw_consent

    def call() -> ControlResult:
        result = withdraw_consent(reference, pseudonym, purpose=purpose, by=by, now=utcnow())
        return result.model_copy(update={"moved": False})  # a held case starts no step

    return _control(
        call,
        lambda r: (
            f"{reference} {pseudonym}: consent for {purpose.value} withdrawn; case {r.state.value}."
        ),
    )


@consent_app.command(name="renew")
def consent_renew(
    reference: str,
    pseudonym: str,
    *,
    purpose: ConsentPurpose = ConsentPurpose.CASE_HANDLING,
    method: ConsentMethod = ConsentMethod.VERBAL,
    language: str | None = None,
    interpreter: bool = False,
    by: Annotated[
        str, Parameter(help="Your stakeholder key (case lead or victim representative).")
    ],
) -> int:
    """Record a person's renewed consent; a held case resumes its step (asked afresh)."""
    from tasks.context import utcnow
    from tasks.controls import renew_consent

    return _control(
        lambda: renew_consent(
            reference,
            pseudonym,
            purpose=purpose,
            by=by,
            method=method,
            language=language,
            interpreter_used=interpreter,
            now=utcnow(),
        ),
        lambda r: (
            f"{reference} {pseudonym}: consent for {purpose.value} renewed; case {r.state.value}."
        ),
    )


@case_app.command(name="close")
def case_close(
    reference: str,
    *,
    reason: str,
    by: Annotated[
        str, Parameter(help="Your stakeholder key (senior approver; or case lead of a held case).")
    ],
) -> int:
    """Send a case to closure before its plan is done (unresolved, or after a withdrawal)."""
    from tasks.context import utcnow
    from tasks.controls import close_early

    return _control(
        lambda: close_early(reference, by=by, reason=reason, now=utcnow()),
        lambda r: f"{reference}: {r.state.value}; two approvers sign the closure in step 5.",
    )


@case_app.command(name="reopen")
def case_reopen(
    reference: str,
    *,
    to: Literal["verification", "remedy"],
    reason: str,
    by: Annotated[str, Parameter(help="Your stakeholder key (case lead or senior approver).")],
) -> int:
    """Reopen a closed case: to verification (new facts) or to plan design (remedy failed)."""
    from tasks.context import utcnow
    from tasks.controls import reopen_case

    return _control(
        lambda: reopen_case(reference, to=to, by=by, reason=reason, now=utcnow()),
        lambda r: f"{reference}: reopened, {r.state.value}.",
    )


@plan_app.command(name="revise")
def plan_revise(
    reference: str,
    *,
    reason: str,
    by: Annotated[str, Parameter(help="Your stakeholder key (the case lead).")],
    agreed_by: Annotated[
        str, Parameter(help="The victim representative who agreed to the revision.")
    ],
) -> int:
    """Take a plan under way back to design; step 3 drafts its next version."""
    from tasks.context import utcnow
    from tasks.controls import revise_plan

    return _control(
        lambda: revise_plan(reference, by=by, agreed_by=agreed_by, reason=reason, now=utcnow()),
        lambda r: f"{reference}: {r.state.value}; the plan's next version is drafted in step 3.",
    )


@notifications_app.command(name="deliver")
def notifications_deliver(
    *, case: str | None = None, limit: int = 2000, every: float | None = None
) -> int:
    """Send what the outbox holds (of one case, or all); --every N keeps draining every N s."""
    import time

    from tasks.context import utcnow
    from tasks.drain import deliver_due

    while True:
        report = deliver_due(now=utcnow(), limit=limit, case_ref=case)
        out.print(
            f"{report.delivered} delivered, {report.failed} to retry, {report.gave_up} given up, "
            f"{report.suppressed} suppressed"
        )
        if every is None:
            return EXIT_OK
        time.sleep(every)


@notifications_app.command(name="check")
def notifications_check() -> int:
    """Check routing, templates and translations; list texts a locale does not translate."""
    from notifications.render import missing_translations
    from tasks.context import current_routing

    current_routing()  # raises with every problem if the routing file is wrong
    missing = missing_translations()
    problems = 0
    for locale, texts in missing.items():
        for text in texts:
            out.print(f"{locale}: missing translation (English is sent): {text}", markup=False)
            problems += 1
    if not problems:
        out.print("Routing and templates are valid; every text is translated.")
    return EXIT_FAILED if problems else EXIT_OK


@app.command(name="doctor")
def doctor(*, as_json: Annotated[bool, Parameter(name="--json")] = False) -> int:
    """List cases whose stored state and Prefect runs disagree (exit 1 if any)."""
    from tasks.context import utcnow
    from tasks.monitoring.doctor import diagnose

    findings = diagnose(now=utcnow())
    if as_json:
        out.print_json(json.dumps([f.model_dump(mode="json") for f in findings]))
    elif not findings:
        out.print("Store and Prefect agree: every waiting decision has a live suspended run.")
    else:
        table = Table("case", "step", "problem", "flow run", "run state", "repair")
        for f in findings:
            table.add_row(
                f.case_ref,
                str(f.step),
                f.detail,
                str(f.flow_run_id or "-"),
                f.run_state or "-",
                f.repair,
            )
        out.print(table)
    return EXIT_FAILED if findings else EXIT_OK


@app.command(name="up")
def up(*, port: int = 4200, approval_port: int | None = None) -> int:
    """Start the Prefect server (unless one is configured), the runner and the approval page."""
    from flows.local.stack import StackError
    from flows.local.up import prepare_store, run_until_interrupted, start_stack
    from models.settings import get_settings

    prepare_store()
    try:
        stack = start_stack(
            get_settings().home,
            port,
            out.print,
            approval_port=approval_port or get_settings().approval_port,
        )
    except StackError as exc:
        return _fail(str(exc))
    out.print(f"Remedy is up. Prefect UI: {stack.ui_url}  (Ctrl-C stops everything)")
    out.print(f"Logs: {stack.home / 'logs'}")
    return run_until_interrupted(stack, out.print)


def _parse_value(raw: str) -> object:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _prompt_fields(form: type, values: dict[str, object]) -> None:
    """Ask for each form field not given yet, showing its choices (interactive use only)."""
    from rich.prompt import Prompt

    schema = form.model_json_schema()  # type: ignore[attr-defined]
    defs = schema.get("$defs", {})
    for name, spec in schema["properties"].items():
        if name in values or name in ("approver", "approval_code"):
            continue
        ref = spec.get("$ref") or (spec.get("allOf") or [{}])[0].get("$ref")
        choices = defs[ref.split("/")[-1]].get("enum") if ref else spec.get("enum")
        default = spec.get("default")
        label = spec.get("title", name)
        if spec.get("type") == "boolean":
            answer = Prompt.ask(
                f"{label} (yes/no)",
                choices=["yes", "no"],
                default=None if default is None else ("yes" if default else "no"),
            )
            values[name] = answer == "yes"
        elif choices:
            values[name] = Prompt.ask(
                label,
                choices=[str(c) for c in choices],
                default=None if default is None else str(default),
            )
        elif spec.get("type") == "array":
            raw = Prompt.ask(f"{label} (comma-separated)", default="")
            values[name] = [v.strip() for v in raw.split(",") if v.strip()]
        elif spec.get("type") in ("integer", "number"):
            values[name] = _parse_value(Prompt.ask(label, default=str(default or 0)))
        else:
            values[name] = Prompt.ask(label, default=str(default or ""))


@app.command(name="decide")
def decide(
    reference: str,
    *,
    kind: Annotated[str | None, Parameter(help="Which waiting decision, if several.")] = None,
    as_: Annotated[str | None, Parameter(name="--as", help="Your stakeholder key.")] = None,
    code: Annotated[str | None, Parameter(help="One-time code (prompted if absent).")] = None,
    set_: Annotated[
        list[str] | None, Parameter(name="--set", help="field=value (repeatable; JSON values).")
    ] = None,
    wait: Annotated[float, Parameter(help="Seconds to wait for the step's verdict.")] = 120.0,
) -> int:
    """Show a case's waiting decision and submit it through the Prefect API, as the UI does."""
    import sys as _sys
    import time

    from pydantic import ValidationError
    from rich.markdown import Markdown
    from rich.prompt import Prompt

    from models.enums import DecisionRequestStatus
    from tasks.decisions.requests import describe_request, waiting_requests
    from tasks.decisions.resume import SubmitFailedError, load_request, submit_decision
    from tasks.decisions.submissions import refusal_reason
    from tasks.inputs import explain
    from tasks.orchestration.runs import flow_run_link
    from tasks.steps.table import spec_of

    waiting = waiting_requests(reference)
    if kind:
        waiting = [r for r in waiting if r.kind.value == kind]
    if not waiting:
        return _fail(f"{reference} has no waiting decision" + (f" of kind {kind}" if kind else ""))
    if len(waiting) > 1:
        kinds = ", ".join(r.kind.value for r in waiting)
        return _fail(f"{reference} waits for several decisions ({kinds}); choose one with --kind")
    request = waiting[0]
    out.print(Markdown(describe_request(request.id)))
    link = flow_run_link(request.flow_run_id)
    if link:
        out.print(f"Also in the Prefect UI: {link}")
    interactive = _sys.stdin.isatty()
    values: dict[str, object] = {}
    for item in set_ or []:
        name, sep, raw = item.partition("=")
        if not sep:
            return _fail(f"--set {item}: use field=value", EXIT_BAD_INPUT)
        values[name.strip()] = _parse_value(raw)
    form = spec_of(request.kind).form
    if interactive:
        _prompt_fields(form, values)
    values["approver"] = as_ or (Prompt.ask("Your stakeholder key") if interactive else "")
    values["approval_code"] = code or (
        Prompt.ask("One-time approval code", password=True) if interactive else ""
    )
    try:
        form.model_validate(values)
    except ValidationError as exc:
        err.print(
            "[bold red]error:[/] the decision is incomplete; nothing was submitted.", markup=True
        )
        for line in explain(exc):
            err.print(f"  - {line}", markup=False)
        return EXIT_BAD_INPUT
    try:
        submit_decision(request.id, values)
    except SubmitFailedError as exc:
        return _fail(str(exc))
    out.print("Submitted; the step checks it when it resumes.")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        current = load_request(request.id)
        if current.status == DecisionRequestStatus.DECIDED:
            out.print(f"Accepted: the {request.kind.value} decision is recorded.")
            return EXIT_OK
        if current.status == DecisionRequestStatus.SUPERSEDED:
            reason = refusal_reason(request.id) or "see the audit chain"
            return _fail(f"Refused: {reason}. The step asks again.")
        if current.status == DecisionRequestStatus.CANCELLED:
            return _fail("The decision is no longer needed: the case left its step.")
        time.sleep(1.0)
    out.print("The step has not checked the submission yet; see `remedy show`.")
    return EXIT_OK


@audit_app.command(name="verify")
def audit_verify(reference: str) -> int:
    """Check a case's audit chain ('system' for the directory's) and name the first broken link."""
    from tasks.store.audit import verify_chain
    from tasks.store.cases import get_case
    from tasks.store.db import read_only

    with read_only() as session:
        if reference != "system":
            get_case(session, reference)
        report = verify_chain(session, reference)
    if report.ok:
        out.print(f"{reference}: audit chain intact ({report.events} events).")
        return EXIT_OK
    return _fail(f"{reference}: audit chain broken at event #{report.broken_at}: {report.problem}")


def main(argv: list[str] | None = None) -> None:
    """Run the command line; exit 2 on bad input, 1 on other failures."""
    from notifications.routing import RoutingError
    from tasks.inputs import InputError
    from tasks.store.cases import CaseNotFoundError
    from tasks.store.vault import VaultError

    try:
        code = app(argv, exit_on_error=False, print_error=True, result_action="return_value")
    except CycloptsError:
        code = EXIT_BAD_INPUT
    except InputError as exc:
        err.print(
            f"[bold red]error:[/] {exc.source} was not accepted; nothing was stored.", markup=True
        )
        for line in exc.problems:
            err.print(f"  - {line}", markup=False)
        code = EXIT_BAD_INPUT
    except CaseNotFoundError as exc:
        code = _fail(str(exc))
    except VaultError as exc:
        code = _fail(str(exc))
    except RoutingError as exc:
        code = _fail(str(exc))
    sys.exit(code if isinstance(code, int) else EXIT_OK)


if __name__ == "__main__":
    main()
