"""The case view in the Prefect UI: one markdown artifact per case, kept current at every change."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime

from prefect.artifacts import create_markdown_artifact
from sqlmodel import col, select

from models.enums import DecisionRequestStatus, PlanStatus, Step
from models.tables import DecisionRequest, PlanAction, ReporterReceipt, Stakeholder
from tasks.case_state import current_plan, milestone_summary
from tasks.context import current_policy
from tasks.markdown import md_text
from tasks.monitoring.reporter_deadlines import ReceiptTimes, receipt_times, timeliness
from tasks.steps.table import spec_of
from tasks.store.cases import get_case
from tasks.store.db import read_only


def case_artifact_key(case_ref: str) -> str:
    """Return the artifact key of a case: lowercase letters, digits and dashes only."""
    return f"case-{case_ref.lower()}"


def case_view(case_ref: str, *, now: datetime, link: Callable[[uuid.UUID], str | None]) -> str:
    """Render a case's view: step, status, waiting decisions, milestones, reporters' deadlines.

    References, dates and states only (a receipt's public reference, never its thread).

    `link` gives a waiting request's stable link (tasks/store/links.py `run_link_url`), never its
    run's page: the artifact outlives a run that crashes and is replaced.
    """
    with read_only() as session:
        case = get_case(session, case_ref)
        waiting = session.exec(
            select(DecisionRequest)
            .where(
                DecisionRequest.case_id == case.id,
                DecisionRequest.status == DecisionRequestStatus.WAITING,
            )
            .order_by(col(DecisionRequest.requested_at))
        ).all()
        plan = current_plan(session, case.id, PlanStatus.APPROVED) or current_plan(
            session, case.id, PlanStatus.DRAFT
        )
        actions: Sequence[tuple[PlanAction, str | None]] = []
        if plan is not None:
            actions = session.exec(
                select(PlanAction, Stakeholder.key)
                .join(Stakeholder, col(Stakeholder.id) == col(PlanAction.owner_id), isouter=True)
                .where(PlanAction.plan_id == plan.id)
                .order_by(col(PlanAction.due_on), col(PlanAction.key))
            ).all()
        summary = milestone_summary(session, case.id)
        lines = [
            f"# Case {md_text(case.reference)}",
            "",
            f"**Step {case.step} of 6: {Step(case.step).title}**  ",
            f"State: `{case.state.value}` · status: `{case.status.value}` · "
            f"severity: `{case.severity.value if case.severity else '-'}` · "
            f"response level: `{case.response_level.value if case.response_level else '-'}`  ",
            f"Opened {case.opened_at:%Y-%m-%d}"
            + (f" · closed {case.closed_at:%Y-%m-%d}" if case.closed_at else "")
            + f" · updated {now:%Y-%m-%d %H:%M} UTC",
            "",
            "## Waiting decisions",
            "",
        ]
        if waiting:
            lines += [
                "| decision | round | requested | due | where to decide |",
                "|---|---|---|---|---|",
            ]
            for r in waiting:
                url = link(r.id)
                where = f"[flow run]({url})" if url else "-"
                due = f"{r.due_at:%Y-%m-%d %H:%M}" if r.due_at else "-"
                lines.append(
                    f"| {spec_of(r.kind).title} | {r.round} | {r.requested_at:%Y-%m-%d %H:%M} "
                    f"| {due} | {where} |"
                )
        else:
            lines.append("None.")
        lines += ["", "## Milestones", ""]
        if actions:
            assert plan is not None
            lines += [
                f"Plan version {plan.version} ({plan.status.value}): {summary.verified} verified, "
                f"{summary.waived_with_reason} waived, {summary.open} open of {summary.total}.",
                "",
                "| milestone | owner | due | state |",
                "|---|---|---|---|",
            ]
            today = now.date()
            for action, owner in actions:
                late = (
                    " (overdue)"
                    if action.status.value in ("planned", "active", "done")
                    and action.due_on < today
                    else ""
                )
                state = f"{action.status.value}{late}"
                lines.append(
                    f"| {md_text(action.key)} | {md_text(owner or '-')} | {action.due_on} "
                    f"| {state} |"
                )
        else:
            lines.append("No plan yet.")
        lines += ["", "## Reporters", ""]
        lines += _reporter_lines(
            receipt_times(
                session, col(ReporterReceipt.case_id) == case.id, policy=current_policy()
            ),
            now,
        )
        return "\n".join(lines) + "\n"


def _reporter_lines(receipts: list[ReceiptTimes], now: datetime) -> list[str]:
    """The reporters' deadlines: acknowledgement and feedback, each on time, late or open."""
    if not receipts:
        return ["No report was filed with a receipt."]
    lines = [
        "| receipt | filed | acknowledgement | feedback |",
        "|---|---|---|---|",
    ]
    for t in receipts:
        ack = _met(t.acknowledge_by, t.acknowledged_at, now)
        feedback = _met(t.feedback_by, t.feedback_at, now)
        lines.append(
            f"| {md_text(t.receipt_ref)} | {t.filed_at:%Y-%m-%d %H:%M} | {ack} | {feedback} |"
        )
    return lines


def _met(due: datetime, met: datetime | None, now: datetime) -> str:
    state = timeliness(due, met, now)
    if met is not None:
        return f"{met:%Y-%m-%d %H:%M}, {state} (due {due:%Y-%m-%d %H:%M})"
    return state if state.startswith("due ") else f"{state} (due {due:%Y-%m-%d %H:%M})"


def publish_case_view(case_ref: str, *, now: datetime) -> uuid.UUID:
    """Create the next version of the case's markdown artifact."""
    from tasks.store.links import run_link_url

    markdown = case_view(case_ref, now=now, link=run_link_url)
    artifact_id = create_markdown_artifact(
        key=case_artifact_key(case_ref),
        markdown=markdown,
        description=f"Case {case_ref}: step, waiting decisions, milestones and reporters",
    )
    return artifact_id if isinstance(artifact_id, uuid.UUID) else uuid.UUID(str(artifact_id))
