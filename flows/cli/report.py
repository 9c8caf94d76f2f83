"""`remedy report ...`: reports across cases, printed or written to a file (figures only)."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

from cyclopts import App, Parameter

EXIT_OK = 0


def register(app: App) -> None:
    """Add the `report` commands to the `remedy` command line."""
    report_app = App(name="report", help="Reports across cases (figures only, no personal data).")
    report_app.command(lessons, name="lessons")
    app.command(report_app)


def lessons(
    *,
    since: Annotated[
        date | None, Parameter(help="Only cases closed on or after this day (YYYY-MM-DD).")
    ] = None,
    fmt: Annotated[Literal["md", "html"], Parameter(name="--format")] = "md",
    output: Annotated[Path | None, Parameter(help="Write the report here, not to stdout.")] = None,
    artifact: Annotated[
        bool, Parameter(help="Publish the Markdown as the remedy-lessons Prefect artifact.")
    ] = True,
) -> int:
    """Report lessons learned across closed cases: time per step, milestones, root causes.

    The Markdown version is also published as the `remedy-lessons` artifact when a Prefect
    server is configured (PREFECT_API_URL), unless --no-artifact.
    """
    from tasks.context import utcnow
    from tasks.reports.lessons import lessons_figures, publish_lessons_artifact
    from tasks.reports.lessons_render import render_lessons

    figures = lessons_figures(since=since, now=utcnow())
    text = render_lessons(figures, fmt)
    if output is None:
        sys.stdout.write(text)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        print(f"Wrote the lessons report ({fmt}) to {output}", file=sys.stderr)
    if not artifact:
        return EXIT_OK
    from tasks.orchestration.runs import prefect_configured

    if prefect_configured():
        markdown = text if fmt == "md" else render_lessons(figures, "md")
        publish_lessons_artifact(markdown)
        print("Published the remedy-lessons artifact.", file=sys.stderr)
    return EXIT_OK
