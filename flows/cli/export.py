"""`remedy export ...`: anonymised exports to share what the cases taught (no personal data)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

from cyclopts import App, Parameter

from flows.cli.common import EXIT_BAD_INPUT, EXIT_OK, actor, fail, out

export_app = App(name="export", help="Anonymised exports to share outside Remedy (no identities).")


@export_app.command(name="htcds")
def htcds(
    *,
    since: Annotated[
        date | None, Parameter(help="Only cases registered on or after this day (YYYY-MM-DD).")
    ] = None,
    k: Annotated[
        int,
        Parameter(name="--k", help="Every quasi-identifier combination occurs at least k times."),
    ] = 11,
    out_dir: Annotated[
        Path, Parameter(name="--out", help="Directory for htcds.csv and htcds.json.")
    ] = Path("."),
) -> int:
    """Write the substantiated cases' affected persons as k-anonymous HTCDS v2 rows.

    One row per person, no identity, no free text, years only; the quasi-identifiers are
    generalised, then rare combinations suppressed (docs/htcds-export.md).
    """
    from tasks.context import utcnow
    from tasks.export.htcds import export_htcds

    if k < 2:
        return fail("--k must be at least 2 (k = 1 is no anonymity at all).", EXIT_BAD_INPUT)
    summary = export_htcds(out=out_dir, k=k, since=since, now=utcnow(), actor=actor())
    generalised = "; ".join(summary.generalisation) or "nothing"
    out.print(
        f"Wrote {summary.rows_written} rows to {summary.csv_path} and {summary.json_path} "
        f"(HTCDS v2, k={summary.k}): {summary.persons_eligible} persons eligible, "
        f"{summary.rows_suppressed} suppressed; generalised: {generalised}.",
        soft_wrap=True,
        markup=False,
    )
    return EXIT_OK
