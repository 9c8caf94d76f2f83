"""`make demo`: set up a local case store, load the sample directory, open the sample case."""

from __future__ import annotations

from pathlib import Path

from flows.cli import main as remedy

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def _run(*argv: str) -> None:
    print(f"\n$ remedy {' '.join(argv)}", flush=True)
    try:
        remedy(list(argv))
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise


def main() -> None:
    """Run the demo end to end against the local store under var/."""
    _run("key", "init")
    _run("db", "upgrade")
    _run("directory", "load", str(EXAMPLES / "stakeholders.yaml"))
    report_file = EXAMPLES / "reports" / "tin-kivu.yaml"
    _run("intake", str(report_file))
    from tasks.context import utcnow
    from tasks.intake import open_case, read_report

    # intake again: the same report is recognised and answers with its case's reference
    reference = open_case(
        read_report(report_file, now=utcnow()), now=utcnow(), actor="demo"
    ).reference
    _run("show", reference)
    _run("audit", "verify", reference)
    print(f"\nDemo done: case {reference} is open. Try `.venv/bin/remedy cases`.")


if __name__ == "__main__":
    main()
