"""The case view in the Prefect UI: one markdown artifact per case, kept current at every change.

A step's run publishes it as it moves the case; a change made outside any run (a milestone
reported from an owner's link or the command line, an extension asked or decided) republishes it
as soon as it is committed (`republishes`), so the view never waits for the next run or sweep.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any, Concatenate, ParamSpec, TypeVar

from pydantic import BaseModel
from sqlalchemy.orm import aliased
from sqlmodel import col, select

from models.enums import (
    DecisionKind,
    MilestoneStatus,
    PlanStatus,
    Role,
    Step,
)
from models.tables import (
    ActionPlan,
    AffectedPerson,
    AuditEvent,
    CaseMember,
    Decision,
    PlanAction,
    ReporterReceipt,
    Stakeholder,
)
from notifications.outbox import without_addresses
from tasks.actors import Operator
from tasks.case_state import current_plan, milestone_summary
from tasks.context import current_policy
from tasks.decisions.requests import waiting_in
from tasks.markdown import md_text
from tasks.monitoring.reporter_deadlines import ReceiptTimes, receipt_times, timeliness
from tasks.steps.table import spec_of
from tasks.store.audit import append_audit
from tasks.store.cases import get_case
from tasks.store.db import read_only, unit_of_work
from tasks.store.ledger_view import ledger_markdown, ledger_summary
from tasks.store.sealed import open_text
from tasks.store.vault import get_vault

log = logging.getLogger("remedy.case_view")
P = ParamSpec("P")
R = TypeVar("R")


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
        waiting = waiting_in(session, case.id)
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
                if action.extension_due_on is not None:
                    state += f" (extension to {action.extension_due_on} asked)"
                lines.append(
                    f"| {md_text(action.key)} | {md_text(owner or '-')} | {action.due_on} "
                    f"| {state} |"
                )
        else:
            lines.append("No plan yet.")
        lines += ["", "## Remedy ledger", ""]
        ledger = ledger_summary(session, case.id)
        lines.append(ledger_markdown(ledger) or "Nothing is recorded as owed (`remedy ledger`).")
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


def publish_case_view(case_ref: str, *, now: datetime, quick: bool = False) -> uuid.UUID:
    """Create the next version of the case's markdown artifact (quick: one attempt only)."""
    from tasks.store.links import run_link_url

    markdown = case_view(case_ref, now=now, link=run_link_url)
    description = f"Case {case_ref}: step, waiting decisions, milestones and reporters"
    from tasks.reports.artifacts import markdown_artifact

    return markdown_artifact(case_artifact_key(case_ref), markdown, description, quick=quick)


def refresh_case_view(case_ref: str) -> bool:
    """Republish a case's view now, if a Prefect server is configured; say whether it was.

    The change it shows is committed already: a server that is down or refuses loses nothing
    of it (the case's next run publishes the view again), so a failure is logged, not raised.
    """
    from prefect.settings import get_current_settings

    from tasks.context import utcnow

    if not get_current_settings().api.url:
        return False
    from tasks.reports.artifacts import quick_settings

    try:
        with quick_settings():
            publish_case_view(case_ref, now=utcnow(), quick=True)
    except Exception as exc:  # the reference and the kind of failure only: no data
        log.warning("case view not republished: case=%s (%s)", case_ref, type(exc).__name__)
        return False
    return True


def republishes(change: Callable[Concatenate[str, P], R]) -> Callable[Concatenate[str, P], R]:
    """Make a change to a case (its reference first) republish the case's view once done."""

    @functools.wraps(change)
    def changed(case_ref: str, /, *args: P.args, **kwargs: P.kwargs) -> R:
        result = change(case_ref, *args, **kwargs)  # committed when it returns
        refresh_case_view(case_ref)
        return result

    return changed


# --- a case's records for operators (`remedy show plan|decisions|audit`) ------------------------
# References, keys, states and the reasons people gave; never names, contacts or the narrative,
# which only `reveal_identities` decrypts (audited). The remedy ledger's amounts join the plan
# view from tasks/store/ledger.py (flows/cli/show.py, `_ledger_section`).

REVEALERS = (Role.CASE_LEAD, Role.VICTIM_REPRESENTATIVE)


class RevealNotAllowed(Exception):
    """The person may not read the identities of a case's persons."""


class MilestoneRow(BaseModel):
    key: str
    title: str
    person: str | None  # the pseudonym of the person it is for; none for the case's own
    owner: str | None  # a stakeholder key
    due_on: date
    status: MilestoneStatus
    evidence: int  # how many evidence references were reported
    extension_to: date | None  # a later due date asked for, waiting for the case lead


class PlanRecord(BaseModel):
    case_ref: str
    version: int
    status: PlanStatus
    approved_at: datetime | None
    milestones: list[MilestoneRow]
    other_versions: list[str]  # e.g. "1 (superseded)"


class DecisionRow(BaseModel):
    decided_at: datetime
    step: int
    kind: DecisionKind
    title: str
    by: str  # the stakeholder key of who decided
    outcome: str
    reason: str | None


class AuditRow(BaseModel):
    seq: int
    at: datetime
    actor: str
    action: str
    subject: str | None
    details: dict[str, Any]


def plan_record(case_ref: str) -> PlanRecord | None:
    """Return the plan in force (approved, else the draft) with its milestones; none if no plan."""
    with read_only() as session:
        case = get_case(session, case_ref)
        plan = current_plan(session, case.id, PlanStatus.APPROVED) or current_plan(
            session, case.id, PlanStatus.DRAFT
        )
        if plan is None:
            return None
        versions = session.exec(
            select(ActionPlan).where(ActionPlan.case_id == case.id, ActionPlan.id != plan.id)
        ).all()
        owner = aliased(Stakeholder)
        found = session.exec(
            select(PlanAction, owner.key, AffectedPerson.pseudonym)
            .join(owner, col(owner.id) == col(PlanAction.owner_id), isouter=True)
            .join(AffectedPerson, col(AffectedPerson.id) == col(PlanAction.person_id), isouter=True)
            .where(PlanAction.plan_id == plan.id)
            .order_by(col(PlanAction.due_on), col(PlanAction.key))
        ).all()
        return PlanRecord(
            case_ref=case.reference,
            version=plan.version,
            status=plan.status,
            approved_at=plan.approved_at,
            milestones=[
                MilestoneRow(
                    key=a.key,
                    title=a.title,
                    person=pseudonym,
                    owner=key,
                    due_on=a.due_on,
                    status=a.status,
                    evidence=len(a.evidence_refs),
                    extension_to=a.extension_due_on,
                )
                for a, key, pseudonym in found
            ],
            other_versions=[
                f"{v.version} ({v.status.value})" for v in sorted(versions, key=lambda v: v.version)
            ],
        )


def decision_records(case_ref: str) -> list[DecisionRow]:
    """Return the decisions taken on a case, oldest first, with who took them and why."""
    with read_only() as session:
        case = get_case(session, case_ref)
        found = session.exec(
            select(Decision, Stakeholder.key)
            .join(Stakeholder, col(Stakeholder.id) == col(Decision.approver_id))
            .where(Decision.case_id == case.id)
            .order_by(col(Decision.decided_at), col(Decision.step))
        ).all()
        return [
            DecisionRow(
                decided_at=d.decided_at,
                step=d.step,
                kind=d.kind,
                title=_title(d.kind),
                by=key,
                outcome=d.outcome,
                reason=open_text(session, d.case_id, d.reason),
            )
            for d, key in found
        ]


def _title(kind: DecisionKind) -> str:
    try:
        return spec_of(kind).title
    except LookupError:
        return kind.value


def audit_records(case_ref: str, *, limit: int | None = None) -> list[AuditRow]:
    """Return a case's audit events in chain order (the last `limit` if given).

    Details hold references only; a text in them (a reason someone typed) is shown without any
    address or URL it might hold.
    """
    with read_only() as session:
        case = get_case(session, case_ref)
        query = select(AuditEvent).where(AuditEvent.chain == case.reference)
        if limit is not None:
            query = query.order_by(col(AuditEvent.seq).desc()).limit(limit)
        events = sorted(session.exec(query).all(), key=lambda e: e.seq)
        return [
            AuditRow(
                seq=e.seq,
                at=e.at,
                actor=e.actor,
                action=e.action,
                subject=f"{e.subject_type}:{e.subject_id}" if e.subject_type else None,
                details=_unaddressed(e.details),
            )
            for e in events
        ]


def _unaddressed(value: Any) -> Any:
    if isinstance(value, str):
        return without_addresses(value)
    if isinstance(value, dict):
        return {k: _unaddressed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unaddressed(v) for v in value]
    return value


def reveal_identities(
    case_ref: str, *, view: str, by: str, reason: str, now: datetime, operator: Operator
) -> dict[str, dict[str, Any]]:
    """Decrypt the identities of a case's persons (pseudonym -> identity) for its case lead or
    victims' representative; the read is audited first, without what it shows."""
    vault = get_vault()
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        reader = session.exec(select(Stakeholder).where(Stakeholder.key == by)).first()
        roles = set()
        if reader is not None and reader.active:
            roles = set(
                session.exec(
                    select(CaseMember.role).where(
                        CaseMember.case_id == case.id, CaseMember.stakeholder_id == reader.id
                    )
                ).all()
            )
        if not roles & set(REVEALERS):
            raise RevealNotAllowed(
                f"{by} may not read the identities of {case.reference}'s persons: that needs the "
                f"{' or '.join(r.value for r in REVEALERS)} role on the case"
            )
        persons = session.exec(
            select(AffectedPerson)
            .where(AffectedPerson.case_id == case.id)
            .order_by(col(AffectedPerson.pseudonym))
        ).all()
        append_audit(
            session,
            chain=case.reference,
            actor=f"stakeholder:{by}",
            action="identity.revealed",
            at=now,
            subject_type="case",
            subject_id=str(case.id),
            details={"view": view, "reason": reason, "persons": [p.pseudonym for p in persons]}
            | operator.audit_details(),
        )
        return {
            p.pseudonym: vault.decrypt(p.identity_ciphertext)
            for p in persons
            if p.identity_ciphertext
        }
