"""Policy: the operator-editable rules (policy.toml) and the pure functions that apply them.

Severity, response level, deadlines and closure criteria. Time is always passed in, never read
here, and every datetime is timezone-aware UTC. Pure module: standard library and pydantic only.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import Enum, StrEnum
from itertools import pairwise
from pathlib import Path
from typing import Final, Literal, Self, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    field_validator,
    model_validator,
)

from models.enums import (
    AnnexIICategory,
    ClosureType,
    DecisionKind,
    Involvement,
    Irremediability,
    RemedyRole,
    ResponseLevel,
    Role,
    Scale,
    Severity,
)
from models.tomlfile import load_toml

DEFAULT_POLICY_PATH: Final = Path(__file__).with_name("policy.toml")

# Orders the rules rely on; the enums' declaration order is not a promise of rank.
SEVERITY_ORDER: Final = (Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL)
SCALE_ORDER: Final = (Scale.LOW, Scale.MODERATE, Scale.HIGH, Scale.EXTREME)
IRREMEDIABILITY_ORDER: Final = (
    Irremediability.REMEDIABLE,
    Irremediability.DIFFICULT,
    Irremediability.VERY_DIFFICULT,
    Irremediability.IRREVERSIBLE,
)
URGENCY_ORDER: Final = (ResponseLevel.LEVEL_3, ResponseLevel.LEVEL_2, ResponseLevel.LEVEL_1)
# Involvement from most to least responsible (UNGP 19); unknown stands apart.
INVOLVEMENT_ORDER: Final = (Involvement.CAUSE, Involvement.CONTRIBUTE, Involvement.DIRECTLY_LINKED)

_E = TypeVar("_E", bound=Enum)


class PolicyError(Exception):
    """The policy file is missing, not TOML, or breaks a rule; the message lists every problem."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"Policy file {path} cannot be used:\n{lines}")

    def __reduce__(self) -> tuple[type[PolicyError], tuple[Path, list[str]]]:
        # Pickling (e.g. by Prefect) must rebuild the error from its arguments, not its message.
        return (type(self), (self.path, self.problems))


# The rules, as read from policy.toml.


class _Rules(BaseModel):
    # An unknown key is an error, so a typo is never silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _complete(values: dict[_E, int], order: tuple[_E, ...]) -> dict[_E, int]:
    """Check `values` has an entry for every member and never decreases along `order`."""
    missing = [m.value for m in order if m not in values]
    if missing:
        raise ValueError(f"missing an entry for {', '.join(missing)}")
    for lower, higher in pairwise(order):
        if values[higher] < values[lower]:
            raise ValueError(f"{higher.value} must not score less than {lower.value}")
    return values


class ScopeBand(_Rules):
    """Points for a number of affected persons, from `min_persons` upwards."""

    min_persons: PositiveInt
    points: NonNegativeInt


class TierThresholds(_Rules):
    """The lowest total score of each tier above low."""

    medium: int
    high: int
    critical: int

    @model_validator(mode="after")
    def _ascending(self) -> Self:
        if not self.medium < self.high < self.critical:
            raise ValueError("thresholds must be strictly ascending: medium < high < critical")
        return self


class SeverityRules(_Rules):
    """How scale, scope and irremediability add up to a severity tier."""

    scale_points: dict[Scale, NonNegativeInt]
    irremediability_points: dict[Irremediability, NonNegativeInt]
    scope_points: tuple[ScopeBand, ...]
    tier_thresholds: TierThresholds
    minors_raise_tiers: int = Field(ge=0, le=len(SEVERITY_ORDER) - 1)
    annex_ii_serious_minimum: Severity

    @field_validator("scale_points")
    @classmethod
    def _scale_complete(cls, v: dict[Scale, int]) -> dict[Scale, int]:
        return _complete(v, SCALE_ORDER)

    @field_validator("irremediability_points")
    @classmethod
    def _irremediability_complete(cls, v: dict[Irremediability, int]) -> dict[Irremediability, int]:
        return _complete(v, IRREMEDIABILITY_ORDER)

    @field_validator("scope_points")
    @classmethod
    def _scope_ascending(cls, bands: tuple[ScopeBand, ...]) -> tuple[ScopeBand, ...]:
        if not bands or bands[0].min_persons != 1:
            raise ValueError("the first band must start at min_persons = 1")
        for lower, higher in pairwise(bands):
            if higher.min_persons <= lower.min_persons:
                raise ValueError("min_persons must be strictly ascending")
            if higher.points < lower.points:
                raise ValueError("points must not go down as min_persons goes up")
        return bands

    def scope_points_for(self, persons: int) -> int:
        """Return the points of the band `persons` falls into."""
        return [b.points for b in self.scope_points if b.min_persons <= persons][-1]

    def tier_for(self, score: int) -> Severity:
        """Return the tier of a total score."""
        t = self.tier_thresholds
        if score >= t.critical:
            return Severity.CRITICAL
        if score >= t.high:
            return Severity.HIGH
        return Severity.MEDIUM if score >= t.medium else Severity.LOW


class DeadlineRules(_Rules):
    """Deadlines for one severity: hours or days from the case's opening."""

    acknowledge_hours: PositiveInt
    verify_days: PositiveInt
    decide_days: PositiveInt
    plan_days: PositiveInt
    decision_response_hours: PositiveInt

    @model_validator(mode="after")
    def _in_order(self) -> Self:
        if not (
            self.acknowledge_hours < self.verify_days * 24
            and self.verify_days < self.decide_days < self.plan_days
        ):
            raise ValueError("deadlines must come in order: acknowledge < verify < decide < plan")
        return self


class MilestoneRules(_Rules):
    """When milestone reminders and escalations go out."""

    due_soon_days: PositiveInt
    overdue_grace_days: PositiveInt
    escalation_repeat_days: PositiveInt
    default_due_days: PositiveInt


class ApprovalRules(_Rules):
    """Approval codes, links, passkeys, and who may close a case."""

    code_ttl_hours: PositiveInt
    # an approval-page link works this long (a forwarded link is a risk: keep it short)
    link_ttl_hours: PositiveInt = 24
    # failed attempts to decide one request in one name before that name is locked out of it
    max_failed_attempts: PositiveInt = 5
    # decisions that need the approver's passkey on the approval page ("all", or a list of kinds)
    passkey_required_for: Literal["all"] | tuple[DecisionKind, ...] = "all"
    # a person without a passkey: the case lead is told and the decision waits, or the link
    # alone decides (for a trial installation)
    without_passkey: Literal["tell_case_lead", "link_decides"] = "tell_case_lead"
    # how long a passkey enrolment link and its one-time code stay valid
    enrolment_ttl_hours: PositiveInt = 24
    closure_required_approvers: int = Field(ge=2)
    closure_approver_roles: tuple[Role, ...] = Field(min_length=1)

    def needs_passkey(self, kind: DecisionKind) -> bool:
        """Tell whether a decision of this kind needs the approver's passkey on the page."""
        return self.passkey_required_for == "all" or kind in self.passkey_required_for


class ConsentRules(_Rules):
    """What one person's withdrawal of case-handling consent holds (docs/domain.md, Consent)."""

    # False: a withdrawal holds that person's actions and the case goes on for the others, until
    # nobody with consent remains; true: any withdrawal holds the whole case, as long as it stands
    hold_whole_case_on_withdrawal: bool = False


class ReporterRules(_Rules):
    """What a reporter is promised (docs/domain.md, Reporters): an acknowledgement, then feedback.

    Counted from the report's filing. The acknowledgement is due at the earlier of
    `acknowledge_days` and the case severity's `acknowledge_hours` (the same "acknowledge by"
    deadline: the severity's may only make it sooner); feedback within `feedback_days`.
    """

    acknowledge_days: PositiveInt = 7
    feedback_days: PositiveInt = 90
    # the case lead is reminded this many days before a reporter's deadline
    remind_days_before: NonNegativeInt = 2

    @model_validator(mode="after")
    def _in_order(self) -> Self:
        if not self.acknowledge_days < self.feedback_days:
            raise ValueError("acknowledge_days must come before feedback_days")
        if not self.remind_days_before < self.acknowledge_days:
            raise ValueError("remind_days_before must be less than acknowledge_days")
        return self


class RetentionRules(_Rules):
    """How long each category of a closed case's personal data is kept, in days from its closure
    (docs/security.md, Retention and erasure). Past the longest, the case's data key is destroyed
    (crypto-shredding); a shorter category is overwritten in the store when its own period ends.
    """

    identity_days: int = Field(default=1825, ge=1, le=36500)
    contact_days: int = Field(default=365, ge=1, le=36500)
    narrative_days: int = Field(default=1825, ge=1, le=36500)
    messages_days: int = Field(default=730, ge=1, le=36500)
    free_text_days: int = Field(default=1095, ge=1, le=36500)

    def periods(self) -> dict[str, int]:
        """Each category's period in days, by category name (identity, contact, ...)."""
        return {
            "identity": self.identity_days,
            "contact": self.contact_days,
            "narrative": self.narrative_days,
            "messages": self.messages_days,
            "free_text": self.free_text_days,
        }

    @property
    def longest_days(self) -> int:
        """The longest period: when it ends the case's data key is destroyed."""
        return max(self.periods().values())


class Policy(_Rules):
    """The whole policy file."""

    severity: SeverityRules
    response_level: dict[Involvement, dict[Severity, ResponseLevel]]
    deadlines: dict[Severity, DeadlineRules]
    milestones: MilestoneRules
    approvals: ApprovalRules
    consent: ConsentRules = ConsentRules()
    reporters: ReporterRules = ReporterRules()
    retention: RetentionRules = RetentionRules()

    @field_validator("response_level")
    @classmethod
    def _matrix_complete_and_monotone(
        cls, matrix: dict[Involvement, dict[Severity, ResponseLevel]]
    ) -> dict[Involvement, dict[Severity, ResponseLevel]]:
        missing = [i.value for i in Involvement if i not in matrix]
        missing += [
            f"{i.value}.{s.value}" for i, row in matrix.items() for s in Severity if s not in row
        ]
        if missing:
            raise ValueError(f"missing an entry for {', '.join(missing)}")

        def urgency(i: Involvement, s: Severity) -> int:
            return URGENCY_ORDER.index(matrix[i][s])

        for i in Involvement:
            for lower, higher in pairwise(SEVERITY_ORDER):
                if urgency(i, higher) < urgency(i, lower):
                    raise ValueError(
                        f"{i.value}: {higher.value} must be at least as urgent as {lower.value}"
                    )
        for s in SEVERITY_ORDER:
            for more, less in pairwise(INVOLVEMENT_ORDER):
                if urgency(more, s) < urgency(less, s):
                    raise ValueError(
                        f"{s.value}: {more.value} must be at least as urgent as {less.value}"
                    )
        return matrix

    @field_validator("deadlines")
    @classmethod
    def _deadlines_complete(
        cls, deadlines: dict[Severity, DeadlineRules]
    ) -> dict[Severity, DeadlineRules]:
        missing = [s.value for s in Severity if s not in deadlines]
        if missing:
            raise ValueError(f"missing a section for {', '.join(missing)}")
        return deadlines


def load_policy(path: Path | None = None) -> Policy:
    """Read and check the policy file (the bundled policy.toml by default)."""
    return load_toml(DEFAULT_POLICY_PATH if path is None else path, Policy, PolicyError)


# The pure functions that apply the rules.


class SeverityInput(BaseModel, frozen=True):
    """What severity is judged on."""

    scale: Scale
    persons_affected: int = Field(ge=1)
    irremediability: Irremediability
    minors_involved: bool = False
    annex_ii: tuple[AnnexIICategory, ...] = ()


def assess_severity(inp: SeverityInput, policy: Policy) -> Severity:
    """Return the severity tier of a harm under `policy`."""
    rules = policy.severity
    score = (
        rules.scale_points[inp.scale]
        + rules.scope_points_for(inp.persons_affected)
        + rules.irremediability_points[inp.irremediability]
    )
    rank = SEVERITY_ORDER.index(rules.tier_for(score))
    if any(category.is_serious_abuse for category in inp.annex_ii):
        rank = max(rank, SEVERITY_ORDER.index(rules.annex_ii_serious_minimum))
    # Minors raise the tier after the Annex II floor, so a child always counts for more.
    if inp.minors_involved:
        rank += rules.minors_raise_tiers
    return SEVERITY_ORDER[min(rank, len(SEVERITY_ORDER) - 1)]


def response_level(involvement: Involvement, severity: Severity, policy: Policy) -> ResponseLevel:
    """Return how urgent and senior the response must be."""
    return policy.response_level[involvement][severity]


_REMEDY_ROLES: Final = {
    Involvement.CAUSE: RemedyRole.PROVIDE,
    Involvement.CONTRIBUTE: RemedyRole.COOPERATE,
    Involvement.DIRECTLY_LINKED: RemedyRole.USE_LEVERAGE,
    # Until involvement is known, take part in remedy rather than only push others to act.
    Involvement.UNKNOWN: RemedyRole.COOPERATE,
}


def remedy_role(involvement: Involvement) -> RemedyRole:
    """Return what the company's involvement obliges it to do about remedy (UNGP 22)."""
    return _REMEDY_ROLES[involvement]


class Deadlines(BaseModel, frozen=True):
    """When each stage of a case is due (UTC)."""

    acknowledge_by: AwareDatetime
    verify_by: AwareDatetime
    decide_by: AwareDatetime
    plan_by: AwareDatetime


def _as_utc(moment: datetime, name: str) -> datetime:
    """Return `moment` in UTC, refusing a naive datetime (its zone would be a guess)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return moment.astimezone(UTC)


def case_deadlines(severity: Severity, opened_at: datetime, policy: Policy) -> Deadlines:
    """Return the case's deadlines, counted from when it was opened."""
    start = _as_utc(opened_at, "opened_at")
    rules = policy.deadlines[severity]
    return Deadlines(
        acknowledge_by=start + timedelta(hours=rules.acknowledge_hours),
        verify_by=start + timedelta(days=rules.verify_days),
        decide_by=start + timedelta(days=rules.decide_days),
        plan_by=start + timedelta(days=rules.plan_days),
    )


class ReporterDeadlines(BaseModel, frozen=True):
    """When a reporter must have been acknowledged and given feedback (UTC)."""

    acknowledge_by: AwareDatetime
    feedback_by: AwareDatetime


def reporter_deadlines(
    filed_at: datetime, severity: Severity | None, policy: Policy
) -> ReporterDeadlines:
    """Return a report's deadlines, counted from its filing.

    The acknowledgement is due after `reporters.acknowledge_days`, or sooner if the case's
    severity asks for it (`acknowledge_hours`); feedback after `reporters.feedback_days`.
    """
    start = _as_utc(filed_at, "filed_at")
    rules = policy.reporters
    acknowledge = timedelta(days=rules.acknowledge_days)
    if severity is not None:
        by_severity = timedelta(hours=policy.deadlines[severity].acknowledge_hours)
        acknowledge = min(acknowledge, by_severity)
    return ReporterDeadlines(
        acknowledge_by=start + acknowledge, feedback_by=start + timedelta(days=rules.feedback_days)
    )


def decision_due(severity: Severity, requested_at: datetime, policy: Policy) -> datetime:
    """Return when an approver must have answered a decision request."""
    start = _as_utc(requested_at, "requested_at")
    return start + timedelta(hours=policy.deadlines[severity].decision_response_hours)


class MilestoneSummary(BaseModel, frozen=True):
    """Counts of the milestones that count towards closure (leave cancelled ones out)."""

    total: NonNegativeInt
    verified: NonNegativeInt
    waived_with_reason: NonNegativeInt
    open: NonNegativeInt

    @model_validator(mode="after")
    def _parts_fit(self) -> Self:
        if self.verified + self.waived_with_reason + self.open > self.total:
            raise ValueError("verified, waived and open milestones cannot exceed the total")
        return self


_RESOLVED: Final = frozenset({ClosureType.RESOLVED_ACCEPTED, ClosureType.RESOLVED_REJECTED})


def closure_check(
    closure_type: ClosureType,
    milestones: MilestoneSummary,
    victim_view_recorded: bool,
    unresolved_authorised: bool,
) -> list[str]:
    """Return the unmet closure criteria as sentences; an empty list means they are met."""
    if closure_type is ClosureType.UNRESOLVED_AUTHORISED:
        return [] if unresolved_authorised else ["Closing the case unresolved is not authorised."]
    if closure_type not in _RESOLVED:
        # No basis, duplicate, withdrawal, no contact, referral: the decision recorded the reason.
        return []
    unmet = []
    if milestones.total == 0:
        unmet.append("The plan has no milestones, so delivery of the remedy cannot be shown.")
    if milestones.open:
        unmet.append(f"{milestones.open} milestone(s) still open: verify or waive each one.")
    unsettled = (
        milestones.total - milestones.verified - milestones.waived_with_reason - milestones.open
    )
    if unsettled:
        unmet.append(f"{unsettled} milestone(s) neither verified nor waived with a reason.")
    if not victim_view_recorded:
        # Accepted or rejected, the victim's own verdict on the outcome must be on file.
        unmet.append("The victim's view of the outcome is not recorded.")
    return unmet


# Consent is each person's own.


def case_handling_active(persons: int, withdrawn: int, consent: ConsentRules) -> bool:
    """Tell whether a case may work: someone's case-handling consent stands (or, if the policy
    holds the whole case on any withdrawal, nobody's stands withdrawn).

    `persons` counts the case's affected persons, `withdrawn` those whose case-handling consent
    stands withdrawn. A case with no affected person on file is not held by consent.
    """
    if withdrawn == 0:
        return True
    if consent.hold_whole_case_on_withdrawal:
        return False
    return withdrawn < persons


class PersonOutcome(StrEnum):
    """How the case ended for one affected person, as the closure records it."""

    WITHDREW_CONSENT = "withdrew_consent"  # case-handling consent stood withdrawn at closure
    REMEDIED = "remedied"  # every action for them settled, at least one verified
    PARTLY_REMEDIED = "partly_remedied"  # some verified, some left undone or waived
    NOT_REMEDIED = "not_remedied"  # actions for them, none verified
    NO_PERSONAL_ACTIONS = "no_personal_actions"  # only the case's own actions (or no plan)


def person_outcome(*, withdrawn: bool, verified: int, waived: int, unsettled: int) -> PersonOutcome:
    """Return one person's outcome from their consent and the counts of their own actions."""
    if withdrawn:
        return PersonOutcome.WITHDREW_CONSENT
    if verified + waived + unsettled == 0:
        return PersonOutcome.NO_PERSONAL_ACTIONS
    if verified == 0:
        return PersonOutcome.NOT_REMEDIED
    if waived or unsettled:
        return PersonOutcome.PARTLY_REMEDIED
    return PersonOutcome.REMEDIED
