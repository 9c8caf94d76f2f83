"""Lessons learned across closed cases (domain.md Step 6, UNGP 29 and 31 g): figures and report.

`lessons_figures` reads the case store with set-based queries (GROUP BY in the database; Python
only combines the aggregated rows) and returns a pydantic model; `render_lessons` turns it into
Markdown or HTML through Jinja2; `svg_step_durations` draws the steps' durations as an inline SVG.

No personal data: the queries read references, enums, dates, countries, tiers and the coded root
causes only — never affected persons, narratives, free-text fields or `*_ciphertext` columns.
"""

from __future__ import annotations

import math
import statistics
import uuid
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, time
from functools import lru_cache
from typing import Any, Literal

import sqlalchemy as sa
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape
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
from models.lifecycle import WORK_STATES as STEP_STATES
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
from notifications.render import TEMPLATES
from tasks.store.db import read_only

ARTIFACT_KEY = "remedy-lessons"
TRANSITION = "case.transition"  # the audit action tasks.case_state.move writes
UNKNOWN_TIER = "unknown"
CLOSED_STATES = (CaseState.CLOSED, CaseState.LESSONS_CAPTURED)
COUNTED_PLANS = (PlanStatus.APPROVED, PlanStatus.SUPERSEDED)
# The step each working state belongs to (on hold, intake and lessons captured count in none).
_STEP_OF_STATE = {
    state.value: int(step) for step, states in STEP_STATES.items() for state in states
}
Format = Literal["md", "html"]


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
        .where(transitions.c.left.is_not(None), transitions.c.state.in_(list(_STEP_OF_STATE)))
        .group_by(transitions.c.chain, transitions.c.state)
    ).all()
    # one row per case and state (each step has one state): the median is taken here because
    # SQLite has no percentile function
    per_step: dict[int, list[float]] = defaultdict(list)
    for name, total in rows:
        per_step[_STEP_OF_STATE[name]].append(max(float(total), 0.0))
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


# --- rendering -----------------------------------------------------------------------------------


def _days(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _md(value: object) -> str:
    """Make stored text safe in a Markdown table cell: no HTML, no cell breaks."""
    text = " ".join(str(value).split())
    for char, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "&#124;")):
        text = text.replace(char, entity)
    for char in "\\`*[]":
        text = text.replace(char, "\\" + char)
    return text


@lru_cache(maxsize=1)
def report_environment() -> Environment:
    """Return the Jinja2 environment of the reports (autoescape for .html.j2, strict undefined)."""
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["days"] = _days
    env.filters["pct"] = _pct
    env.filters["md"] = _md
    return env


def render_lessons(figures: LessonsFigures, fmt: Format) -> str:
    """Render the lessons-learned report as Markdown or as a standalone HTML page."""
    if fmt not in ("md", "html"):
        raise ValueError(f"unknown report format {fmt!r} (md or html)")
    template = report_environment().get_template(f"report/lessons.{fmt}.j2")
    context: dict[str, Any] = {"f": figures, "total": figures.decisions_total}
    if fmt == "html":
        # our own markup, built from escaped parts only (see svg_step_durations)
        context["chart"] = Markup(svg_step_durations(figures))  # noqa: S704
    return template.render(context)


# --- the chart -----------------------------------------------------------------------------------

SVG_WIDTH, SVG_HEIGHT = 640, 320
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 44, 56
SERIES = (("median", "#4477aa"), ("worst", "#ee6677"))


def _nice_ceiling(value: float) -> tuple[float, float]:
    """Return (axis maximum, tick step) for values up to `value`, with about five ticks."""
    if value <= 0:
        return 1.0, 0.25
    raw = value / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return step * math.ceil(value / step - 1e-9), step


def _num(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _text(x: float, y: float, content: str, **attrs: str) -> str:
    extra = "".join(f' {k.rstrip("_").replace("_", "-")}="{escape(v)}"' for k, v in attrs.items())
    return f'<text x="{_num(x)}" y="{_num(y)}"{extra}>{escape(content)}</text>'


def svg_step_durations(figures: LessonsFigures) -> str:
    """Draw the median and worst days per step as a fixed-size SVG bar chart (no script)."""
    plot_w = SVG_WIDTH - _LEFT - _RIGHT
    plot_h = SVG_HEIGHT - _TOP - _BOTTOM
    base = _TOP + plot_h
    worst = max((s.worst_days or 0.0 for s in figures.steps), default=0.0)
    top, tick = _nice_ceiling(worst)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_WIDTH}" height="{SVG_HEIGHT}" '
        f'viewBox="0 0 {SVG_WIDTH} {SVG_HEIGHT}" role="img" font-family="sans-serif" '
        'font-size="11">',
        f"<title>{escape('Days spent in each step: median and worst case')}</title>",
        f'<rect x="0" y="0" width="{SVG_WIDTH}" height="{SVG_HEIGHT}" fill="#ffffff"/>',
    ]
    # y axis: gridlines and tick labels
    ticks = round(top / tick)
    for i in range(ticks + 1):
        value = i * tick
        y = base - plot_h * value / top
        parts.append(
            f'<line class="grid" x1="{_LEFT}" y1="{_num(y)}" x2="{_LEFT + plot_w}" '
            f'y2="{_num(y)}" stroke="#dddddd"/>'
        )
        parts.append(_text(_LEFT - 6, y + 4, _num(value), text_anchor="end"))
    parts.append(
        f'<line class="axis" x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{base}" stroke="#333333"/>'
    )
    parts.append(
        f'<line class="axis" x1="{_LEFT}" y1="{base}" x2="{_LEFT + plot_w}" y2="{base}" '
        'stroke="#333333"/>'
    )
    middle_y = _TOP + plot_h / 2
    parts.append(
        _text(
            16,
            middle_y,
            "Days",
            text_anchor="middle",
            transform=f"rotate(-90 16 {_num(middle_y)})",
            class_="axis-label",
        )
    )
    parts.append(
        _text(
            _LEFT + plot_w / 2, SVG_HEIGHT - 12, "Step", text_anchor="middle", class_="axis-label"
        )
    )
    # the bars: one per step and series
    group_w = plot_w / max(len(figures.steps), 1)
    bar_w = group_w * 0.32
    for n, step in enumerate(figures.steps):
        x0 = _LEFT + n * group_w + group_w * 0.18
        for k, (series, colour) in enumerate(SERIES):
            days = step.median_days if series == "median" else step.worst_days
            height = plot_h * (days or 0.0) / top
            label = (
                f"Step {step.step} ({step.title}), {series}: "
                f"{_days(days)} days over {step.cases} case(s)"
            )
            parts.append(
                f'<rect class="bar {series}" data-step="{step.step}" '
                f'data-days="{escape(_num(days)) if days is not None else ""}" '
                f'x="{_num(x0 + k * bar_w)}" y="{_num(base - height)}" '
                f'width="{_num(bar_w)}" height="{_num(height)}" fill="{colour}">'
                f"<title>{escape(label)}</title></rect>"
            )
        parts.append(
            _text(x0 + bar_w, base + 16, str(step.step), text_anchor="middle", class_="step")
        )
    # legend
    x = _LEFT
    for series, colour in SERIES:
        parts.append(f'<rect x="{x}" y="14" width="12" height="12" fill="{colour}"/>')
        parts.append(_text(x + 16, 24, f"{series} days", class_="legend"))
        x += 110
    parts.append("</svg>")
    return "\n".join(parts)


# --- the Prefect artifact ------------------------------------------------------------------------


def publish_lessons_artifact(markdown: str) -> None:
    """Publish the Markdown report as the `remedy-lessons` artifact on the Prefect server."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(
        key=ARTIFACT_KEY,
        markdown=markdown,
        description="Lessons learned across closed cases (figures only, no personal data)",
    )
