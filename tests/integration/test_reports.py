"""The lessons-learned report over seeded cases, on real stores, against figures counted here.

Every case is driven through the steps' plain functions by a clock that moves only when told, so
each duration, due time and verification moment is one the test chose. The expected figures are
computed from those choices (what the test did), never by calling the report's own functions.
"""

from __future__ import annotations

import statistics
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cyclopts import App
from sqlmodel import select

from demo.scripted import REPRESENTATIVE, settle
from flows.cli.report import register
from models.enums import (
    CaseEvent,
    DecisionKind,
    MilestoneStatus,
    Severity,
    Step,
)
from models.tables import Lesson, PlanAction
from tasks.case_state import begin_case, move, open_step
from tasks.context import current_policy
from tasks.decisions.requests import DecisionView
from tasks.intake import open_case, read_report
from tasks.reports.case_view import case_view
from tasks.reports.lessons import LessonsFigures, lessons_figures
from tasks.reports.lessons_render import render_lessons, svg_step_durations
from tasks.steps.implement import activate_plan, update_milestone
from tasks.steps.plan import draft_plan
from tasks.store.cases import get_case
from tasks.store.db import unit_of_work
from tests.conftest import Store
from tests.integration.factories import (
    LEAD,
    SAMPLE_REPORT,
    SUPPLIER,
    Clock,
    SampleCase,
    dump_store,
    load_sample_directory,
    milestones,
    rows,
    script,
    start_sample_case,
    to_implementing,
)
from tests.integration.test_step3_plan import table_rows

CANARY = "Zebulon Canaryfield-Oyelaran"  # planted in identities, narratives and free text
SINCE = date(2027, 1, 1)
NOW = datetime(2027, 6, 1, 9, 0, tzinfo=UTC)
SVG = "{http://www.w3.org/2000/svg}"
# What each kept plan action is, as the shipped plan templates define it.
ACTION_FORMS = {
    "safety-planning": ("assistance", "safety_security"),
    "document-return": ("corrective_action", "document_return"),
    "fee-reimbursement": ("corrective_action", "fee_reimbursement"),
    "non-repetition": ("remedy_form", "non_repetition"),
    "medical-check-p-01": ("assistance", "medical"),
    "child-removal-p-01": ("corrective_action", "child_removal_and_schooling"),
}
SMELTER = {
    "key": "kivu-smelter",
    "name": "Kivu Smelting Ltd",
    "type": "smelter_refiner",
    "relation": "smelter",
    "tier": 2,
}
MINE = {"name": "Nyabibwe Mining Cooperative", "type": "mine_or_asm_site", "relation": "mine_site"}
TRADER = {"name": "Rubaya Traders", "type": "trader", "relation": "trader", "tier": 1}


class StillClock(Clock):
    """A clock that moves only when told to: every duration in the seed is one the test chose."""

    def tick(self, **delta: float) -> datetime:
        if delta:
            self.now += timedelta(**delta)
        return self.now

    def at_least(self, moment: datetime) -> datetime:
        self.now = max(self.now, moment)
        return self.now


@dataclass
class Seeded:
    """What the test did to one case, from which the expected figures are counted."""

    ref: str
    country: str
    tiers: set[str]
    closed_at: datetime | None = None
    starts: dict[int, datetime] = field(default_factory=dict)
    days: dict[int, float] = field(default_factory=dict)
    verified: list[tuple[date, datetime]] = field(default_factory=list)
    waived: int = 0
    forms: Counter[tuple[str, str]] = field(default_factory=Counter)
    decisions: list[tuple[str, bool]] = field(default_factory=list)
    root_causes: list[str] = field(default_factory=list)

    def enter(self, step: int, now: datetime) -> None:
        self.starts[step] = now

    def leave(self, step: int, now: datetime) -> None:
        start = self.starts.pop(step)
        self.days[step] = self.days.get(step, 0.0) + (now - start).total_seconds() / 86400

    def move(self, from_step: int, to_step: int, now: datetime) -> None:
        self.leave(from_step, now)
        self.enter(to_step, now)


# --- driving cases -------------------------------------------------------------------------------


def open_seed_case(
    clock: StillClock,
    tmp_path: Path,
    name: str,
    *,
    country: str,
    organisations: list[dict[str, Any]],
    directory: bool = False,
) -> tuple[SampleCase, Seeded]:
    """Open a variant of the sample report (canary in every identity) and start step 1."""
    data = yaml.safe_load(SAMPLE_REPORT.read_text())
    data["description"] = f"{data['description']} Case {name}; {CANARY} was there."
    data["location"] = {"country": country, "site": f"Site of {CANARY}"}
    data["organisations"] = organisations
    data["reporter"]["name"] = CANARY
    data["affected_persons"][0]["identity"]["name"] = CANARY
    path = tmp_path / f"report-{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    if directory:
        load_sample_directory(clock.now)
    ref = open_case(read_report(path, now=clock.now), now=clock.now, actor="test").reference
    begin_case(ref, now=clock.now)
    run_id = uuid.uuid4()
    ctx = open_step(ref, Step.VERIFY, flow_run_id=run_id, now=clock.now)
    tiers = {str(o["tier"]) if o.get("tier") is not None else "unknown" for o in organisations}
    seeded = Seeded(ref=ref, country=country, tiers=tiers or {"unknown"})
    seeded.enter(1, clock.now)
    return SampleCase(ref=ref, clock=clock, ctx=ctx, run_id=run_id), seeded


def decide(
    case: SampleCase,
    seeded: Seeded,
    kind: DecisionKind,
    *,
    before: float = 0.0,
    wait: float = 0.0,
    scope: str | None = None,
    exclude: list[uuid.UUID] | None = None,
    **changes: Any,
) -> DecisionView:
    """Work `before` hours, ask for a decision, and take it `wait` hours after it was asked."""
    if before:
        case.clock.tick(hours=before)
    who, values = script(kind, **changes)
    pending = case.prepare(kind, scope=scope, exclude=exclude)
    severity = case.case().severity or Severity.HIGH
    allowed = timedelta(hours=current_policy().deadlines[severity].decision_response_hours)
    asked = case.clock.now
    if wait:
        case.clock.tick(hours=wait)
    result = case.submit(pending.request_id, who, values)
    assert result.accepted and result.decision is not None, result.reason
    seeded.decisions.append((kind.value, case.clock.now - asked > allowed))
    return result.decision


def close(case: SampleCase, seeded: Seeded, step: int, *, waits: dict[str, float]) -> None:
    """Step 5: propose and confirm the closure; step 6 is entered at that moment."""
    proposal = decide(
        case, seeded, DecisionKind.CLOSURE, wait=waits.get("closure", 1), **closure_changes(case)
    )
    decide(
        case,
        seeded,
        DecisionKind.CLOSURE_CONFIRMATION,
        wait=waits.get("confirmation", 1),
        scope=case.confirmation_scope(proposal),
        exclude=[proposal.approver_id],
    )
    seeded.closed_at = case.clock.now
    seeded.move(step, 6, case.clock.now)


def closure_changes(case: SampleCase) -> dict[str, Any]:
    stored = case.case().closure_type
    return {"closure_type": stored.value} if stored else {}


def capture(case: SampleCase, seeded: Seeded, causes: list[str], *, wait: float) -> None:
    """Step 6: record the lessons (with free text that must never reach the report)."""
    case.enter(Step.LESSONS)
    decide(
        case,
        seeded,
        DecisionKind.LESSONS,
        wait=wait,
        root_causes=causes,
        summary=f"Told by {CANARY}.",
        changes=[f"Ask {CANARY} again"],
    )
    seeded.root_causes = causes
    seeded.leave(6, case.clock.now)


def remedied_case(
    clock: StillClock,
    tmp_path: Path,
    name: str,
    *,
    country: str,
    organisations: list[dict[str, Any]],
    waits: dict[str, float],
    keep: list[str],
    late: set[str],
    waive: frozenset[str] = frozenset(),
    causes: list[str] | None = None,
    directory: bool = False,
    stop_implementing: bool = False,
) -> Seeded:
    """Drive a case through all the steps with the waits (hours) and milestone timings given."""
    case, s = open_seed_case(
        clock, tmp_path, name, country=country, organisations=organisations, directory=directory
    )
    w = waits.get
    decide(case, s, DecisionKind.SCREENING, before=w("start", 0), wait=w("screening", 0))
    decide(case, s, DecisionKind.SAFETY, wait=w("safety", 0))
    decide(case, s, DecisionKind.VERIFICATION, wait=w("verification", 0))
    s.move(1, 2, clock.now)

    case.enter(Step.RESPOND)
    decide(case, s, DecisionKind.IMPACT_ASSESSMENT, wait=w("impact", 0))
    decide(case, s, DecisionKind.RESPONSE, wait=w("response", 0))
    s.move(2, 3, clock.now)

    case.enter(Step.PLAN)
    draft_plan(case.ref, now=clock.now)
    drafted = [a.key for a in rows(PlanAction, PlanAction.case_id == case.case().id)]
    assert set(keep) <= set(drafted)
    decide(
        case,
        s,
        DecisionKind.PLAN_AGREEMENT,
        wait=w("agreement", 0),
        outcome="agree_with_changes",
        remove_actions=[k for k in drafted if k not in keep],
    )
    decide(case, s, DecisionKind.PLAN_BUDGET, wait=w("budget", 0))
    s.move(3, 4, clock.now)

    case.enter(Step.IMPLEMENT)
    activate_plan(case.ref, now=clock.now)
    owners = dict(milestones(case.ref))
    due = {
        a.key: a.due_on
        for a in rows(PlanAction, PlanAction.case_id == case.case().id)
        if a.status == MilestoneStatus.ACTIVE
    }
    assert set(due) == set(keep)
    for key in sorted(waive):
        update_milestone(
            case.ref, key, status=MilestoneStatus.WAIVED, by=LEAD, note="Not wanted.", now=clock.now
        )
        s.waived += 1
    # in due order, on-time ones first on a shared due day (the clock never goes back)
    for key in sorted(set(keep) - waive, key=lambda k: (due[k], k in late, k)):
        # the last minute of the due day is on time; the first minute of the next is late
        when = (
            datetime.combine(due[key] + timedelta(days=1), time(0, 1), tzinfo=UTC)
            if key in late
            else datetime.combine(due[key], time(23, 59), tzinfo=UTC)
        )
        clock.at_least(when)
        by = owners[key] or LEAD
        update_milestone(
            case.ref,
            key,
            status=MilestoneStatus.DONE,
            by=by,
            evidence=[f"doc:{key}"],
            now=clock.now,
        )
        settle(case.ref, key, payer=LEAD, representative=REPRESENTATIVE, now=clock.now)
        if stop_implementing:
            update_milestone(case.ref, key, status=MilestoneStatus.VERIFIED, by=LEAD, now=clock.now)
            s.verified.append((due[key], clock.now))
            s.forms[ACTION_FORMS[key]] += 1
            return s  # left open, one milestone verified
        update_milestone(case.ref, key, status=MilestoneStatus.VERIFIED, by=LEAD, now=clock.now)
        s.verified.append((due[key], clock.now))
        s.forms[ACTION_FORMS[key]] += 1
    s.move(4, 5, clock.now)

    clock.tick(hours=w("before_close", 0))
    case.enter(Step.CLOSE)
    close(case, s, 5, waits=waits)
    if causes is not None:
        capture(case, s, causes, wait=w("lessons", 0))
    return s


def closed_after_step_1(
    clock: StillClock,
    tmp_path: Path,
    name: str,
    *,
    country: str,
    organisations: list[dict[str, Any]],
    outcome: str,
    waits: dict[str, float],
    causes: list[str] | None = None,
    directory: bool = False,
) -> Seeded:
    """A case screened out or found unsubstantiated: step 1, then closure (and lessons)."""
    case, s = open_seed_case(
        clock, tmp_path, name, country=country, organisations=organisations, directory=directory
    )
    w = waits.get
    if outcome == "screened_out":
        decide(
            case,
            s,
            DecisionKind.SCREENING,
            wait=w("screening", 0),
            outcome="rejected",
            reason="Outside our supply chain.",
        )
    else:
        decide(case, s, DecisionKind.SCREENING, wait=w("screening", 0))
        decide(case, s, DecisionKind.SAFETY, wait=w("safety", 0))
        decide(
            case,
            s,
            DecisionKind.VERIFICATION,
            wait=w("verification", 0),
            outcome="unsubstantiated",
            reason="The interviews did not confirm the report.",
            palermo_act="absent",
        )
    s.move(1, 5, clock.now)
    clock.tick(hours=w("before_close", 0))
    case.enter(Step.CLOSE)
    close(case, s, 5, waits=waits)
    if causes is not None:
        capture(case, s, causes, wait=w("lessons", 0))
    return s


def seed(tmp_path: Path) -> list[Seeded]:
    """Seven cases: four closed since SINCE, one closed before it, one open, one reopened."""
    early = closed_after_step_1(
        StillClock(datetime(2026, 11, 30, 8, 0, tzinfo=UTC)),
        tmp_path,
        "early",
        country="UG",
        organisations=[{**TRADER, "tier": 3}],
        outcome="screened_out",
        waits={"screening": 40, "before_close": 5, "closure": 2, "confirmation": 3, "lessons": 6},
        causes=["other", "audit_gaps"],
        directory=True,
    )
    a = remedied_case(
        StillClock(datetime(2027, 1, 4, 9, 0, tzinfo=UTC)),
        tmp_path,
        "a",
        country="CD",
        organisations=[SMELTER, {**MINE, "tier": 4}],
        waits={
            "start": 3,
            "screening": 2,
            "safety": 5,
            "verification": 30,  # late: 24 hours allowed for a critical case
            "impact": 10,
            "response": 3,
            "agreement": 20,
            "budget": 26,  # late
            "before_close": 12,
            "closure": 4,
            "confirmation": 1,
            "lessons": 48,  # late
        },
        keep=["safety-planning", "document-return", "fee-reimbursement", "non-repetition"],
        late={"document-return"},
        causes=["recruitment_fees", "document_retention", "weak_age_verification"],
    )
    b = remedied_case(
        StillClock(datetime(2027, 2, 1, 7, 30, tzinfo=UTC)),
        tmp_path,
        "b",
        country="RW",
        organisations=[TRADER, SMELTER],
        waits={
            "screening": 50,  # late
            "safety": 1,
            "verification": 2,
            "impact": 70,  # late
            "response": 1,
            "agreement": 5,
            "budget": 5,
            "before_close": 40,
            "closure": 30,  # late
            "confirmation": 2,
            "lessons": 3,
        },
        keep=["safety-planning", "child-removal-p-01", "medical-check-p-01", "non-repetition"],
        late={"safety-planning", "non-repetition"},
        waive=frozenset({"medical-check-p-01"}),
        causes=["recruitment_fees", "purchasing_practices"],
    )
    c = remedied_case(
        StillClock(datetime(2027, 3, 1, 12, 0, tzinfo=UTC)),
        tmp_path,
        "c",
        country="CD",
        # no tier recorded for either: the case counts once under "unknown"
        organisations=[MINE, {"name": "Kalimbi Depot", "type": "trader", "relation": "depot"}],
        waits={"start": 100, "verification": 6, "response": 8, "budget": 2, "closure": 2},
        keep=["safety-planning", "document-return", "fee-reimbursement"],
        late=set(),
        causes=["document_retention", "armed_group_control"],
    )
    d = closed_after_step_1(
        StillClock(datetime(2027, 3, 10, 10, 0, tzinfo=UTC)),
        tmp_path,
        "d",
        country="RW",
        organisations=[SMELTER],
        outcome="unsubstantiated",
        waits={"screening": 1, "safety": 2, "verification": 36, "closure": 5, "confirmation": 2},
        causes=None,  # closed, lessons not recorded yet: step 6 is not counted
    )
    open_case_ = remedied_case(
        StillClock(datetime(2027, 4, 1, 9, 0, tzinfo=UTC)),
        tmp_path,
        "open",
        country="UG",
        organisations=[{**TRADER, "tier": 5}],
        waits={"screening": 30, "verification": 40},
        keep=["safety-planning", "non-repetition"],
        late={"safety-planning"},
        stop_implementing=True,
    )
    reopened = closed_after_step_1(
        StillClock(datetime(2027, 2, 15, 9, 0, tzinfo=UTC)),
        tmp_path,
        "reopened",
        country="UG",
        organisations=[{**TRADER, "tier": 6}],
        outcome="screened_out",
        waits={"screening": 30, "closure": 2, "lessons": 4},
        causes=["no_grievance_channel"],
    )
    with unit_of_work() as session:  # new evidence: the case is open again, closed_at stays set
        case = get_case(session, reopened.ref, lock=True)
        move(
            session,
            case,
            CaseEvent.REOPEN_FOR_VERIFICATION,
            now=datetime(2027, 3, 1, 9, 0, tzinfo=UTC),
            actor="test",
            reopen_reason="New evidence.",
        )
    reopened.closed_at = None
    return [early, a, b, c, d, open_case_, reopened]


# --- the expected figures, counted from what the seed did ----------------------------------------


def expected(seeded: list[Seeded], since: date | None) -> dict[str, Any]:
    start = datetime.combine(since, time.min, tzinfo=UTC) if since else None
    closed = [
        s for s in seeded if s.closed_at is not None and (start is None or s.closed_at >= start)
    ]
    steps = {}
    for step in range(1, 7):
        values = [s.days[step] for s in closed if step in s.days]
        steps[step] = (
            len(values),
            statistics.median(values) if values else None,
            max(values) if values else None,
        )
    verified = [v for s in closed for v in s.verified]
    on_time = sum(1 for due, when in verified if when.date() <= due)
    decisions: dict[str, tuple[int, int]] = {}
    for s in closed:
        for kind, late in s.decisions:
            n, o = decisions.get(kind, (0, 0))
            decisions[kind] = (n + 1, o + int(late))
    forms: Counter[tuple[str, str]] = Counter()
    causes: Counter[str] = Counter()
    by_tier: Counter[tuple[str, str]] = Counter()
    by_country: Counter[tuple[str, str]] = Counter()
    for s in closed:
        forms.update(s.forms)
        for cause in set(s.root_causes):
            causes[cause] += 1
            for tier in s.tiers:
                by_tier[(cause, tier)] += 1
            by_country[(cause, s.country)] += 1
    return {
        "closed": len(closed),
        "with_lessons": sum(1 for s in closed if s.root_causes),
        "steps": steps,
        "milestones": (len(verified), on_time, len(verified) - on_time),
        "waived": sum(s.waived for s in closed),
        "decisions": decisions,
        "forms": dict(forms),
        "causes": dict(causes),
        "by_tier": dict(by_tier),
        "by_country": dict(by_country),
    }


def actual(f: LessonsFigures) -> dict[str, Any]:
    return {
        "closed": f.closed_cases,
        "with_lessons": f.cases_with_lessons,
        "steps": {s.step: (s.cases, s.median_days, s.worst_days) for s in f.steps},
        "milestones": (f.milestones.verified, f.milestones.on_time, f.milestones.late),
        "waived": f.milestones.waived,
        "decisions": {d.kind: (d.decisions, d.overdue) for d in f.decisions},
        "forms": {(r.kind.value, r.category): r.delivered for r in f.forms},
        "causes": {c.name: c.count for c in f.root_causes},
        "by_tier": f.by_tier.as_dict(),
        "by_country": f.by_country.as_dict(),
    }


def assert_figures(f: LessonsFigures, want: dict[str, Any]) -> None:
    got = actual(f)
    for step, (n, median, worst) in want["steps"].items():
        g_n, g_median, g_worst = got["steps"][step]
        assert g_n == n, f"step {step}: cases"
        assert g_median == (pytest.approx(median, abs=1e-5) if median is not None else None)
        assert g_worst == (pytest.approx(worst, abs=1e-5) if worst is not None else None)
    for key in want:
        if key != "steps":
            assert got[key] == want[key], key


# --- tests ---------------------------------------------------------------------------------------


def run_report_cli(*argv: str) -> int:
    """Run `remedy report ...` through a command line that has the report commands registered."""
    app = App(name="remedy")
    register(app)
    result = app(list(argv), exit_on_error=False, print_error=True, result_action="return_value")
    return int(result or 0)


def test_lessons_figures_match_an_independent_count(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seeded = seed(tmp_path)
    everything = expected(seeded, None)
    recent = expected(seeded, SINCE)
    # the seed is what it means to be: each figure has something to count
    assert everything["closed"] == 5 and recent["closed"] == 4
    assert recent["milestones"][1] >= 1 and recent["milestones"][2] >= 1 and recent["waived"] == 1
    assert any(o for _, o in recent["decisions"].values())
    assert any(n > o for n, o in recent["decisions"].values())
    assert recent["steps"][6][0] == 3 and recent["steps"][4][0] == 3 and recent["steps"][1][0] == 4

    figures = lessons_figures(since=None, now=NOW)
    assert figures.generated_at == NOW and figures.since is None
    assert_figures(figures, everything)
    recent_figures = lessons_figures(since=SINCE, now=NOW)
    assert_figures(recent_figures, recent)
    assert recent_figures.milestones.cancelled == 0
    assert [c.name for c in recent_figures.root_causes][:2] == [
        "document_retention",
        "recruitment_fees",
    ]  # two cases each, ties by name; then the causes of one case
    assert recent_figures.by_tier.groups == ["1", "2", "4", "unknown"]
    assert lessons_figures(since=date(2027, 5, 1), now=NOW).closed_cases == 0

    # both renderings carry the figures and nothing personal (the canary is in the store, in
    # plain text where free text is kept: site, lessons summary and changes)
    assert CANARY in dump_store(store)
    md, html = render_lessons(recent_figures, "md"), render_lessons(recent_figures, "html")
    for text in (md, html):
        assert CANARY not in text and "Canaryfield" not in text
        assert "P-01" not in text and "p-01" not in text
        assert "closed on or after 2027-01-01" in text
    rate = recent_figures.milestones.on_time / recent_figures.milestones.verified
    assert f"On-time rate: **{rate * 100:.0f}%**" in md
    assert f"On-time rate: <strong>{rate * 100:.0f}%</strong>" in html
    median_1 = recent_figures.steps[0].median_days
    assert median_1 is not None and f"| 1 | Verify the allegation | 4 | {median_1:.1f} |" in md
    assert "| recruitment_fees | 1 | 2 | 1 | 0 |" in md  # tiers 1, 2, 4, unknown

    # the command line writes the same report to a file, Markdown by default
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    target = tmp_path / "out" / "lessons.md"
    assert (
        run_report_cli("report", "lessons", "--since", "2027-01-01", "--output", str(target)) == 0
    )
    written = target.read_text()

    def body(text: str) -> str:
        return "\n".join(line for line in text.splitlines() if not line.startswith("Generated"))

    assert body(written) == body(md)
    assert run_report_cli("report", "lessons", "--format", "html", "--output", str(target)) == 0
    assert target.read_text().startswith("<!DOCTYPE html>") and CANARY not in target.read_text()
    assert "over <strong>5</strong> closed case(s)," in target.read_text()  # no --since: all


def test_html_report_escapes_stored_text_and_draws_each_step(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    seeded = closed_after_step_1(
        StillClock(datetime(2027, 1, 10, 8, 0, tzinfo=UTC)),
        tmp_path,
        "x",
        country="CD",
        organisations=[SMELTER],
        outcome="screened_out",
        waits={"screening": 12, "before_close": 30, "closure": 6, "lessons": 20},
        causes=["other"],
        directory=True,
    )
    hostile = '<script>alert("x")</script> | fees & *more*'
    with unit_of_work() as session:
        case = get_case(session, seeded.ref)
        lesson = session.exec(select(Lesson).where(Lesson.case_id == case.id)).one()
        lesson.root_causes = [hostile, "other"]  # stored text is data, whoever wrote it
        session.add(lesson)
    figures = lessons_figures(since=None, now=NOW)
    assert {c.name for c in figures.root_causes} == {hostile, "other"}

    html = render_lessons(figures, "html")
    assert "<script" not in html and "&lt;script&gt;" in html and "&amp; *more*" in html
    md = render_lessons(figures, "md")
    assert "<script" not in md and "&lt;script&gt;" in md and "&#124; fees" in md

    chart = html[html.index("<svg") : html.index("</svg>") + len("</svg>")]
    assert chart == svg_step_durations(figures)
    root = ET.fromstring(chart)  # well-formed XML
    assert root.tag == f"{SVG}svg" and (root.get("width"), root.get("height")) == ("640", "320")
    assert all(el.tag != f"{SVG}script" for el in root.iter())
    bars = [r for r in root.iter(f"{SVG}rect") if "bar" in (r.get("class") or "").split()]
    assert sorted((r.get("data-step"), r.get("class")) for r in bars) == sorted(
        (str(step), f"bar {series}") for step in range(1, 7) for series in ("median", "worst")
    )
    heights = {(r.get("data-step"), r.get("class")): float(r.get("height") or 0) for r in bars}
    # step 1 took 12 hours, step 5 took 30 + 6 + 1 hours, step 6 20 hours; nothing else
    assert seeded.days == pytest.approx({1: 0.5, 5: 37 / 24, 6: 20 / 24})
    assert heights[("5", "bar worst")] > heights[("6", "bar worst")] > heights[("1", "bar worst")]
    assert heights[("1", "bar worst")] / heights[("5", "bar worst")] == pytest.approx(
        0.5 / (37 / 24), rel=1e-3
    )
    assert all(heights[(str(s), "bar median")] == 0 for s in (2, 3, 4))
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    assert "Days" in texts and "Step" in texts and {"1", "2", "3", "4", "5", "6"} <= set(texts)

    # the command line prints Markdown to stdout by default, and publishes nothing without Prefect
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # nothing listens there
    assert run_report_cli("report", "lessons", "--no-artifact") == 0
    printed = capsys.readouterr().out
    assert (
        printed.startswith("# Lessons learned across closed cases") and "&lt;script&gt;" in printed
    )


def test_the_case_view_shows_stored_text_as_text(store: Store) -> None:
    case = to_implementing(Clock())
    activate_plan(case.ref, now=case.clock.tick())
    hostile = "x|[sign in](https://evil.example/login)"
    with unit_of_work() as session:  # whoever wrote it, stored text is data
        action = session.exec(select(PlanAction).where(PlanAction.key == "document-return")).one()
        action.key, due = hostile, action.due_on
        session.add(action)
    run_link = "http://127.0.0.1:4200/runs/flow-run/1"

    shown = case_view(case.ref, now=case.clock.now, link=lambda _: run_link)

    # every cell is plain text (no link), and the edited milestone keeps its four cells
    assert [r for r in table_rows(shown) if r[0] == hostile] == [
        [hostile, SUPPLIER, str(due), "active"]
    ]
    # the one link a case view carries is ours: the run waiting for a decision
    waiting = start_sample_case(case.clock, variant="another", directory=False)
    waiting.prepare(DecisionKind.SCREENING)
    assert f"| [flow run]({run_link}) |" in case_view(
        waiting.ref, now=case.clock.now, link=lambda _: run_link
    )
