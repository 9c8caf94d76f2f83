"""Plan templates: the operator-editable actions (plan_templates.toml) and the draft they produce.

Step 3 drafts a remediation action plan from a case's facts: the ILO indicators found, the
affected persons (pseudonymous), the company's involvement and any Annex II category. The draft is
a proposal for the victims and the case lead to change, so revising it is a pure function too.
Time is always passed in, never read here. Pure module: standard library, pydantic and models only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    field_validator,
    model_validator,
)

from models.enums import (
    ActionKind,
    AnnexIICategory,
    AssistanceCategory,
    CorrectiveAction,
    IloIndicator,
    Involvement,
    OwedKind,
    RemedyForm,
    Role,
    Severity,
)
from models.iso3166 import is_country_code
from models.policy import Policy
from models.tomlfile import load_toml

DEFAULT_PLAN_TEMPLATES_PATH: Final = Path(__file__).with_name("plan_templates.toml")

# The column limits of plan_action (models.tables.PlanAction) and affected_person.pseudonym.
KEY_LIMIT: Final = 60
PSEUDONYM_LIMIT: Final = 20
TITLE_LIMIT: Final = 200
# A per-person action appends "-<pseudonym>" to the key and " (<pseudonym>)" to the title.
TEMPLATE_KEY_LIMIT: Final = KEY_LIMIT - 1 - PSEUDONYM_LIMIT
TEMPLATE_TITLE_LIMIT: Final = TITLE_LIMIT - 3 - PSEUDONYM_LIMIT
MAX_DUE_DAYS: Final = 365

CATEGORIES: Final[Mapping[ActionKind, type[StrEnum]]] = {
    ActionKind.REMEDY_FORM: RemedyForm,
    ActionKind.ASSISTANCE: AssistanceCategory,
    ActionKind.CORRECTIVE_ACTION: CorrectiveAction,
}

_SLUG: Final = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_PSEUDONYM: Final = re.compile(r"[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*")


class PlanTemplateError(Exception):
    """The template file is missing, not TOML, or breaks a rule; the message lists every problem."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"Plan template file {path} cannot be used:\n{lines}")

    def __reduce__(self) -> tuple[type[PlanTemplateError], tuple[Path, list[str]]]:
        # Pickling (e.g. by Prefect) must rebuild the error from its arguments, not its message.
        return (type(self), (self.path, self.problems))


class PlanRevisionError(ValueError):
    """A plan revision removes an unknown action or would leave two actions with one key."""


def _slug(v: str) -> str:
    if not _SLUG.fullmatch(v):
        raise ValueError("must be lower-case letters and digits joined by single hyphens")
    return v


def _no_control(v: str) -> str:
    if any(ord(c) < 32 for c in v):
        raise ValueError("must be a single line without control characters")
    return v


def _country(v: str) -> str:
    if not is_country_code(v):
        raise ValueError("must be an ISO 3166-1 alpha-2 country code such as 'CD' or 'PE'")
    return v


def _pseudonym(v: str) -> str:
    if not _PSEUDONYM.fullmatch(v):
        raise ValueError("must be letters and digits joined by single hyphens, such as 'P-01'")
    return v


def _category_of(kind: ActionKind, category: str) -> str:
    """Return `category` if it is one of `kind`'s categories, else raise naming the valid ones."""
    valid = [c.value for c in CATEGORIES[kind]]
    if category not in valid:
        raise ValueError(
            f"{category!r} is not a category of kind {kind.value}; use one of {', '.join(valid)}"
        )
    return category


def _only_true(v: bool | None) -> bool | None:
    if v is False:
        raise ValueError("only true is allowed; leave the key out to drop the condition")
    return v


# The length limits come before the validators, so pydantic words them as characters.
TemplateKey = Annotated[str, Field(max_length=TEMPLATE_KEY_LIMIT), AfterValidator(_slug)]
ActionKey = Annotated[str, Field(max_length=KEY_LIMIT), AfterValidator(_slug)]
TemplateTitle = Annotated[
    str, Field(min_length=1, max_length=TEMPLATE_TITLE_LIMIT), AfterValidator(_no_control)
]
Title = Annotated[str, Field(min_length=1, max_length=TITLE_LIMIT), AfterValidator(_no_control)]
Verification = Annotated[str, Field(min_length=1, max_length=300), AfterValidator(_no_control)]
Consequence = Annotated[str, Field(min_length=1, max_length=500), AfterValidator(_no_control)]
CountryCode = Annotated[str, AfterValidator(_country)]
Pseudonym = Annotated[
    str, Field(min_length=1, max_length=PSEUDONYM_LIMIT), AfterValidator(_pseudonym)
]
TrueOnly = Annotated[StrictBool | None, AfterValidator(_only_true)]


# The facts a draft is made from: pseudonyms and enums only, never identities.


class PersonFacts(BaseModel, frozen=True, extra="forbid"):
    """What a draft needs to know about one affected person."""

    pseudonym: Pseudonym
    is_minor: bool
    age_uncertain: bool
    nationality: CountryCode | None = None

    @property
    def presumed_minor(self) -> bool:
        """Tell whether the person is treated as a child (uncertain age counts as a minor)."""
        return self.is_minor or self.age_uncertain


class PlanFacts(BaseModel, frozen=True, extra="forbid"):
    """What a draft needs to know about the case."""

    country: CountryCode
    indicators: frozenset[IloIndicator]
    persons: tuple[PersonFacts, ...]
    involvement: Involvement
    severity: Severity
    annex_ii: frozenset[AnnexIICategory] = frozenset()
    # What the remedy ledger records as owed to any person of the case (docs/domain.md, The
    # remedy ledger): the financial actions are drafted from these facts, not from an indicator.
    owed: frozenset[OwedKind] = frozenset()

    @field_validator("persons")
    @classmethod
    def _pseudonyms_unique(cls, persons: tuple[PersonFacts, ...]) -> tuple[PersonFacts, ...]:
        # Per-person keys use the pseudonym in lower case, so "P-01" and "p-01" would clash.
        seen: set[str] = set()
        for p in persons:
            folded = p.pseudonym.lower()
            if folded in seen:
                raise ValueError(f"pseudonym {p.pseudonym!r} is given twice (case ignored)")
            seen.add(folded)
        return persons

    def is_foreign(self, person: PersonFacts) -> bool:
        """Tell whether `person`'s nationality is known and differs from the case country."""
        return person.nationality is not None and person.nationality != self.country


# The templates, as read from plan_templates.toml.


class _Template(BaseModel):
    # An unknown key is an error, so a typo is never silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Conditions(_Template):
    """When a template applies: every condition given must hold; none given means always."""

    indicators_any: tuple[IloIndicator, ...] | None = None
    involvement_any: tuple[Involvement, ...] | None = None
    owed_any: tuple[OwedKind, ...] | None = None
    annex_ii_serious: TrueOnly = None
    # Person conditions: they must hold for one and the same person.
    minors: TrueOnly = None
    adults: TrueOnly = None
    foreign_nationals: TrueOnly = None

    @field_validator("indicators_any", "involvement_any", "owed_any")
    @classmethod
    def _not_empty(cls, values: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
        # Checked after the items, so a misspelt item is not also reported as an empty list.
        if values is not None and not values:
            raise ValueError("an empty list never matches; leave the key out to drop the condition")
        return values

    @model_validator(mode="after")
    def _satisfiable(self) -> Self:
        if self.minors and self.adults:
            raise ValueError("minors and adults exclude each other: no person can match both")
        return self

    @property
    def always(self) -> bool:
        """Tell whether no condition is given."""
        return all(value is None for value in self.model_dump().values())

    @property
    def about_persons(self) -> bool:
        """Tell whether a person condition is given."""
        return bool(self.minors or self.adults or self.foreign_nationals)

    def case_holds(self, facts: PlanFacts) -> bool:
        """Tell whether the case-level conditions hold (the person conditions are not checked)."""
        if self.indicators_any is not None and facts.indicators.isdisjoint(self.indicators_any):
            return False
        if self.involvement_any is not None and facts.involvement not in self.involvement_any:
            return False
        if self.owed_any is not None and facts.owed.isdisjoint(self.owed_any):
            return False
        return not (self.annex_ii_serious and not any(c.is_serious_abuse for c in facts.annex_ii))

    def person_holds(self, person: PersonFacts, facts: PlanFacts) -> bool:
        """Tell whether `person` meets every person condition."""
        if self.minors and not person.presumed_minor:
            return False
        if self.adults and person.presumed_minor:
            return False
        return not (self.foreign_nationals and not facts.is_foreign(person))


class ActionTemplate(_Template):
    """One action the draft may propose."""

    key: TemplateKey
    kind: ActionKind
    # Checked against `kind` below; stored as the plain value, as in plan_action.category.
    category: str
    title: TemplateTitle
    owner_role: Role
    due_days: int | None = Field(default=None, ge=1, le=MAX_DUE_DAYS)
    verification_method: Verification
    consequence_if_missed: Consequence | None = None
    per_person: StrictBool = False
    when: Conditions = Conditions()

    @field_validator("category")
    @classmethod
    def _category_of_kind(cls, category: str, info: ValidationInfo) -> str:
        kind = info.data.get("kind")
        # A broken kind is reported on its own; there is nothing to check the category against.
        return category if kind is None else _category_of(kind, category)

    @field_validator("owner_role")
    @classmethod
    def _owner_acts(cls, role: Role) -> Role:
        if role is Role.OBSERVER:
            raise ValueError("an observer is informed, never owns an action")
        return role

    @property
    def always(self) -> bool:
        """Tell whether the template applies to every case: no conditions, not per person."""
        return self.when.always and not self.per_person


class PlanTemplates(_Template):
    """The whole template file: the actions in the order a draft lists them."""

    action: tuple[ActionTemplate, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _keys_and_fallback(self) -> Self:
        problems = []
        first: dict[str, int] = {}
        for i, t in enumerate(self.action):
            if t.key in first:
                problems.append(
                    f"action[{i}].key: {t.key!r} is already the key of action[{first[t.key]}]"
                )
            else:
                first[t.key] = i
        # Per-person keys are "<key>-<pseudonym>": no other key may take that shape.
        for i, t in enumerate(self.action):
            for j, other in enumerate(self.action):
                if other.per_person and i != j and t.key.startswith(f"{other.key}-"):
                    problems.append(
                        f"action[{i}].key: {t.key!r} begins with {other.key!r}-, the key of the "
                        f"per-person action[{j}], so their action keys could clash"
                    )
        if not any(t.always for t in self.action):
            problems.append(
                "action: no template applies to every case; keep at least one without `when` "
                "and per_person (e.g. safety planning), so that a plan is never empty"
            )
        if problems:
            # One problem a line: load_plan_templates lists each of them separately.
            raise ValueError("\n".join(problems))
        return self


def load_plan_templates(path: Path | None = None) -> PlanTemplates:
    """Read and check the plan template file (the bundled plan_templates.toml by default)."""
    path = DEFAULT_PLAN_TEMPLATES_PATH if path is None else path
    return load_toml(path, PlanTemplates, PlanTemplateError)


# The draft.


class ActionDraft(BaseModel, frozen=True, extra="forbid"):
    """A proposed plan action: what, for whom (pseudonym), who owns it, by when, how verified."""

    key: ActionKey
    kind: ActionKind
    category: str = Field(max_length=40)
    title: Title
    owner_role: Role
    due_on: date
    verification_method: Verification
    consequence_if_missed: Consequence | None = None
    person: Pseudonym | None = None

    @field_validator("category")
    @classmethod
    def _category_of_kind(cls, category: str, info: ValidationInfo) -> str:
        kind = info.data.get("kind")
        return category if kind is None else _category_of(kind, category)


def _natural(pseudonym: str) -> tuple[tuple[str | int, ...], str]:
    """Sort key putting "P-2" before "P-10"; the pseudonym itself breaks ties."""
    parts = re.split(r"(\d+)", pseudonym.lower())
    # Digits sit at the odd positions of the split, so like is always compared with like.
    return (tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), pseudonym)


def _draft(template: ActionTemplate, person: PersonFacts | None, due_on: date) -> ActionDraft:
    key, title = template.key, template.title
    if person is not None:
        key = f"{key}-{person.pseudonym.lower()}"
        title = f"{title} ({person.pseudonym})"
    return ActionDraft(
        key=key,
        kind=template.kind,
        category=template.category,
        title=title,
        owner_role=template.owner_role,
        due_on=due_on,
        verification_method=template.verification_method,
        consequence_if_missed=template.consequence_if_missed,
        person=None if person is None else person.pseudonym,
    )


def draft_actions(
    facts: PlanFacts, templates: PlanTemplates, *, today: date, policy: Policy
) -> list[ActionDraft]:
    """Return the actions the templates propose for a case, in template order."""
    if isinstance(today, datetime):
        # A datetime would carry a time (and maybe a zone) into a due date; the caller decides.
        raise TypeError("today must be a date, not a datetime")
    persons = sorted(facts.persons, key=lambda p: _natural(p.pseudonym))
    drafts: list[ActionDraft] = []
    for template in templates.action:
        when = template.when
        if not when.case_holds(facts):
            continue
        days = template.due_days or policy.milestones.default_due_days
        due_on = today + timedelta(days=days)
        matching = [p for p in persons if when.person_holds(p, facts)]
        if template.per_person:
            drafts += [_draft(template, p, due_on) for p in matching]
        elif matching or not when.about_persons:
            drafts.append(_draft(template, None, due_on))
    return drafts


def revise_actions(
    current: list[ActionDraft], *, remove: Iterable[str], add: Iterable[ActionDraft]
) -> list[ActionDraft]:
    """Return the next version's actions: `current` without `remove`, then `add`, in order."""
    removing, adding = list(remove), list(add)
    problems = []
    keys = [a.key for a in current]
    problems += [f"{k!r} appears twice in the current plan" for k in _twice(keys)]
    problems += [f"{k!r} is listed twice for removal" for k in _twice(removing)]
    problems += [f"cannot remove {k!r}: no such action" for k in removing if k not in keys]
    removed = set(removing)
    kept = [a for a in current if a.key not in removed]
    kept_keys = {a.key for a in kept}
    problems += [f"{k!r} is added twice" for k in _twice([a.key for a in adding])]
    problems += [
        f"cannot add {a.key!r}: the plan already has it (remove it first)"
        for a in adding
        if a.key in kept_keys
    ]
    if not problems and not kept and not adding:
        problems.append("a plan needs at least one action")
    if problems:
        raise PlanRevisionError("; ".join(problems))
    return kept + adding


def _twice(keys: list[str]) -> list[str]:
    """Return the keys that occur more than once, each once, in first-seen order."""
    seen: set[str] = set()
    repeated: dict[str, None] = {}
    for k in keys:
        if k in seen:
            repeated[k] = None
        seen.add(k)
    return list(repeated)
