"""The `remedy` command line: set up the case store, take in reports, look at cases.

Each command group lives in its own module; this one assembles them into `app` (in the order the
help has always listed them) and runs it with the exit codes of `main`.
"""

from __future__ import annotations

import sys

import httpx
from cyclopts import App, CycloptsError

from flows.cli import (
    cases,
    controls,
    decide,
    ledger,
    milestones,
    ops,
    passkeys,
    report,
    reporter,
    retention,
    show,
)
from flows.cli.common import EXIT_BAD_INPUT, EXIT_OK, NOT_MIGRATED, err, fail, store_behind
from flows.cli.export import export_app
from flows.cli.keys import key_rotate  # noqa: F401  (adds `key rotate`, `key status`)

app = App(name="remedy", help="Remediation cases for victims of trafficking and forced labour.")
for sub in (
    ops.db_app,
    ops.key_app,
    ops.audit_app,
    cases.directory_app,
    cases.members_app,
    milestones.milestone_app,
    ledger.ledger_app,
    controls.consent_app,
    controls.case_app,
    controls.plan_app,
    controls.person_app,
    ops.notifications_app,
    passkeys.passkey_app,
    reporter.reporter_app,
    export_app,
):
    app.command(sub)
report.register(app)
controls.case_app.command(retention.hold_data, name="hold-data")
controls.case_app.command(retention.release_data, name="release-data")
controls.person_app.command(retention.person_export, name="export")
controls.person_app.command(retention.person_erase, name="erase")
app.command(cases.intake, name="intake")
app.command(cases.case_start, name="start")
app.command(cases.cases, name="cases")
app.command(show.show_app)
app.command(ops.monitor, name="monitor")
app.command(ops.doctor, name="doctor")
app.command(ops.up, name="up")
app.command(decide.decide, name="decide")


def main(argv: list[str] | None = None) -> None:
    """Run the command line; exit 2 on bad input, 1 on other failures."""
    from sqlalchemy.exc import DBAPIError

    from flows.local.credential import NOT_ADMITTED, CredentialError, use_remedy_credential
    from notifications.routing import RoutingError
    from tasks.inputs import InputError
    from tasks.store.cases import CaseNotFoundError
    from tasks.store.vault import VaultError

    try:
        use_remedy_credential()  # before Prefect is imported: it reads its settings once
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
        code = fail(NOT_MIGRATED if _store_behind() else str(exc))
    except VaultError as exc:
        code = fail(str(exc))
    except RoutingError as exc:
        code = fail(str(exc))
    except CredentialError as exc:
        code = fail(str(exc))
    except DBAPIError:
        if not _store_behind():
            raise
        code = fail(NOT_MIGRATED)  # one line, not a traceback, for a store never migrated
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code != 401:
            raise
        code = fail(NOT_ADMITTED)
    sys.exit(code if isinstance(code, int) else EXIT_OK)


def _store_behind() -> bool:
    """Tell whether a store error comes from a store that is not migrated (False if unknown)."""
    try:
        return store_behind()
    except Exception:  # the store cannot even be asked: the original error says more
        return False


if __name__ == "__main__":
    main()
