"""What every `remedy` command shares: the consoles, the exit codes, failing and handing over."""

from __future__ import annotations

import getpass

from rich.console import Console

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

NO_PREFECT = "No PREFECT_API_URL: the monitoring sweep starts the next step."


def actor() -> str:
    """Return the audit actor of the person at this terminal."""
    return f"cli:{getpass.getuser()}"


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
