"""The portfolio view in the Prefect UI: one table of open cases, and each plan's progress."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, func, select

from models.enums import (
    CaseStatus,
    DecisionRequestStatus,
    MilestoneStatus,
    PlanStatus,
)
from models.iso4217 import format_amount
from models.ledger import LedgerEntry, Payment
from models.tables import ActionPlan, DecisionRequest, PlanAction, RemediationCase
from tasks.context import current_policy
from tasks.monitoring.reporter_deadlines import (
    ReceiptTimes,
    receipts_of,
    timeliness,
    urgency,
)
from tasks.store.db import read_only

PORTFOLIO_KEY = "remedy-portfolio"
DONE = (MilestoneStatus.VERIFIED, MilestoneStatus.WAIVED)
OPEN = (MilestoneStatus.PLANNED, MilestoneStatus.ACTIVE, MilestoneStatus.DONE)
ZERO = Decimal(0)


def portfolio(*, now: datetime, limit: int = 500) -> tuple[list[dict[str, Any]], int]:
    """Return the open cases, most urgent first (overdue, then longest in step), and the total."""
    today = now.date()
    with read_only() as session:
        counts = (
            select(
                PlanAction.case_id.label("case_id"),  # type: ignore[attr-defined]
                func.count().label("total"),
                func.sum(sa.case((col(PlanAction.status).in_(DONE), 1), else_=0)).label("done"),
                func.sum(
                    sa.case(
                        (col(PlanAction.status).in_(OPEN) & (col(PlanAction.due_on) < today), 1),
                        else_=0,
                    )
                ).label("overdue"),
            )
            .join(ActionPlan, col(ActionPlan.id) == col(PlanAction.plan_id))
            .where(
                ActionPlan.status == PlanStatus.APPROVED,
                PlanAction.status != MilestoneStatus.CANCELLED,
            )
            .group_by(col(PlanAction.case_id))
            .subquery()
        )
        rows: Sequence[Any] = session.execute(
            sa.select(
                col(RemediationCase.id),
                col(RemediationCase.reference),
                col(RemediationCase.step),
                col(RemediationCase.state),
                col(RemediationCase.state_changed_at),
                col(RemediationCase.response_level),
                counts.c.total,
                counts.c.done,
                counts.c.overdue,
            )
            .join(counts, counts.c.case_id == RemediationCase.id, isouter=True)
            .where(col(RemediationCase.status) != CaseStatus.CLOSED)
        ).all()
        waiting: dict[Any, list[str]] = {}
        for case_id, kind in session.exec(
            select(col(DecisionRequest.case_id), col(DecisionRequest.kind)).where(
                DecisionRequest.status == DecisionRequestStatus.WAITING
            )
        ).all():
            waiting.setdefault(case_id, []).append(str(kind))
        reporters = receipts_of(session, [r[0] for r in rows], current_policy())
        money = _money_column(session, [r[0] for r in rows])
    table = []
    for case_id, ref, step, state, since, level, total, done, overdue in rows:
        table.append(
            {
                "case": ref,
                "step": step,
                "state": str(state),
                "days in step": (now - since).days,
                "response level": str(level) if level else "-",
                "milestones done": f"{done or 0}/{total or 0}",
                "overdue": int(overdue or 0),
                "waiting decision": ", ".join(sorted(waiting.get(case_id, []))) or "-",
                "owed / paid / confirmed": money.get(case_id, "-"),
                **_reporter_columns(reporters.get(case_id, []), now),
            }
        )
    table.sort(key=lambda r: (-r["overdue"], -r["days in step"], r["case"]))
    return table[:limit], len(table)


def _money_column(session: Any, case_ids: list[Any]) -> dict[Any, str]:
    """Each case's remedy ledger in one cell per currency: "45,000.00 / 15,000.00 / 12,000.00
    USD" (owed and not waived, paid, confirmed by the person or their representative)."""
    if not case_ids:
        return {}
    owed: dict[tuple[Any, str], list[Decimal]] = {}
    for entry in session.exec(
        select(LedgerEntry).where(
            col(LedgerEntry.case_id).in_(case_ids), col(LedgerEntry.waived_at).is_(None)
        )
    ).all():
        sums = owed.setdefault((entry.case_id, entry.currency), [ZERO, ZERO, ZERO])
        sums[0] += entry.amount
    for payment in session.exec(select(Payment).where(col(Payment.case_id).in_(case_ids))).all():
        sums = owed.setdefault((payment.case_id, payment.currency), [ZERO, ZERO, ZERO])
        sums[1] += payment.amount
        if payment.confirmed_at is not None:
            sums[2] += payment.amount
    cells: dict[Any, list[str]] = {}
    for (case_id, currency), (due, paid, confirmed) in sorted(owed.items(), key=lambda i: i[0][1]):
        amounts = [format_amount(v, currency).removesuffix(f" {currency}") for v in (due, paid)]
        cells.setdefault(case_id, []).append(
            " / ".join([*amounts, format_amount(confirmed, currency)])
        )
    return {case_id: "; ".join(parts) for case_id, parts in cells.items()}


def _reporter_columns(receipts: list[ReceiptTimes], now: datetime) -> dict[str, str]:
    """The most worrying acknowledgement and feedback among a case's receipts ("-": none)."""
    deadlines = {
        "reporter acknowledged": [(t.acknowledge_by, t.acknowledged_at) for t in receipts],
        "reporter feedback": [(t.feedback_by, t.feedback_at) for t in receipts],
    }
    columns = {}
    for name, pairs in deadlines.items():
        worst = max(pairs, key=lambda pair: urgency(pair[0], pair[1], now), default=None)
        columns[name] = "-" if worst is None else timeliness(worst[0], worst[1], now)
    return columns


def publish_portfolio(*, now: datetime, limit: int = 500) -> None:
    """Update the portfolio table artifact (key remedy-portfolio)."""
    from prefect.artifacts import create_table_artifact

    table, total = portfolio(now=now, limit=limit)
    shown = f"the {len(table)} most urgent of " if total > len(table) else ""
    create_table_artifact(
        key=PORTFOLIO_KEY,
        table=table,
        description=f"Open cases at {now:%Y-%m-%d %H:%M} UTC: {shown}{total}, overdue first.",
    )


def plan_progress(case_ref: str) -> float | None:
    """Return the share (0-100) of the case's approved plan verified or waived."""
    with read_only() as session:
        row = session.exec(
            select(
                func.count(),
                func.sum(sa.case((col(PlanAction.status).in_(DONE), 1), else_=0)),
            )
            .join(ActionPlan, col(ActionPlan.id) == col(PlanAction.plan_id))
            .join(RemediationCase, col(RemediationCase.id) == col(ActionPlan.case_id))
            .where(
                RemediationCase.reference == case_ref,
                ActionPlan.status == PlanStatus.APPROVED,
                PlanAction.status != MilestoneStatus.CANCELLED,
            )
        ).one()
    total, done = row
    if not total:
        return None
    return round(100.0 * (done or 0) / total, 1)


def publish_plan_progress(case_ref: str) -> None:
    """Update the case's plan progress artifact (key plan-<ref>)."""
    from prefect.artifacts import create_progress_artifact

    progress = plan_progress(case_ref)
    if progress is not None:
        create_progress_artifact(
            progress=progress,
            key=f"plan-{case_ref.lower()}",
            description=f"Plan of {case_ref}: share of milestones verified or waived",
        )
