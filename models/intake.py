"""Input schemas: an incoming report (intake) and the operator's stakeholder directory.

Every field is bounded; unknown fields are refused; free text is data and is never evaluated.
Identifying fields (names, contacts, documents) are hidden from repr and from error messages.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from models.enums import (
    AgeBand,
    Channel,
    ChatKind,
    IloIndicator,
    Locale,
    Mineral,
    OrganisationType,
    OwedKind,
    Role,
    Sex,
    SourceType,
)
from models.iso3166 import is_country_code
from models.iso4217 import parse_amount

DESCRIPTION_LIMIT = 20_000
NOTE_LIMIT = 2_000


def _country(v: str) -> str:
    if not is_country_code(v):
        raise ValueError("must be an ISO 3166-1 alpha-2 country code such as 'CD' or 'PE'")
    return v


def _language(v: str) -> str:
    if not re.fullmatch(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}", v):
        raise ValueError("must be a language tag such as 'fr', 'sw' or 'es-PE'")
    return v


def _no_nul(v: str) -> str:
    if "\x00" in v:
        raise ValueError("contains a NUL character")
    return v


def _slug(v: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", v):
        raise ValueError("must be lower-case letters, digits, '.', '_' or '-' (at most 64)")
    return v


def _os_user(v: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._@-]{0,63}", v):
        raise ValueError("must be an operating-system user name such as 'lena' (at most 64)")
    return v


def _acts_for(v: str) -> str:
    return v if v == ANYONE else _slug(v)


CountryCode = Annotated[str, AfterValidator(_country)]
LanguageTag = Annotated[str, Field(max_length=35), AfterValidator(_language)]
Key = Annotated[str, AfterValidator(_slug)]
OsUser = Annotated[str, AfterValidator(_os_user)]
# whom a stakeholder may name on the command line (--by, --agreed-by): keys, or "*" for anyone
ActsFor = Annotated[str, AfterValidator(_acts_for)]
ANYONE = "*"


# Bounded free-text fields (stripped, no NUL characters): the limits are part of the contract.
Text40 = Annotated[str, Field(max_length=40), AfterValidator(_no_nul)]
Text60 = Annotated[str, Field(max_length=60), AfterValidator(_no_nul)]
Text100 = Annotated[str, Field(max_length=100), AfterValidator(_no_nul)]
Text200 = Annotated[str, Field(max_length=200), AfterValidator(_no_nul)]
Text300 = Annotated[str, Field(max_length=300), AfterValidator(_no_nul)]
Note = Annotated[str, Field(max_length=NOTE_LIMIT), AfterValidator(_no_nul)]
Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_nul)]
Relation = Annotated[str, Field(min_length=1, max_length=40), AfterValidator(_no_nul)]
Description = Annotated[
    str, Field(min_length=1, max_length=DESCRIPTION_LIMIT), AfterValidator(_no_nul)
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


class _Hidden(_Strict):
    """A model holding identifying data: never shown by repr or str."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<hidden>)"

    __str__ = __repr__


class Identity(_Hidden):
    """Identifying data of an affected person; stored only encrypted."""

    name: Text200 | None = None
    aliases: list[Text200] = Field(default_factory=list, max_length=10)
    contact: Text300 | None = None
    date_of_birth: date | None = None
    document_numbers: list[Text60] = Field(default_factory=list, max_length=10)
    notes: Note | None = None


class Reporter(_Hidden):
    """Who reported, when known; stored only encrypted."""

    name: Text200 | None = None
    contact: Text300 | None = None
    relation: Text100 | None = None


class Location(_Strict):
    country: CountryCode
    site: Text200 | None = None


class OrganisationRef(_Strict):
    """An organisation the report names; matched to the directory by key, else by name."""

    key: Key | None = None
    name: Name
    type: OrganisationType
    country: CountryCode | None = None
    relation: Relation
    tier: int | None = Field(default=None, ge=0, le=10)


class PersonIn(_Strict):
    """An affected person as reported: pseudonymous facts plus an optional encrypted identity."""

    age_band: AgeBand = AgeBand.UNKNOWN
    minor: bool | None = None
    age_uncertain: bool = False
    sex: Sex = Sex.UNKNOWN
    nationality: CountryCode | None = None
    languages: list[LanguageTag] = Field(default_factory=list, max_length=10)
    identity: Identity | None = None

    @model_validator(mode="after")
    def _minor_consistent(self) -> PersonIn:
        if self.minor is False and self.age_band.is_minor:
            raise ValueError(f"minor is false but age_band {self.age_band.value} is under 18")
        return self

    @property
    def is_minor(self) -> bool:
        return bool(self.minor) or self.age_band.is_minor


class OwedIn(_Strict):
    """An amount owed as reported: to each person named (none named: to every person), exact.

    The amount is a string or a number ("1500.00", 1500); a currency's decimals are checked
    (docs/domain.md, The remedy ledger).
    """

    kind: OwedKind
    currency: Annotated[str, Field(min_length=3, max_length=3)]
    amount: Decimal
    pseudonyms: list[Annotated[str, Field(pattern=r"^P-\d{2,4}$")]] | None = Field(
        default=None, min_length=1, max_length=500
    )

    @model_validator(mode="before")
    @classmethod
    def _exact(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "amount" not in data or "currency" not in data:
            return data
        raw, currency = data["amount"], data["currency"]
        if isinstance(raw, float):
            raw = repr(raw)  # YAML and JSON numbers arrive as floats: their shortest exact text
        if not isinstance(currency, str):
            return data
        return {**data, "amount": parse_amount(raw, currency), "currency": currency.upper()}


class ReportIn(_Strict):
    """An incoming allegation, from any channel."""

    received_at: AwareDatetime | None = None
    source_type: SourceType
    channel: Channel
    anonymous: bool = False
    language: LanguageTag
    occurred_on: date | None = None
    location: Location
    mineral: Mineral
    organisations: list[OrganisationRef] = Field(default_factory=list, max_length=50)
    description: Description = Field(repr=False)
    reporter: Reporter | None = None
    affected_persons: list[PersonIn] = Field(default_factory=list, max_length=500)
    persons_reported: int | None = Field(default=None, ge=0, le=1_000_000)
    indicators: list[IloIndicator] = Field(default_factory=list, max_length=11)
    # what the persons are owed (fees, wages...), by the pseudonyms intake gives: P-01 is the
    # first of affected_persons
    owed: list[OwedIn] = Field(default_factory=list, max_length=50)

    @field_validator("received_at")
    @classmethod
    def _received_not_future(cls, v: datetime | None, info: ValidationInfo) -> datetime | None:
        if v is not None and v > _now(info):
            raise ValueError("is in the future")
        return v

    @field_validator("occurred_on")
    @classmethod
    def _occurred_not_future(cls, v: date | None, info: ValidationInfo) -> date | None:
        if v is not None and v > _now(info).date():
            raise ValueError("is in the future")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ReportIn:
        if self.anonymous and self.reporter and (self.reporter.name or self.reporter.contact):
            raise ValueError("an anonymous report cannot carry the reporter's name or contact")
        if self.occurred_on and self.received_at and self.occurred_on > self.received_at.date():
            raise ValueError("occurred_on is after received_at")
        if self.persons_reported is not None and self.persons_reported < len(self.affected_persons):
            raise ValueError("persons_reported is smaller than the number of affected_persons")
        self._owed_consistent()
        return self

    def _owed_consistent(self) -> None:
        listed = [f"P-{n:02d}" for n in range(1, len(self.affected_persons) + 1)]
        if self.owed and not listed:
            raise ValueError("owed amounts need the affected_persons they are owed to")
        seen: set[tuple[str, OwedKind, str]] = set()
        for n, item in enumerate(self.owed):
            unknown = [p for p in item.pseudonyms or [] if p not in listed]
            if unknown:
                raise ValueError(
                    f"owed[{n}] names {', '.join(unknown[:5])}: the report's persons are "
                    f"{listed[0]} to {listed[-1]}"
                )
            for p in item.pseudonyms or listed:
                if (p, item.kind, item.currency) in seen:
                    raise ValueError(
                        f"owed[{n}]: {p} is owed {item.kind.value} in {item.currency} twice"
                    )
                seen.add((p, item.kind, item.currency))

    @property
    def persons_affected(self) -> int:
        return max(self.persons_reported or 0, len(self.affected_persons), 1)

    @property
    def minors_involved(self) -> bool:
        """True if any person is a minor or of uncertain age (minority is presumed)."""
        return any(p.is_minor or p.age_uncertain for p in self.affected_persons)

    def canonical_bytes(self) -> bytes:
        """Return the report's content in one canonical form, for duplicate detection."""
        # reports without amounts keep the form (and hash) they had before amounts existed
        data = self.model_dump(
            mode="json", exclude={"received_at"} | (set() if self.owed else {"owed"})
        )
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _now(info: ValidationInfo) -> datetime:
    ctx = info.context or {}
    now = ctx.get("now")
    return now if isinstance(now, datetime) else datetime.now(UTC)


class OrganisationIn(_Strict):
    key: Key
    name: Name
    type: OrganisationType
    country: CountryCode | None = None
    audit_status: Text40 | None = None
    external_ids: dict[Key, Text100] = Field(default_factory=dict, max_length=10)


def _secret_ref(v: str) -> str:
    # a Prefect Secret block is readable by every Prefect API client: no longer a place for it
    if v.startswith("block:"):
        raise ValueError(
            "Prefect Secret blocks are no longer read (any Prefect API client can read them): "
            "write the URL to REMEDY_HOME/secrets/<name> (mode 0600) and use file:<name>"
        )
    if not re.fullmatch(r"env:[A-Z][A-Z0-9_]*|file:[a-z0-9][a-z0-9_-]*", v):
        raise ValueError(
            "must be env:NAME (an environment variable) or file:name (a file in "
            "REMEDY_HOME/secrets readable by its owner only)"
        )
    return v


class ChatIn(_Strict):
    kind: ChatKind
    address: Text200 | None = None
    secret_ref: Annotated[str, Field(max_length=200), AfterValidator(_secret_ref)]


class StakeholderIn(_Strict):
    key: Key
    display_name: Name
    organisation: Key | None = None
    locale: Locale = Locale.EN
    email: Annotated[str, Field(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")] | None = None
    chat: ChatIn | None = None
    roles: list[Role] = Field(default_factory=list, max_length=8)
    active: bool = True
    # the operating-system accounts that are this person on the command line
    os_users: list[OsUser] = Field(default_factory=list, max_length=20)
    acts_for: list[ActsFor] = Field(default_factory=list, max_length=200)


class DirectoryIn(_Strict):
    """The operator's directory of organisations and stakeholders (examples/stakeholders.yaml)."""

    organisations: list[OrganisationIn] = Field(default_factory=list, max_length=10_000)
    stakeholders: list[StakeholderIn] = Field(default_factory=list, max_length=10_000)

    @model_validator(mode="after")
    def _references(self) -> DirectoryIn:
        orgs = {o.key for o in self.organisations}
        if len(orgs) != len(self.organisations):
            raise ValueError("organisation keys must be unique")
        keys = [s.key for s in self.stakeholders]
        if len(set(keys)) != len(keys):
            raise ValueError("stakeholder keys must be unique")
        for s in self.stakeholders:
            if s.organisation and s.organisation not in orgs:
                raise ValueError(f"stakeholder {s.key}: unknown organisation {s.organisation}")
        accounts = Counter(u for s in self.stakeholders for u in set(s.os_users))
        twice = sorted(u for u, n in accounts.items() if n > 1)
        if twice:
            raise ValueError(f"os_users {', '.join(twice)}: an account is one stakeholder only")
        return self
