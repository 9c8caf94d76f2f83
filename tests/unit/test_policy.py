"""Policy unit tests: default file, severity, response level, deadlines, closure, broken files."""

from __future__ import annotations

import itertools
import pickle
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from models.enums import (
    AnnexIICategory,
    ClosureType,
    Involvement,
    Irremediability,
    RemedyRole,
    ResponseLevel,
    Role,
    Scale,
    Severity,
)
from models.policy import (
    DEFAULT_POLICY_PATH,
    MilestoneSummary,
    Policy,
    PolicyError,
    SeverityInput,
    assess_severity,
    case_deadlines,
    closure_check,
    decision_due,
    load_policy,
    remedy_role,
    response_level,
)

POLICY = load_policy()
DEFAULT_TEXT = DEFAULT_POLICY_PATH.read_text(encoding="utf-8")

# Ranks written out here, not taken from the module under test.
SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}
SCALES = ["low", "moderate", "high", "extreme"]
IRREMEDIABILITIES = ["remediable", "difficult", "very_difficult", "irreversible"]
URGENCY = {"level_3": 0, "level_2": 1, "level_1": 2}


def severity(
    scale: str,
    persons: int,
    irremediability: str,
    *,
    minors: bool = False,
    annex_ii: tuple[AnnexIICategory, ...] = (),
) -> Severity:
    inp = SeverityInput(
        scale=Scale(scale),
        persons_affected=persons,
        irremediability=Irremediability(irremediability),
        minors_involved=minors,
        annex_ii=annex_ii,
    )
    return assess_severity(inp, POLICY)


def test_default_policy_loads_with_the_documented_values() -> None:
    assert isinstance(POLICY, Policy)
    assert load_policy(DEFAULT_POLICY_PATH) == POLICY
    critical = POLICY.deadlines[Severity.CRITICAL]
    assert (critical.acknowledge_hours, critical.verify_days, critical.decide_days) == (24, 7, 10)
    assert (critical.plan_days, critical.decision_response_hours) == (21, 24)
    low = POLICY.deadlines[Severity.LOW]
    assert (low.acknowledge_hours, low.verify_days, low.plan_days) == (120, 30, 60)
    assert POLICY.milestones.due_soon_days == 3
    assert POLICY.milestones.default_due_days == 30
    assert POLICY.approvals.closure_required_approvers == 2
    assert POLICY.approvals.closure_approver_roles == (Role.CASE_LEAD, Role.SENIOR_APPROVER)
    assert POLICY.severity.annex_ii_serious_minimum is Severity.HIGH


# score = scale (1-4) + scope (1 person: 1, 2-9: 2, 10-49: 3, 50+: 4) + irremediability (1-4);
# tiers: below 6 low, 6-7 medium, 8-9 high, 10+ critical.
@pytest.mark.parametrize(
    ("scale", "persons", "irremediability", "expected"),
    [
        ("low", 1, "remediable", "low"),  # 1 + 1 + 1 = 3
        ("low", 9, "difficult", "low"),  # 1 + 2 + 2 = 5
        ("low", 10, "difficult", "medium"),  # 1 + 3 + 2 = 6: the 10-person band starts
        ("moderate", 5, "difficult", "medium"),  # 2 + 2 + 2 = 6
        ("high", 1, "very_difficult", "medium"),  # 3 + 1 + 3 = 7
        ("high", 12, "difficult", "high"),  # 3 + 3 + 2 = 8
        ("extreme", 1, "irreversible", "high"),  # 4 + 1 + 4 = 9
        ("moderate", 50, "irreversible", "critical"),  # 2 + 4 + 4 = 10
        ("extreme", 60, "irreversible", "critical"),  # 4 + 4 + 4 = 12
    ],
)
def test_severity_examples(scale: str, persons: int, irremediability: str, expected: str) -> None:
    assert severity(scale, persons, irremediability) == expected


def test_minors_raise_a_tier_capped_at_critical() -> None:
    assert severity("low", 1, "remediable", minors=True) is Severity.MEDIUM
    assert severity("high", 12, "difficult", minors=True) is Severity.CRITICAL
    assert severity("extreme", 60, "irreversible", minors=True) is Severity.CRITICAL


def test_serious_annex_ii_sets_a_floor() -> None:
    forced = (AnnexIICategory.FORCED_LABOUR,)
    assert severity("low", 1, "remediable", annex_ii=forced) is Severity.HIGH
    assert severity("extreme", 60, "irreversible", annex_ii=forced) is Severity.CRITICAL
    bribery = (AnnexIICategory.BRIBERY_MISREPRESENTATION,)
    assert severity("low", 1, "remediable", annex_ii=bribery) is Severity.LOW
    # A child in forced labour: floor first, then the minors' raise.
    assert severity("low", 1, "remediable", minors=True, annex_ii=forced) is Severity.CRITICAL


severity_inputs = st.builds(
    SeverityInput,
    scale=st.sampled_from(Scale),
    persons_affected=st.integers(1, 10_000),
    irremediability=st.sampled_from(Irremediability),
    minors_involved=st.booleans(),
    annex_ii=st.lists(st.sampled_from(AnnexIICategory), max_size=3).map(tuple),
)


def rank(inp: SeverityInput) -> int:
    return SEVERITY_RANK[assess_severity(inp, POLICY)]


@given(severity_inputs, st.sampled_from(SCALES), st.sampled_from(SCALES))
def test_severity_is_monotone_in_scale(inp: SeverityInput, a: str, b: str) -> None:
    lo, hi = sorted((a, b), key=SCALES.index)
    assert rank(inp.model_copy(update={"scale": lo})) <= rank(inp.model_copy(update={"scale": hi}))


@given(severity_inputs, st.sampled_from(IRREMEDIABILITIES), st.sampled_from(IRREMEDIABILITIES))
def test_severity_is_monotone_in_irremediability(inp: SeverityInput, a: str, b: str) -> None:
    lo, hi = sorted((a, b), key=IRREMEDIABILITIES.index)
    low = inp.model_copy(update={"irremediability": Irremediability(lo)})
    high = inp.model_copy(update={"irremediability": Irremediability(hi)})
    assert rank(low) <= rank(high)


@given(severity_inputs, st.integers(1, 10_000), st.integers(1, 10_000))
def test_severity_is_monotone_in_persons_affected(inp: SeverityInput, a: int, b: int) -> None:
    fewer = inp.model_copy(update={"persons_affected": min(a, b)})
    more = inp.model_copy(update={"persons_affected": max(a, b)})
    assert rank(fewer) <= rank(more)


@given(severity_inputs)
def test_minors_never_lower_and_annex_ii_floor_holds(inp: SeverityInput) -> None:
    adult = inp.model_copy(update={"minors_involved": False})
    child = inp.model_copy(update={"minors_involved": True})
    assert rank(child) == min(rank(adult) + 1, 3)
    if any(c.is_serious_abuse for c in inp.annex_ii):
        assert rank(inp) >= SEVERITY_RANK["high"]


def test_persons_affected_must_be_at_least_one() -> None:
    with pytest.raises(ValidationError):
        SeverityInput(scale=Scale.LOW, persons_affected=0, irremediability="remediable")


def test_every_involvement_and_severity_has_a_level() -> None:
    for involvement in Involvement:
        for sev in Severity:
            assert isinstance(response_level(involvement, sev, POLICY), ResponseLevel)


def test_response_level_is_monotone_in_severity_and_involvement() -> None:
    order = sorted(Severity, key=SEVERITY_RANK.__getitem__)
    for involvement in Involvement:
        urgencies = [URGENCY[response_level(involvement, s, POLICY)] for s in order]
        assert urgencies == sorted(urgencies), involvement
    for sev in Severity:
        cause, contribute, linked = (
            URGENCY[response_level(Involvement(i), sev, POLICY)]
            for i in ("cause", "contribute", "directly_linked")
        )
        assert cause >= contribute >= linked, sev
    assert response_level(Involvement.CAUSE, Severity.CRITICAL, POLICY) == "level_1"
    assert response_level(Involvement.CONTRIBUTE, Severity.HIGH, POLICY) == "level_1"
    assert response_level(Involvement.DIRECTLY_LINKED, Severity.CRITICAL, POLICY) == "level_1"
    assert response_level(Involvement.DIRECTLY_LINKED, Severity.LOW, POLICY) == "level_3"


@pytest.mark.parametrize(
    ("involvement", "role"),
    [
        ("cause", "provide"),
        ("contribute", "cooperate"),
        ("directly_linked", "use_leverage"),
        ("unknown", "cooperate"),
    ],
)
def test_remedy_role(involvement: str, role: str) -> None:
    assert remedy_role(Involvement(involvement)) is RemedyRole(role)


aware_datetimes = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=9))]),
)


@given(st.sampled_from(Severity), aware_datetimes)
def test_deadlines_are_ordered_utc_and_counted_from_opening(
    sev: Severity, opened_at: datetime
) -> None:
    d = case_deadlines(sev, opened_at, POLICY)
    assert opened_at < d.acknowledge_by < d.verify_by < d.decide_by < d.plan_by
    for due in (d.acknowledge_by, d.verify_by, d.decide_by, d.plan_by):
        assert due.utcoffset() == timedelta(0)
    rules = POLICY.deadlines[sev]
    assert d.acknowledge_by - opened_at == timedelta(hours=rules.acknowledge_hours)
    assert d.plan_by - opened_at == timedelta(days=rules.plan_days)
    due = decision_due(sev, opened_at, POLICY)
    assert due - opened_at == timedelta(hours=rules.decision_response_hours)
    assert due.utcoffset() == timedelta(0)


def test_deadline_examples() -> None:
    opened = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
    d = case_deadlines(Severity.CRITICAL, opened, POLICY)
    assert d.acknowledge_by == datetime(2025, 3, 2, 9, 0, tzinfo=UTC)
    assert d.verify_by == datetime(2025, 3, 8, 9, 0, tzinfo=UTC)
    assert d.decide_by == datetime(2025, 3, 11, 9, 0, tzinfo=UTC)
    assert d.plan_by == datetime(2025, 3, 22, 9, 0, tzinfo=UTC)
    assert decision_due(Severity.MEDIUM, opened, POLICY) == datetime(2025, 3, 4, 9, tzinfo=UTC)


def test_more_severe_cases_never_get_later_deadlines() -> None:
    order = sorted(Severity, key=SEVERITY_RANK.__getitem__)
    opened = datetime(2025, 1, 1, tzinfo=UTC)
    for less, more in itertools.pairwise(order):
        a, b = case_deadlines(less, opened, POLICY), case_deadlines(more, opened, POLICY)
        assert b.acknowledge_by <= a.acknowledge_by and b.plan_by <= a.plan_by


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2025, 3, 1, 9, 0)
    with pytest.raises(ValueError, match="opened_at must be timezone-aware"):
        case_deadlines(Severity.HIGH, naive, POLICY)
    with pytest.raises(ValueError, match="requested_at must be timezone-aware"):
        decision_due(Severity.HIGH, naive, POLICY)


def summary(total: int, verified: int = 0, waived: int = 0, open_: int = 0) -> MilestoneSummary:
    return MilestoneSummary(total=total, verified=verified, waived_with_reason=waived, open=open_)


DONE = summary(3, verified=2, waived=1)


@pytest.mark.parametrize(
    ("closure_type", "milestones", "victim_view", "authorised", "expected"),
    [
        ("resolved_accepted", DONE, True, False, []),
        ("resolved_rejected", DONE, True, False, []),
        ("resolved_accepted", DONE, False, False, ["victim's view"]),
        ("resolved_accepted", summary(3, verified=1, open_=2), True, False, ["2 milestone(s)"]),
        ("resolved_rejected", summary(0), True, False, ["no milestones"]),
        ("resolved_accepted", summary(3, verified=2), True, False, ["neither verified nor"]),
        ("resolved_accepted", summary(0), False, True, ["no milestones", "victim's view"]),
        ("unresolved_authorised", summary(0), False, True, []),
        ("unresolved_authorised", DONE, True, False, ["not authorised"]),
        *[
            (t, summary(0), False, False, [])
            for t in (
                "no_basis",
                "duplicate",
                "consent_withdrawn",
                "inconclusive_no_contact",
                "referred_external",
            )
        ],
    ],
)
def test_closure_check(
    closure_type: str,
    milestones: MilestoneSummary,
    victim_view: bool,
    authorised: bool,
    expected: list[str],
) -> None:
    unmet = closure_check(ClosureType(closure_type), milestones, victim_view, authorised)
    assert len(unmet) == len(expected)
    for sentence, fragment in zip(unmet, expected, strict=True):
        assert fragment in sentence
        assert sentence.endswith(".")


def test_milestone_summary_parts_cannot_exceed_the_total() -> None:
    with pytest.raises(ValidationError):
        summary(2, verified=2, open_=1)


# Broken policy files: each edit of the default text must name the field (and the file).


def write(tmp_path: Path, old: str, new: str) -> Path:
    assert old in DEFAULT_TEXT, f"the default policy no longer contains {old!r}"
    path = tmp_path / "policy.toml"
    path.write_text(DEFAULT_TEXT.replace(old, new, 1), encoding="utf-8")
    return path


def problems(path: Path) -> str:
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    message = str(info.value)
    assert str(path) in message
    assert "errors.pydantic.dev" not in message and "Traceback" not in message
    assert info.value.__suppress_context__  # no chained pydantic internals
    return message


CAUSE_ROW = (
    'cause = { critical = "level_1", high = "level_1", medium = "level_2", low = "level_2" }'
)
UNKNOWN_ROW = CAUSE_ROW.replace("cause", "unknown")
MEDIUM_DEADLINES = """[deadlines.medium]
acknowledge_hours = 120
verify_days = 21
decide_days = 30
plan_days = 45
decision_response_hours = 72
"""
BROKEN = [
    pytest.param(
        "verify_days = 7\n",
        "verfy_days = 7\n",
        ["deadlines.critical.verfy_days: unknown key", "deadlines.critical.verify_days: missing"],
        id="typo-in-key",
    ),
    pytest.param(
        MEDIUM_DEADLINES, "", ["deadlines: missing a section for medium"], id="missing-severity"
    ),
    pytest.param(
        "acknowledge_hours = 24\n",
        "acknowledge_hours = 200\n",
        ["deadlines.critical: deadlines must come in order"],
        id="deadlines-out-of-order",
    ),
    pytest.param(
        "plan_days = 21\n", "plan_days = 0\n", ["deadlines.critical.plan_days"], id="zero-days"
    ),
    pytest.param(
        "medium = 6, high = 8, critical = 10",
        "medium = 6, high = 5, critical = 10",
        ["severity.tier_thresholds: thresholds must be strictly ascending"],
        id="tiers-not-ascending",
    ),
    pytest.param(
        "{ min_persons = 10, points = 3 }",
        "{ min_persons = 1, points = 3 }",
        ["severity.scope_points: min_persons must be strictly ascending"],
        id="scope-not-ascending",
    ),
    pytest.param(
        "{ min_persons = 1, points = 1 }",
        "{ min_persons = 3, points = 1 }",
        ["severity.scope_points: the first band must start at min_persons = 1"],
        id="scope-gap",
    ),
    pytest.param(
        "extreme = 4 }", "extrem = 4 }", ["severity.scale_points.extrem: unknown key"], id="bad-key"
    ),
    pytest.param(
        "low = 1, moderate = 2,",
        "low = 1,",
        ["severity.scale_points: missing an entry for moderate"],
        id="scale-missing",
    ),
    pytest.param(
        "high = 3, extreme",
        "high = 1, extreme",
        ["severity.scale_points: high must not score less than moderate"],
        id="scale-decreasing",
    ),
    pytest.param(
        'annex_ii_serious_minimum = "high"',
        'annex_ii_serious_minimum = "hi"',
        ["severity.annex_ii_serious_minimum: Input should be"],
        id="bad-severity",
    ),
    pytest.param(
        UNKNOWN_ROW, "", ["response_level: missing an entry for unknown"], id="matrix-row-missing"
    ),
    pytest.param(
        CAUSE_ROW,
        CAUSE_ROW.replace('low = "level_2"', 'lo = "level_2"'),
        ["response_level.cause.lo: unknown key (input should be 'low'"],
        id="matrix-cell-typo",
    ),
    pytest.param(
        CAUSE_ROW,
        CAUSE_ROW.replace('medium = "level_2"', 'medium = "level_4"'),
        ["response_level.cause.medium: Input should be"],
        id="matrix-bad-level",
    ),
    pytest.param(
        CAUSE_ROW,
        CAUSE_ROW.replace('medium = "level_2"', 'medium = "level_3"'),
        ["response_level: cause: medium must be at least as urgent as low"],
        id="matrix-not-monotone-in-severity",
    ),
    pytest.param(
        CAUSE_ROW,
        CAUSE_ROW.replace("level_1", "level_2"),
        ["response_level: high: cause must be at least as urgent as contribute"],
        id="matrix-not-monotone-in-involvement",
    ),
    pytest.param(
        "closure_required_approvers = 2",
        "closure_required_approvers = 1",
        ["approvals.closure_required_approvers: Input should be greater than or equal to 2"],
        id="one-approver",
    ),
    pytest.param(
        '"senior_approver"]',
        '"senior_aprover"]',
        ["approvals.closure_approver_roles[1]: Input should be"],
        id="bad-role",
    ),
    pytest.param(
        "[milestones]\n",
        "[milestone]\n",
        ["milestone: unknown key", "milestones: missing"],
        id="section-typo",
    ),
    pytest.param(
        "due_soon_days = 3", "due_soon_days = -3", ["milestones.due_soon_days"], id="negative"
    ),
]


@pytest.mark.parametrize(("old", "new", "expected"), BROKEN)
def test_broken_policy_names_the_field(
    tmp_path: Path, old: str, new: str, expected: list[str]
) -> None:
    message = problems(write(tmp_path, old, new))
    for fragment in expected:
        assert fragment in message


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    text = DEFAULT_TEXT.replace("code_ttl_hours = 72", "code_ttl_hour = 72").replace(
        "due_soon_days = 3", "due_soon_days = 0"
    )
    path.write_text(text, encoding="utf-8")
    message = problems(path)
    assert "approvals.code_ttl_hour: unknown key" in message
    assert "approvals.code_ttl_hours: missing" in message
    assert "milestones.due_soon_days" in message


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    message = problems(write(tmp_path, "due_soon_days = 3", "due_soon_days = = 3"))
    assert "not valid TOML" in message
    assert "line" in message


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    message = problems(tmp_path / "nowhere.toml")
    assert "does not exist" in message


def test_policy_error_survives_pickling(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path / "nowhere.toml")
    copy = pickle.loads(pickle.dumps(info.value))
    assert str(copy) == str(info.value)
    assert copy.problems == info.value.problems
