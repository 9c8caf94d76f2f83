"""`make demo`: the sample case through all six steps against the embedded stack.

Sets up a fresh demo home (var/demo: case store, key, Prefect server data), starts a local Prefect
server and the runner, takes in the sample report, and lets scripted stakeholders take every
decision through the Prefect API, as the UI's Resume button does. Stops what it started.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
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
    from flows.stack import free_port, port_open
    from flows.up import prepare_store, start_stack

    prepare_store()
    _remedy("directory", "load", str(EXAMPLES / "stakeholders.yaml"))
    port = 4200 if not port_open(4200) else free_port()
    started = time.monotonic()
    stack = start_stack(HOME, port, print)
    try:
        from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: stack.api_url, PREFECT_UI_URL: stack.ui_url}):
            return _run_case(stack.ui_url, started)
    finally:
        print("\nStopping the demo stack ...", flush=True)
        stack.stop()


def _run_case(ui: str, started: float) -> int:
    from flows.scripted import ScriptedStakeholders
    from models.enums import CaseState
    from tasks.context import utcnow
    from tasks.intake import open_case, read_report

    report = read_report(EXAMPLES / "reports" / "tin-kivu.yaml", now=utcnow())
    reference = open_case(report, now=utcnow(), actor="demo").reference
    _remedy("show", reference)
    _remedy("start", reference)
    print("\nScripted stakeholders take each decision as it comes (Prefect API, as the UI does):")
    people = ScriptedStakeholders(
        on_step=lambda s: print(f"  {s.what:<44} by {s.who:<15} {_link(ui, s.where)}", flush=True)
    )
    people.drive(reference, until=CaseState.LESSONS_CAPTURED, timeout=900)
    _remedy("show", reference)
    _remedy("audit", "verify", reference)
    print(f"\nCase {reference} went through all six steps in {time.monotonic() - started:.0f} s.")
    print(f"Its runs in the Prefect UI: {ui}/runs?tags=case:{reference}")
    print(f"Its case view (artifact):   {ui}/artifacts/key/case-{reference.lower()}")
    print(f"To browse it again later:   REMEDY_HOME={HOME} .venv/bin/remedy up")
    return 0


def _link(ui: str, where: str) -> str:
    if where.startswith("flow run "):
        return f"{ui}/runs/flow-run/{where.removeprefix('flow run ')}"
    return where


if __name__ == "__main__":
    sys.exit(main())
