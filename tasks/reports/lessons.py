"""Lessons learned across closed cases (UNGP 29 and 31 g): the figures and their artifact.

What step 6 records: docs/domain.md, 6. Capture lessons learned. `lessons_figures` reads the
case store with set-based queries (GROUP BY in the database; Python only combines the aggregated
rows) and returns a pydantic model, which `tasks.reports.lessons_render` turns into Markdown or
HTML; `publish_lessons_artifact` publishes the Markdown in the Prefect UI.

No personal data: the queries read references, enums, dates, countries, tiers and the coded root
causes only — never affected persons, narratives, free-text fields or `*_ciphertext` columns
(reporters: receipts' dates and public references, never their threads or contacts).
"""

from __future__ import annotations

import statistics
import uuid
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, time
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session, col, func, select

from models.enums import (
    ActionKind,
    CaseState,
    CaseStatus,
    DecisionKind,
    MilestoneStatus,
    PlanStatus,
    Step,
)
from models.lifecycle import WORKING, step_of
from models.tables import (
    ActionPlan,
    Allegation,
    AllegationOrganisation,
    AuditEvent,
    Decision,
    DecisionRequest,
    Lesson,
    PlanAction,
    RemediationCase,
)
from tasks.context import current_policy
from tasks.monitoring.reporter_deadlines import receipt_times
from tasks.reports.repaid import Repaid, repaid
from tasks.store.db import read_only

ARTIFACT_KEY = "remedy-lessons"
TRANSITION = "case.transition"  # the audit action tasks.case_state.move writes
UNKNOWN_TIER = "unknown"
CLOSED_STATES = (CaseState.CLOSED, CaseState.LESSONS_CAPTURED)
COUNTED_PLANS = (PlanStatus.APPROVED, PlanStatus.SUPERSEDED)
# The states whose time counts towards a step (on hold, intake and lessons captured count in none).
_COUNTED_STATES = sorted(state.value for state in WORKING)


# --- the figures ---------------------------------------------------------------------------------


class StepDuration(BaseModel):
    """How long closed cases spent in one step, in days."""

    step: int
    title: str
    cases: int
    median_days: float | None
    worst_days: float | None


class MilestoneTimeliness(BaseModel):
    """Verified milestones against their due dates (waived and cancelled ones left out)."""

    verified: int
    on_time: int
    late: int
    waived: int
    cancelled: int

    @property
    def on_time_rate(self) -> float | None:
        return self.on_time / self.verified if self.verified else None


class DecisionDelay(BaseModel):
    """Decisions of one kind taken after their request's due time."""

    kind: str
    decisions: int
    overdue: int

    @property
    def overdue_share(self) -> float | None:
        return self.overdue / self.decisions if self.decisions else None


class FormCount(BaseModel):
    """Verified plan actions of one kind and category."""

    kind: ActionKind
    category: str
    delivered: int


class NamedCount(BaseModel):
    name: str
    count: int


class CrossRow(BaseModel):
    cause: str
    counts: list[int]


class CrossTab(BaseModel):
    """Cases per root cause (rows) and group (columns: a supplier tier or a country)."""

    groups: list[str]
    rows: list[CrossRow]

    def as_dict(self) -> dict[tuple[str, str], int]:
        """Return the non-zero cells as {(cause, group): cases}."""
        return {
            (row.cause, group): n
            for row in self.rows
            for group, n in zip(self.groups, row.counts, strict=True)
            if n
        }


class ReporterTimeliness(BaseModel):
    """Reports filed with a receipt on the closed cases: acknowledged and answered on time?

    Deadlines and what counts as feedback: tasks/monitoring/reporter_deadlines.py. Days late are
    whole days past the deadline.
    """

    receipts: int
    acknowledged_on_time: int
    acknowledged_late: int
    not_acknowledged: int
    worst_acknowledgement_days_late: int | None
    feedback_on_time: int
    feedback_late: int
    no_feedback: int
    worst_feedback_days_late: int | None


class LessonsFigures(BaseModel):
    """Everything the lessons-learned report shows; references, enums and counts only."""

    generated_at: datetime
    since: date | None
    closed_cases: int
    cases_with_lessons: int
    closure_types: list[NamedCount]
    steps: list[StepDuration]
    milestones: MilestoneTimeliness
    decisions: list[DecisionDelay]
    forms: list[FormCount]
    root_causes: list[NamedCount]
    by_tier: CrossTab
    by_country: CrossTab
    reporters: ReporterTimeliness
    repaid: list[Repaid] = []
    confirmed_payments: int = 0
    # from the case's first plan approval to each confirmed payment
    median_days_to_confirmed_payment: float | None = None

    @property
    def decisions_total(self) -> DecisionDelay:
        return DecisionDelay(
            kind="all",
            decisions=sum(d.decisions for d in self.decisions),
            overdue=sum(d.overdue for d in self.decisions),
        )


def lessons_figures(*, since: date | None, now: datetime) -> LessonsFigures:
    """Compute the lessons-learned figures over closed cases (closed on or after `since`)."""
    with read_only() as session:
        scope = _closed_cases(since)
        return LessonsFigures(
            generated_at=now,
            since=since,
            closed_cases=_count(session, scope),
            cases_with_lessons=int(
                session.exec(
                    select(func.count()).select_from(Lesson).where(col(Lesson.case_id).in_(scope))
                ).one()
            ),
            closure_types=_closure_types(session, scope),
            steps=_step_durations(session, scope),
            milestones=_milestones(session, scope),
            decisions=_decisions(session, scope),
            forms=_forms(session, scope),
            reporters=_reporters(session, scope),
            **repaid(session, scope),
            **_root_causes(session, scope),
        )


def _closed_cases(since: date | None) -> Any:
    query = select(RemediationCase.id).where(
        RemediationCase.status == CaseStatus.CLOSED,
        col(RemediationCase.state).in_(CLOSED_STATES),
        col(RemediationCase.closed_at).is_not(None),
    )
    if since is not None:
        query = query.where(
            col(RemediationCase.closed_at) >= datetime.combine(since, time.min, tzinfo=UTC)
        )
    return query.scalar_subquery()


def _count(session: Session, scope: Any) -> int:
    return int(
        session.exec(
            select(func.count())
            .select_from(RemediationCase)
            .where(col(RemediationCase.id).in_(scope))
        ).one()
    )


def _closure_types(session: Session, scope: Any) -> list[NamedCount]:
    kind = col(RemediationCase.closure_type)
    rows = session.exec(
        select(kind, func.count()).where(col(RemediationCase.id).in_(scope)).group_by(kind)
    ).all()
    found = [NamedCount(name=k.value if k else "not recorded", count=int(n)) for k, n in rows]
    return sorted(found, key=lambda c: (-c.count, c.name))


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _days_between(session: Session, end: Any, start: Any) -> Any:
    """An SQL expression for end - start in (fractional) days."""
    if _dialect(session) == "sqlite":
        return func.julianday(end) - func.julianday(start)
    return sa.extract("epoch", end - start) / 86400.0


def _utc_date(session: Session, moment: Any) -> Any:
    """An SQL expression for the UTC calendar date of a stored moment."""
    if _dialect(session) == "sqlite":
        return func.date(moment)  # SQLite keeps the UTC wall time (models.dbtypes)
    return sa.cast(func.timezone(sa.literal_column("'UTC'"), moment), sa.Date)


def _step_durations(session: Session, scope: Any) -> list[StepDuration]:
    # The audit chain holds every lifecycle transition with its moment; a step's time is the time
    # between a transition into one of its states and the case's next transition. (StepRun rows
    # bind Prefect runs: step 4's run finishes at plan activation while the case stays in step 4.)
    state = col(AuditEvent.details)["to"].as_string()
    transitions = (
        select(
            col(AuditEvent.chain).label("chain"),
            state.label("state"),
            col(AuditEvent.at).label("entered"),
            func.lead(col(AuditEvent.at))
            .over(partition_by=col(AuditEvent.chain), order_by=col(AuditEvent.seq))
            .label("left"),
        )
        .join(RemediationCase, col(RemediationCase.reference) == col(AuditEvent.chain))
        .where(AuditEvent.action == TRANSITION, col(RemediationCase.id).in_(scope))
        .subquery()
    )
    days = func.sum(_days_between(session, transitions.c.left, transitions.c.entered))
    rows = session.exec(
        select(transitions.c.state, days)
        # a state not left yet (a closed case waiting for its lessons) has no duration so far
        .where(transitions.c.left.is_not(None), transitions.c.state.in_(_COUNTED_STATES))
        .group_by(transitions.c.chain, transitions.c.state)
    ).all()
    # one row per case and state (each step has one state): the median is taken here because
    # SQLite has no percentile function
    per_step: dict[int, list[float]] = defaultdict(list)
    for name, total in rows:
        per_step[int(step_of(CaseState(name)))].append(max(float(total), 0.0))
    result = []
    for step in Step:
        values = per_step.get(int(step), [])
        result.append(
            StepDuration(
                step=int(step),
                title=step.title,
                cases=len(values),
                median_days=statistics.median(values) if values else None,
                worst_days=max(values) if values else None,
            )
        )
    return result


def _counted_actions(scope: Any) -> Any:
    return (
        select(PlanAction.id)
        .join(ActionPlan, col(ActionPlan.id) == col(PlanAction.plan_id))
        .where(col(PlanAction.case_id).in_(scope), col(ActionPlan.status).in_(COUNTED_PLANS))
        .scalar_subquery()
    )


def _milestones(session: Session, scope: Any) -> MilestoneTimeliness:
    # literal 1 and 0 (not bound parameters), so GROUP BY repeats the very same expression
    on_time = sa.case(
        (
            _utc_date(session, col(PlanAction.status_changed_at)) <= col(PlanAction.due_on),
            sa.literal_column("1"),
        ),
        else_=sa.literal_column("0"),
    )
    rows = session.exec(
        select(PlanAction.status, on_time, func.count())
        .where(
            col(PlanAction.id).in_(_counted_actions(scope)),
            col(PlanAction.status).in_(
                (MilestoneStatus.VERIFIED, MilestoneStatus.WAIVED, MilestoneStatus.CANCELLED)
            ),
        )
        .group_by(col(PlanAction.status), on_time)
    ).all()
    counts: Counter[tuple[MilestoneStatus, bool]] = Counter()
    for status, in_time, n in rows:
        counts[(MilestoneStatus(status), bool(in_time))] += int(n)

    def total(status: MilestoneStatus) -> int:
        return counts[(status, True)] + counts[(status, False)]

    return MilestoneTimeliness(
        verified=total(MilestoneStatus.VERIFIED),
        on_time=counts[(MilestoneStatus.VERIFIED, True)],
        late=counts[(MilestoneStatus.VERIFIED, False)],
        waived=total(MilestoneStatus.WAIVED),
        cancelled=total(MilestoneStatus.CANCELLED),
    )


def _decisions(session: Session, scope: Any) -> list[DecisionDelay]:
    overdue = sa.case((col(DecisionRequest.due_at) < col(Decision.decided_at), 1), else_=0)
    rows = session.exec(
        select(Decision.kind, func.count(), func.sum(overdue))
        .join(DecisionRequest, col(DecisionRequest.id) == col(Decision.request_id))
        .where(col(Decision.case_id).in_(scope), col(DecisionRequest.due_at).is_not(None))
        .group_by(col(Decision.kind))
    ).all()
    order = {k.value: i for i, k in enumerate(DecisionKind)}
    found = [
        DecisionDelay(kind=DecisionKind(k).value, decisions=int(n), overdue=int(o or 0))
        for k, n, o in rows
    ]
    return sorted(found, key=lambda d: order.get(d.kind, 99))


def _forms(session: Session, scope: Any) -> list[FormCount]:
    rows = session.exec(
        select(PlanAction.kind, PlanAction.category, func.count())
        .where(
            col(PlanAction.id).in_(_counted_actions(scope)),
            PlanAction.status == MilestoneStatus.VERIFIED,
        )
        .group_by(col(PlanAction.kind), col(PlanAction.category))
    ).all()
    kinds = list(ActionKind)
    found = [FormCount(kind=k, category=c, delivered=int(n)) for k, c, n in rows]
    return sorted(found, key=lambda f: (kinds.index(f.kind), -f.delivered, f.category))


def _reporters(session: Session, scope: Any) -> ReporterTimeliness:
    # one row per receipt (a few per case): feedback is the earlier of a reply and a status,
    # which is simpler to combine here than in SQL
    times = receipt_times(session, col(RemediationCase.id).in_(scope), policy=current_policy())

    def count(pairs: list[tuple[datetime, datetime | None]]) -> tuple[int, int, int, int | None]:
        late = [(met - due).days for due, met in pairs if met is not None and met > due]
        on_time = sum(1 for due, met in pairs if met is not None and met <= due)
        never = sum(1 for _, met in pairs if met is None)
        return on_time, len(late), never, max(late, default=None)

    ack = count([(t.acknowledge_by, t.acknowledged_at) for t in times])
    feedback = count([(t.feedback_by, t.feedback_at) for t in times])
    return ReporterTimeliness(
        receipts=len(times),
        acknowledged_on_time=ack[0],
        acknowledged_late=ack[1],
        not_acknowledged=ack[2],
        worst_acknowledgement_days_late=ack[3],
        feedback_on_time=feedback[0],
        feedback_late=feedback[1],
        no_feedback=feedback[2],
        worst_feedback_days_late=feedback[3],
    )


def _root_causes(session: Session, scope: Any) -> dict[str, Any]:
    lessons = session.exec(
        select(Lesson.case_id, Lesson.root_causes).where(col(Lesson.case_id).in_(scope))
    ).all()
    # a case counts once per cause, however often its record names it
    causes: dict[uuid.UUID, set[str]] = {
        case_id: {str(c) for c in (found or [])} for case_id, found in lessons
    }
    tiers: dict[uuid.UUID, set[str]] = defaultdict(set)
    for case_id, tier in session.exec(
        select(Allegation.case_id, AllegationOrganisation.tier)
        .join(
            AllegationOrganisation,
            col(AllegationOrganisation.allegation_id) == col(Allegation.id),
            isouter=True,
        )
        .where(col(Allegation.case_id).in_(scope))
        .distinct()
    ).all():
        tiers[case_id].add(UNKNOWN_TIER if tier is None else str(tier))
    countries: dict[uuid.UUID, set[str]] = defaultdict(set)
    for case_id, country in session.exec(
        select(Allegation.case_id, Allegation.country)
        .where(col(Allegation.case_id).in_(scope))
        .distinct()
    ).all():
        countries[case_id].add(country)

    frequency = Counter(c for found in causes.values() for c in found)
    ranked = sorted(frequency.items(), key=lambda item: (-item[1], item[0]))
    return {
        "root_causes": [NamedCount(name=c, count=n) for c, n in ranked],
        "by_tier": _cross(causes, tiers, [c for c, _ in ranked], _tier_order),
        "by_country": _cross(causes, countries, [c for c, _ in ranked], lambda g: (0, g)),
    }


def _tier_order(group: str) -> tuple[int, str]:
    return (1, group) if not group.isdigit() else (0, f"{int(group):04d}")


def _cross(
    causes: dict[uuid.UUID, set[str]],
    groups: dict[uuid.UUID, set[str]],
    ranked: list[str],
    order: Any,
) -> CrossTab:
    cells: Counter[tuple[str, str]] = Counter()
    for case_id, found in causes.items():
        for group in groups.get(case_id) or {UNKNOWN_TIER}:
            for cause in found:
                cells[(cause, group)] += 1
    columns = sorted({g for _, g in cells}, key=order)
    return CrossTab(
        groups=columns,
        rows=[CrossRow(cause=c, counts=[cells[(c, g)] for g in columns]) for c in ranked],
    )


# --- the Prefect artifact ------------------------------------------------------------------------


def publish_lessons_artifact(markdown: str) -> None:
    """Publish the Markdown report as the `remedy-lessons` artifact on the Prefect server."""
    from tasks.reports.artifacts import markdown_artifact

    markdown_artifact(
        ARTIFACT_KEY,
        markdown,
        "Lessons learned across closed cases (figures only, no personal data)",
    )
