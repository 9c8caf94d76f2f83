"""What every `remedy` command shares: the consoles, the exit codes, who is typing, failing and
handing over."""

from __future__ import annotations

import os
import pwd
from typing import TYPE_CHECKING

from cyclopts import Parameter
from rich.console import Console

if TYPE_CHECKING:
    from tasks.actors import Operator

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

NO_PREFECT = "No PREFECT_API_URL: the monitoring sweep starts the next step."

# `--by` of every command that acts in a person's name (see `operator`)
BY = Parameter(
    help="In whose name (a stakeholder key). Default: you, as the directory maps your "
    "operating-system account (os_users); naming someone else needs their key in your acts_for."
)


def os_user() -> str:
    """Return the operating-system account running this command, from the process's user id.

    Never from $USER or $LOGNAME, which `getpass.getuser()` believes first: anyone can set them.
    An account without a passwd entry (some containers) is its numeric user id.
    """
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def operator() -> Operator:
    """Return who runs this command: the stakeholder the directory maps this account to.

    Raises `tasks.actors.ActorNotAllowed` (saying how to map the account) for an unmapped one.
    A command that acts in a person's name then calls `.speaks_for(named, "--by")`.
    """
    from tasks.actors import resolve_operator

    return resolve_operator(os_user())


def actor() -> str:
    """Return the audit actor of a system command (no one's name): the account running it."""
    return f"cli:{os_user()}"


def fail(message: str, code: int = EXIT_FAILED) -> int:
    """Print an error on stderr and return the exit code to end with."""
    err.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    return code


def hand_over_next(reference: str) -> None:
    """Start the case's next step if a Prefect server is configured (else the sweep will)."""
    from tasks.context import utcnow
    from tasks.orchestration.runs import hand_over, prefect_configured

    if not prefect_configured():
        err.print(NO_PREFECT)
        return
    started = hand_over(reference, now=utcnow())
    if started:
        err.print(f"Started {started} for {reference}.")


NOT_MIGRATED = (
    "the case store is not at the newest schema (never migrated, or behind): "
    "run `remedy db upgrade`"
)


def store_behind() -> bool:
    """Tell whether the case store lacks the newest migrations (none at all on a fresh store).

    Asked only once a command failed on the store: a command that works pays nothing for it.
    """
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from migrations import alembic_config
    from models.settings import get_settings
    from tasks.store.db import get_engine

    settings = get_settings()
    config = alembic_config(settings.resolved_database_url(), settings.database_schema)
    heads = set(ScriptDirectory.from_config(config).get_heads())
    with get_engine().connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    return current != heads
