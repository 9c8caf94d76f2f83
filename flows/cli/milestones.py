"""`remedy milestone update|extend|extension`: progress on a plan's milestones (step 4)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from cyclopts import App, Parameter

from flows.cli.common import BY, EXIT_BAD_INPUT, EXIT_OK, NO_PREFECT, err, fail, operator, out
from models.enums import MilestoneStatus

milestone_app = App(name="milestone", help="Progress on a plan's milestones.")


@milestone_app.command(name="update")
def milestone_update(
    reference: str,
    key: str,
    *,
    status: MilestoneStatus,
    by: Annotated[str | None, BY] = None,
    note: str = "",
    evidence: Annotated[
        list[str] | None, Parameter(help="Evidence reference (repeatable), e.g. doc:receipt-12.")
    ] = None,
) -> int:
    """Record progress on a milestone: done (owner), verified or waived (case lead)."""
    from tasks.actors import ActorNotAllowed
    from tasks.context import utcnow
    from tasks.steps.implement import MilestoneUpdateError, update_milestone

    try:
        who = operator()
        name = who.speaks_for(by)
        result = update_milestone(
            reference,
            key,
            status=status,
            by=name,
            note=note,
            evidence=evidence or [],
            now=utcnow(),
            operator=who,
        )
    except (ActorNotAllowed, MilestoneUpdateError) as exc:
        return fail(str(exc))
    out.print(f"{reference} {key}: {result.status.value}; {result.open_milestones} open.")
    if result.plan_completed:
        out.print("Every milestone is verified or waived: the case moves to closure.")
        _close_completed_plan(reference, name)
    return EXIT_OK


def _close_completed_plan(reference: str, by: str) -> None:
    """Start step 5 of a case whose last milestone just settled (else the sweep will)."""
    from tasks.context import utcnow
    from tasks.orchestration.runs import close_completed_plan, prefect_configured

    if not prefect_configured():
        err.print(NO_PREFECT)
        return
    closing = close_completed_plan(reference, now=utcnow(), actor=f"stakeholder:{by}")
    if closing.started:
        err.print(f"Started {closing.started} for {reference}.")


@milestone_app.command(name="extend")
def milestone_extend(
    reference: str,
    key: str,
    *,
    to: date,
    reason: str,
    by: Annotated[str | None, BY] = None,
) -> int:
    """Ask for a later due date for a milestone (its owner); the case lead decides."""
    from tasks.actors import ActorNotAllowed
    from tasks.context import utcnow
    from tasks.steps.implement import MilestoneUpdateError, request_extension

    try:
        who = operator()
        request_extension(
            reference,
            key,
            to=to,
            reason=reason,
            by=who.speaks_for(by),
            now=utcnow(),
            operator=who,
        )
    except (ActorNotAllowed, MilestoneUpdateError) as exc:
        return fail(str(exc))
    out.print(f"{reference} {key}: extension to {to} asked; the case lead decides.")
    return EXIT_OK


@milestone_app.command(name="extension")
def milestone_extension(
    reference: str,
    key: str,
    *,
    approve: bool = False,
    refuse: bool = False,
    by: Annotated[str | None, BY] = None,
    reason: str = "",
) -> int:
    """Approve or refuse a milestone's requested extension (the case lead)."""
    from tasks.actors import ActorNotAllowed
    from tasks.context import utcnow
    from tasks.steps.implement import MilestoneUpdateError, decide_extension

    if approve == refuse:
        return fail("say --approve or --refuse", EXIT_BAD_INPUT)
    try:
        who = operator()
        due = decide_extension(
            reference,
            key,
            approve=approve,
            by=who.speaks_for(by),
            now=utcnow(),
            reason=reason,
            operator=who,
        )
    except (ActorNotAllowed, MilestoneUpdateError) as exc:
        return fail(str(exc))
    out.print(f"{reference} {key}: due {due}" + (" (extended)" if approve else " (unchanged)"))
    return EXIT_OK
