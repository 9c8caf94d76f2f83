"""The HTCDS-aligned anonymised export: one row per affected person, k-anonymous, no identity.

docs/htcds-export.md is the mapping: which HTCDS v2 field each column is, from which Remedy field,
how it is generalised, and which fields stay empty. The tables below are that mapping in code.

Only enums, country codes, booleans and dates are read; no ciphertext is loaded or decrypted and
no free-text column is selected. Dates leave as years (or ranges of years). Rows carry a random id
per export, never a case reference, pseudonym or database id, and are sorted by their values so
that the persons of one case do not sit together.
"""

from __future__ import annotations

import csv
import json
import math
import secrets
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import sqlalchemy as sa
from sqlmodel import Session, col, select

from models.enums import (
    AgeBand,
    CaseStatus,
    ClosureType,
    DecisionKind,
    IloIndicator,
    IndicatorStatus,
    Mineral,
    Sex,
)
from models.tables import (
    AffectedPerson,
    Allegation,
    Decision,
    RemediationCase,
    VerificationFinding,
)
from tasks.store.audit import append_audit
from tasks.store.db import read_only, unit_of_work

HTCDS_VERSION: Final = "2.0"
EXPORT_CHAIN: Final = "export"
# a generalisation step is taken only while more rows than this share of them would otherwise
# have to be suppressed (docs/htcds-export.md, How rows become k-anonymous)
SUPPRESSION_BUDGET: Final = 0.05

# --- the columns, in file order ----------------------------------------------------------------

ROW_ID = "id"
AGE = "ageBroad"
GENDER = "prs_Gender"
CITIZENSHIP = "prs_Citizenship"
EXPLOITATION_COUNTRY = "vic_LocationOfExploitation"
YEAR = "yearOfRegistration"
TRAFFICKING_STATUS = "vic_TraffickingStatus"
EXPLOITATION_TYPE = "vic_TypeOfExploitation"
METHODS_OF_CONTROL = "vic_Methods_of_Control"
INDUSTRY = "vic_ForcedLabourIndustry"
CASE_STATUS = "cas_Status"
CLOSURE_REASON = "cas_ReasonForCaseClosure"

FIELDS: Final = (
    ROW_ID,
    AGE,
    GENDER,
    CITIZENSHIP,
    EXPLOITATION_COUNTRY,
    YEAR,
    TRAFFICKING_STATUS,
    EXPLOITATION_TYPE,
    METHODS_OF_CONTROL,
    INDUSTRY,
    CASE_STATUS,
    CLOSURE_REASON,
)
QUASI_IDENTIFIERS: Final = (AGE, GENDER, CITIZENSHIP, EXPLOITATION_COUNTRY, YEAR)
UNKNOWN: Final = "Unknown"
MULTI_SEPARATOR: Final = ";"  # a multiselect picklist in one CSV cell

# --- mapping tables: Remedy's enums to HTCDS v2 picklist values ----------------------------------

GENDER_VALUES: Final = MappingProxyType(
    {
        Sex.FEMALE: "Feminine",
        Sex.MALE: "Masculine",
        Sex.OTHER: "NonConforming",
        Sex.UNKNOWN: "NonSpecifiedUnknown",
    }
)

AGE_BANDS: Final = MappingProxyType(
    {
        AgeBand.UNDER_12: "0-11",
        AgeBand.AGE_12_14: "12-14",
        AgeBand.AGE_15_17: "15-17",
        AgeBand.AGE_18_24: "18-24",
        AgeBand.AGE_25_34: "25-34",
        AgeBand.AGE_35_49: "35-49",
        AgeBand.AGE_50_PLUS: "50+",
        AgeBand.UNKNOWN: UNKNOWN,
    }
)
MINOR, ADULT = "Minor", "Adult"
BROAD_AGES: Final = MappingProxyType(
    {
        **{AGE_BANDS[b]: MINOR if b.is_minor else ADULT for b in AgeBand if b != AgeBand.UNKNOWN},
        MINOR: MINOR,  # band unknown, known to be a minor
        UNKNOWN: UNKNOWN,
    }
)

# The ILO's forced-labour indicators as HTCDS methods of control (definitions in HTCDS v2's Field
# Definitions, "Methods Of Control"). The ILO joins physical and sexual violence in one
# indicator; it is exported as PhysicalAbuse alone rather than claim a sexual abuse nobody
# recorded. Abusive working and living conditions has no HTCDS counterpart: Other.
METHODS_OF_CONTROL_VALUES: Final = MappingProxyType(
    {
        IloIndicator.ABUSE_OF_VULNERABILITY: "PsychologicalAbuse",
        IloIndicator.DECEPTION: "FalsePromises",
        IloIndicator.RESTRICTION_OF_MOVEMENT: "RestrictsMovement",
        IloIndicator.ISOLATION: "RestrictsMovement",
        IloIndicator.PHYSICAL_SEXUAL_VIOLENCE: "PhysicalAbuse",
        IloIndicator.INTIMIDATION_THREATS: "Threats",
        IloIndicator.RETENTION_OF_IDENTITY_DOCUMENTS: "WithholdsDocuments",
        IloIndicator.WITHHOLDING_OF_WAGES: "TakesEarnings",
        IloIndicator.DEBT_BONDAGE: "DebtBondage",
        IloIndicator.ABUSIVE_CONDITIONS: "Other",
        IloIndicator.EXCESSIVE_OVERTIME: "ExcessiveWorkingHours",
    }
)

_ILO_NAMES: Final = frozenset(i.value for i in IloIndicator)

# Every mineral of a Remedy case is mined: ISIC v4 section B, Mining and quarrying.
INDUSTRY_VALUES: Final = MappingProxyType({m: "B_MiningAndQuarrying" for m in Mineral})

ACTUAL_VICTIM = "ActualVictimOfTrafficking"
POSSIBLE_VICTIM = "PossibleVictimOfTrafficking"
NOT_A_VICTIM = "NotAVictimOfTrafficking"

CASE_STATUS_VALUES: Final = MappingProxyType(
    {
        CaseStatus.ACTIVE: "Active",
        CaseStatus.ON_HOLD: "Active",  # HTCDS has no hold: the case is still open
        CaseStatus.CLOSED: "Closed",
    }
)
CLOSED_REFERRED = "ClosedReferred"

# HTCDS v2 has the reason as long text; Remedy exports a fixed code instead, never a case's text.
CLOSURE_REASONS: Final = MappingProxyType(
    {
        ClosureType.RESOLVED_ACCEPTED: "RemedyDeliveredAccepted",
        ClosureType.RESOLVED_REJECTED: "RemedyDeliveredNotAccepted",
        ClosureType.UNRESOLVED_AUTHORISED: "ClosedUnresolved",
        ClosureType.INCONCLUSIVE_NO_CONTACT: "NoContact",
        ClosureType.NO_BASIS: "NotSubstantiated",
        ClosureType.DUPLICATE: "Duplicate",
        ClosureType.REFERRED_EXTERNAL: "ReferredExternal",
        ClosureType.CONSENT_WITHDRAWN: "ConsentWithdrawn",
    }
)
CLOSURE_NOT_RECORDED = "NotRecorded"

# ISO 3166-1 alpha-2 codes by UN M49 region (the UN Statistics Division's standard country or
# area codes). Antarctica and anything unlisted generalise to "Other".
_M49_REGIONS: Final = {
    "Africa": "DZ EG LY MA SD TN EH IO BI KM DJ ER ET TF KE MG MW MU YT MZ RE RW SC SO SS UG TZ ZM "
    "ZW AO CM CF TD CG CD GQ GA ST BW SZ LS NA ZA BJ BF CV CI GM GH GN GW LR ML MR NE NG SH SN "
    "SL TG",
    "Americas": "AI AG AW BS BB BQ VG KY CU CW DM DO GD GP HT JM MQ MS PR BL KN LC MF VC SX TT TC "
    "VI BZ CR SV GT HN MX NI PA AR BO BV BR CL CO EC FK GF GY PY PE GS SR UY VE BM CA GL PM US",
    "Asia": "KZ KG TJ TM UZ CN HK MO KP JP MN KR TW BN KH ID LA MY MM PH SG TH TL VN AF BD BT IN "
    "IR MV NP PK LK AM AZ BH CY GE IQ IL JO KW LB OM QA SA PS SY TR AE YE",
    "Europe": "BY BG CZ HU PL MD RO RU SK UA AX DK EE FO FI GG IS IE IM JE LV LT NO SJ SE GB AL AD "
    "BA HR GI GR VA IT MT ME MK PT SM RS SI ES AT BE FR DE LI LU MC NL CH",
    "Oceania": "AU CX CC HM NZ NF FJ NC PG SB VU GU KI MH FM NR MP PW UM AS CK PF NU PN WS TK TO "
    "TV WF",
}
REGIONS: Final = MappingProxyType(
    {code: region for region, codes in _M49_REGIONS.items() for code in codes.split()}
)
OTHER_REGION = "Other"


def region_of(value: str) -> str:
    """Return the UN region of an ISO 3166 alpha-2 code ("Unknown" stays unknown)."""
    if value == UNKNOWN:
        return UNKNOWN
    return REGIONS.get(value, OTHER_REGION)


def year_range(value: str) -> str:
    """Return the five-year range (aligned on multiples of five) a year falls in."""
    start = int(value) // 5 * 5
    return f"{start}-{start + 4}"


@dataclass(frozen=True)
class Generalisation:
    """One step of the ladder: a quasi-identifier column made coarser."""

    column: str
    description: str
    coarsen: Callable[[str], str]


# The ladder, in the order the steps are taken (docs/htcds-export.md).
LADDER: Final[tuple[Generalisation, ...]] = (
    Generalisation(AGE, "age band to minor / adult / unknown", lambda v: BROAD_AGES[v]),
    Generalisation(CITIZENSHIP, "citizenship to UN region", region_of),
    Generalisation(YEAR, "year to a five-year range", year_range),
    Generalisation(EXPLOITATION_COUNTRY, "country of exploitation to UN region", region_of),
)

Row = dict[str, str]


# --- reading the store ---------------------------------------------------------------------------


def _trafficking_status(finding: VerificationFinding | None) -> str:
    if finding is None:
        return POSSIBLE_VICTIM
    if finding.trafficking_indicated:
        return ACTUAL_VICTIM
    if finding.forced_labour_indicated:
        return POSSIBLE_VICTIM
    return NOT_A_VICTIM


def _exploitation_type(finding: VerificationFinding | None) -> str:
    if finding is not None and (finding.forced_labour_indicated or finding.trafficking_indicated):
        return "ForcedLabour"
    return "Other"


def _methods(finding: VerificationFinding | None) -> str:
    if finding is None:
        return ""
    present = IndicatorStatus.PRESENT.value
    names = {
        METHODS_OF_CONTROL_VALUES[IloIndicator(name)]
        for name, status in finding.ilo_indicators.items()
        if status == present and name in _ILO_NAMES
    }
    return MULTI_SEPARATOR.join(sorted(names))


def _case_status(case: RemediationCase) -> tuple[str, str]:
    status = CASE_STATUS_VALUES[case.status]
    if case.status != CaseStatus.CLOSED:
        return status, ""
    if case.closure_type is None:
        return status, CLOSURE_NOT_RECORDED
    if case.closure_type == ClosureType.REFERRED_EXTERNAL:
        status = CLOSED_REFERRED
    return status, CLOSURE_REASONS[case.closure_type]


def substantiated_case_ids(session: Session) -> set[uuid.UUID]:
    """Return the cases whose latest verification decision found the allegation substantiated."""
    latest: dict[uuid.UUID, str] = {}
    # only the outcome is read: a decision's reason is free text
    for case_id, outcome in session.exec(
        select(Decision.case_id, Decision.outcome)
        .where(Decision.kind == DecisionKind.VERIFICATION)
        .order_by(col(Decision.decided_at), col(Decision.id))
    ).all():
        latest[case_id] = outcome
    return {case_id for case_id, outcome in latest.items() if outcome == "substantiated"}


def collect_rows(session: Session, *, since: date | None) -> list[Row]:
    """Return one row per affected person of a substantiated case, before any generalisation.

    `since`: only cases registered (opened) on or after that day. Rows carry no id yet.
    """
    eligible = substantiated_case_ids(session)
    if not eligible:
        return []
    query = select(RemediationCase).where(col(RemediationCase.id).in_(eligible))
    if since is not None:
        query = query.where(
            col(RemediationCase.opened_at) >= datetime.combine(since, datetime.min.time(), UTC)
        )
    cases = {c.id: c for c in session.exec(query).all()}
    if not cases:
        return []
    # columns, not rows: the allegation's narrative, site and reporter are never loaded
    where: dict[uuid.UUID, tuple[str, Mineral]] = {}
    for alleged in session.exec(
        select(Allegation.case_id, Allegation.country, Allegation.mineral)
        .where(col(Allegation.case_id).in_(cases))
        .order_by(col(Allegation.received_at).desc(), col(Allegation.id))
    ).all():
        where[alleged[0]] = (
            alleged[1],
            Mineral(alleged[2]),
        )  # the first received wins (ordered last)
    findings: dict[uuid.UUID, VerificationFinding] = {}
    for found in session.exec(
        select(VerificationFinding)
        .where(col(VerificationFinding.case_id).in_(cases))
        .order_by(col(VerificationFinding.assessed_at), col(VerificationFinding.id))
    ).all():
        findings[found.case_id] = found  # the latest wins
    rows: list[Row] = []
    persons: Sequence[Any] = session.execute(
        sa.select(
            col(AffectedPerson.case_id),
            col(AffectedPerson.age_band),
            col(AffectedPerson.is_minor),
            col(AffectedPerson.sex),
            col(AffectedPerson.nationality),
        ).where(col(AffectedPerson.case_id).in_(cases))
    ).all()
    for case_id, age_band, is_minor, sex, nationality in persons:
        case = cases[case_id]
        country, mineral = where.get(case_id, (UNKNOWN, Mineral.OTHER))
        finding = findings.get(case_id)
        status, reason = _case_status(case)
        age = AGE_BANDS[age_band]
        rows.append(
            {
                AGE: MINOR if age == UNKNOWN and is_minor else age,
                GENDER: GENDER_VALUES[sex],
                CITIZENSHIP: nationality or UNKNOWN,
                EXPLOITATION_COUNTRY: country or UNKNOWN,
                YEAR: str(case.opened_at.year),
                TRAFFICKING_STATUS: _trafficking_status(finding),
                EXPLOITATION_TYPE: _exploitation_type(finding),
                METHODS_OF_CONTROL: _methods(finding),
                INDUSTRY: INDUSTRY_VALUES[mineral],
                CASE_STATUS: status,
                CLOSURE_REASON: reason,
            }
        )
    return rows


# --- k-anonymity ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Anonymised:
    """The rows kept, how many were suppressed and which generalisation steps were applied."""

    rows: list[Row]
    suppressed: int
    applied: tuple[str, ...]


def _combination(row: Row) -> tuple[str, ...]:
    return tuple(row[q] for q in QUASI_IDENTIFIERS)


def _rows_below(rows: Sequence[Row], k: int) -> int:
    counts = Counter(_combination(r) for r in rows)
    return sum(n for n in counts.values() if n < k)


def anonymise(rows: Sequence[Row], k: int) -> Anonymised:
    """Generalise step by step, then suppress the combinations still below k.

    A step of the ladder is taken only while more rows than the suppression budget would have to
    go; whatever is left below k after that is suppressed, so every combination of the
    quasi-identifiers in the result occurs at least k times. Deterministic given the rows.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    work = [dict(r) for r in rows]
    budget = math.floor(len(work) * SUPPRESSION_BUDGET)
    applied: list[str] = []
    for step in LADDER:
        if _rows_below(work, k) <= budget:
            break
        for row in work:
            row[step.column] = step.coarsen(row[step.column])
        applied.append(step.description)
    counts = Counter(_combination(r) for r in work)
    kept = [r for r in work if counts[_combination(r)] >= k]
    # sorted by value: the order of the store (persons of one case together) does not survive
    kept.sort(key=lambda r: tuple(r[f] for f in FIELDS if f != ROW_ID))
    return Anonymised(rows=kept, suppressed=len(work) - len(kept), applied=tuple(applied))


# --- writing and auditing ------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote: counts and paths, never a row."""

    k: int
    persons_eligible: int
    rows_written: int
    rows_suppressed: int
    generalisation: tuple[str, ...]
    csv_path: Path
    json_path: Path


def _write_private(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)


def write_files(
    result: Anonymised, *, out: Path, k: int, since: date | None, now: datetime
) -> tuple[Path, Path]:
    """Write htcds.csv and htcds.json (the same rows; the JSON adds the metadata)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [{ROW_ID: secrets.token_hex(8), **r} for r in result.rows]
    rows = [{f: r[f] for f in FIELDS} for r in rows]
    csv_path, json_path = out / "htcds.csv", out / "htcds.json"
    with csv_path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(FIELDS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    csv_path.chmod(0o600)
    metadata: dict[str, Any] = {
        "standard": "IOM Human Trafficking Case Data Standard (HTCDS)",
        "htcds_version": HTCDS_VERSION,
        "generated_at": now.astimezone(UTC).isoformat(timespec="seconds"),
        "since": since.isoformat() if since else None,
        "k": k,
        "quasi_identifiers": list(QUASI_IDENTIFIERS),
        "persons_eligible": len(result.rows) + result.suppressed,
        "rows_written": len(rows),
        "rows_suppressed": result.suppressed,
        "generalisation": list(result.applied),
        "fields": list(FIELDS),
        "mapping": "docs/htcds-export.md",
    }
    _write_private(
        json_path,
        json.dumps({"metadata": metadata, "rows": rows}, indent=2, ensure_ascii=False) + "\n",
    )
    return csv_path, json_path


def export_htcds(
    *, out: Path, k: int, since: date | None, now: datetime, actor: str
) -> ExportSummary:
    """Export the substantiated cases' persons as k-anonymous HTCDS rows, and audit the counts."""
    with read_only() as session:
        rows = collect_rows(session, since=since)
    result = anonymise(rows, k)
    csv_path, json_path = write_files(result, out=out, k=k, since=since, now=now)
    summary = ExportSummary(
        k=k,
        persons_eligible=len(rows),
        rows_written=len(result.rows),
        rows_suppressed=result.suppressed,
        generalisation=result.applied,
        csv_path=csv_path,
        json_path=json_path,
    )
    with unit_of_work() as session:
        append_audit(
            session,
            chain=EXPORT_CHAIN,
            actor=actor,
            action="htcds_exported",
            at=now,
            subject_type="export",
            details={
                "htcds_version": HTCDS_VERSION,
                "k": k,
                "since": since.isoformat() if since else None,
                "persons_eligible": summary.persons_eligible,
                "rows_written": summary.rows_written,
                "rows_suppressed": summary.rows_suppressed,
                "generalisation_steps": len(summary.generalisation),
            },
        )
    return summary
