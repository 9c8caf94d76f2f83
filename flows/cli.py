"""The `remedy` command line: set up the case store, take in reports, look at cases."""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import Annotated

from cyclopts import App, CycloptsError, Parameter
from rich.console import Console
from rich.table import Table

from models.enums import CaseStatus

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

app = App(name="remedy", help="Remediation cases for victims of trafficking and forced labour.")
db_app = App(name="db", help="The case store's schema.")
key_app = App(name="key", help="The encryption key for identifying data.")
audit_app = App(name="audit", help="The audit chain.")
directory_app = App(name="directory", help="Organisations and stakeholders.")
for sub in (db_app, key_app, audit_app, directory_app):
    app.command(sub)


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _fail(message: str, code: int = EXIT_FAILED) -> int:
    err.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    return code


@key_app.command(name="init")
def key_init() -> int:
    """Create the local key file (mode 0600) unless a key is configured already."""
    from models.settings import get_settings
    from tasks.vault import init_key_file

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
    from tasks.directory import load_directory
    from tasks.inputs import read_document, validate

    directory = validate(DirectoryIn, read_document(file), source=str(file))
    result = load_directory(directory, now=utcnow(), actor=_actor())
    out.print(
        f"Organisations: {result.organisations_added} added, {result.organisations_updated} "
        f"updated. Stakeholders: {result.stakeholders_added} added, "
        f"{result.stakeholders_updated} updated."
    )
    return EXIT_OK


@app.command(name="intake")
def intake(file: Path) -> int:
    """Validate a report (JSON or YAML), open a case for it, and print the case reference."""
    from tasks.context import utcnow
    from tasks.intake import open_case, read_report

    now = utcnow()
    report = read_report(file, now=now)
    result = open_case(report, now=now, actor=_actor())
    if result.duplicate:
        out.print(f"{result.reference} (this report is already known; nothing new was stored)")
    else:
        out.print(result.reference)
    return EXIT_OK


@app.command(name="cases")
def cases(status: CaseStatus | None = None) -> int:
    """List cases, newest first."""
    from tasks.cases import list_cases

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
    from tasks.cases import case_summary, reveal_identifying_data
    from tasks.context import utcnow

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
    from tasks.cases import CaseSummary

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


@audit_app.command(name="verify")
def audit_verify(reference: str) -> int:
    """Check a case's audit chain ('system' for the directory's) and name the first broken link."""
    from tasks.audit import verify_chain
    from tasks.cases import get_case
    from tasks.db import read_only

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
    from tasks.cases import CaseNotFoundError
    from tasks.inputs import InputError
    from tasks.vault import VaultError

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
    sys.exit(code if isinstance(code, int) else EXIT_OK)


if __name__ == "__main__":
    main()
