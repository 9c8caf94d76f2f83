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
    _run("intake", str(EXAMPLES / "reports" / "tin-kivu.yaml"))
    from tasks.cases import list_cases

    reference = list_cases()[0].reference
    _run("show", reference)
    _run("audit", "verify", reference)
    print(f"\nDemo done: case {reference} is open. Try `.venv/bin/remedy cases`.")


if __name__ == "__main__":
    main()
