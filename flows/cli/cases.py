"""`remedy intake|start|cases|show`, `remedy members ...` and `remedy directory load`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from cyclopts import App, Parameter
from rich.table import Table

from flows.cli.common import EXIT_BAD_INPUT, EXIT_OK, actor, err, fail, out
from models.enums import CaseStatus, Role

directory_app = App(name="directory", help="Organisations and stakeholders.")
members_app = App(name="members", help="Who plays which role on a case.")


@directory_app.command(name="load")
def directory_load(file: Path) -> int:
    """Load organisations and stakeholders from a YAML or JSON file (insert or update by key)."""
    from models.intake import DirectoryIn
    from tasks.context import utcnow
    from tasks.inputs import read_document, validate
    from tasks.store.directory import load_directory

    directory = validate(DirectoryIn, read_document(file), source=str(file))
    result = load_directory(directory, now=utcnow(), actor=actor())
    out.print(
        f"Organisations: {result.organisations_added} added, {result.organisations_updated} "
        f"updated. Stakeholders: {result.stakeholders_added} added, "
        f"{result.stakeholders_updated} updated."
    )
    return EXIT_OK


def intake(file: Path, *, start: bool = True) -> int:
    """Validate a report (JSON or YAML), open a case for it, and print the case reference.

    With a Prefect server configured (PREFECT_API_URL), the case's run is started too
    (--no-start leaves that to `remedy start REF`, or to the next monitoring sweep once the
    case has waited two minutes: a case never started is repaired like a crash).
    """
    from tasks.context import utcnow
    from tasks.intake import open_case, read_report

    now = utcnow()
    report = read_report(file, now=now)
    result = open_case(report, now=now, actor=actor())
    if result.duplicate:
        out.print(f"{result.reference} (this report is already known; nothing new was stored)")
        return EXIT_OK
    out.print(result.reference)
    if not start:
        return EXIT_OK
    from tasks.orchestration.runs import prefect_configured

    return case_start(result.reference) if prefect_configured() else EXIT_OK


def case_start(reference: str) -> int:
    """Start (or find again) the remediation-case run of a case on the Prefect server."""
    from tasks.orchestration.runs import ENTRY_FLOW, flow_run_link, start_case_run
    from tasks.store.cases import case_summary

    case_summary(reference)  # the case must exist
    run_id = start_case_run(reference)
    err.print(f"Started {ENTRY_FLOW} for {reference}: {flow_run_link(run_id) or run_id}")
    return EXIT_OK


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
        return fail(
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
            reference, actor=actor(), reason=reason.strip()[:200], now=utcnow()
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
        added = add_member(reference, stakeholder, role, actor=actor(), now=utcnow())
    except MembershipError as exc:
        return fail(str(exc))
    out.print(f"{stakeholder} is {role.value} on {reference}" + ("" if added else " (already)"))
    return EXIT_OK


@members_app.command(name="remove")
def members_remove(reference: str, stakeholder: str, role: Role) -> int:
    """Take a role on a case away from a stakeholder (audited)."""
    from tasks.context import utcnow
    from tasks.store.directory import MembershipError, remove_member

    try:
        removed = remove_member(reference, stakeholder, role, actor=actor(), now=utcnow())
    except MembershipError as exc:
        return fail(str(exc))
    out.print(
        f"{stakeholder} is no longer {role.value} on {reference}" if removed else "No change."
    )
    return EXIT_OK
