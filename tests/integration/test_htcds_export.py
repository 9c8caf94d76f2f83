"""The HTCDS export over 200 generated persons, checked here independently of the exporter.

The persons, their cases, findings and closures are written straight into the store (with canary
names in identities and canary text in every narrative and free-text column), the export runs
through the `remedy` command line, and this module counts for itself: every combination of the
quasi-identifiers occurs at least k times, rows written plus rows suppressed are the persons
eligible, no canary, pseudonym, case reference or full date appears, and the columns are the
HTCDS v2 names that docs/htcds-export.md documents.
"""

from __future__ import annotations

import csv
import json
import random
import re
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from sqlmodel import col, select

from flows.cli import main as remedy
from models.enums import (
    AgeBand,
    CaseState,
    CaseStatus,
    ClosureType,
    DecisionKind,
    IloIndicator,
    IndicatorStatus,
    Mineral,
    Sex,
    SourceType,
)
from models.enums import Channel as IntakeChannel
from models.tables import (
    AffectedPerson,
    Allegation,
    AuditEvent,
    ClosureRecord,
    Decision,
    Lesson,
    RemediationCase,
    Stakeholder,
    VerificationFinding,
)
from tasks.store.db import read_only, unit_of_work
from tasks.store.vault import get_vault
from tests.conftest import ROOT, Store

CANARY_NAME = "Philomena Canarywood-Okafor"
CANARY_TEXT = "xylophone-canary-narrative"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
PERSONS = 200
QUASI = ("ageBroad", "prs_Gender", "prs_Citizenship", "vic_LocationOfExploitation",
         "yearOfRegistration")  # fmt: skip
# The HTCDS v2 field names (and the CTDC names where HTCDS has none) the export may carry,
# written out here rather than imported, so a renamed column fails this test.
HTCDS_FIELDS = {
    "id",
    "prs_Gender",
    "prs_Citizenship",
    "ageBroad",
    "yearOfRegistration",
    "vic_LocationOfExploitation",
    "vic_TraffickingStatus",
    "vic_TypeOfExploitation",
    "vic_Methods_of_Control",
    "vic_ForcedLabourIndustry",
    "cas_Status",
    "cas_ReasonForCaseClosure",
}
GENDERS = {"Feminine", "Masculine", "NonConforming", "NonSpecifiedUnknown"}
REGIONS = {"Africa", "Americas", "Asia", "Europe", "Oceania", "Other", "Unknown"}
METHODS = {
    "DebtBondage", "TakesEarnings", "RestrictsFinancialAccess", "Threats", "PsychologicalAbuse",
    "PhysicalAbuse", "SexualAbuse", "FalsePromises", "PsychoactiveSubstances",
    "RestrictsMovement", "RestrictsMedicalCare", "ExcessiveWorkingHours", "UsesChildren",
    "ThreatOfLawEnforcement", "WithholdsNecessities", "WithholdsDocuments", "Other",
}  # fmt: skip
STATUSES = {"PossibleVictimOfTrafficking", "ActualVictimOfTrafficking", "NotAVictimOfTrafficking"}
AGE_WEIGHTS = {
    AgeBand.UNDER_12: 0.03,
    AgeBand.AGE_12_14: 0.05,
    AgeBand.AGE_15_17: 0.1,
    AgeBand.AGE_18_24: 0.3,
    AgeBand.AGE_25_34: 0.3,
    AgeBand.AGE_35_49: 0.15,
    AgeBand.AGE_50_PLUS: 0.04,
    AgeBand.UNKNOWN: 0.03,
}
SEX_WEIGHTS = {Sex.MALE: 0.6, Sex.FEMALE: 0.35, Sex.OTHER: 0.02, Sex.UNKNOWN: 0.03}
NATIONALITY_WEIGHTS: dict[str | None, float] = {
    "CD": 0.5, "RW": 0.15, "BI": 0.1, "UG": 0.08, "GH": 0.04, "PE": 0.04, "FR": 0.02, "CN": 0.04,
    None: 0.03,
}  # fmt: skip
COUNTRY_WEIGHTS = {"CD": 0.6, "RW": 0.15, "GH": 0.1, "PE": 0.08, "ID": 0.07}
T = TypeVar("T")


def run_cli(*argv: str) -> int:
    try:
        remedy(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@dataclass
class Generated:
    """What the test planted: which persons are eligible, and every text that must not leak."""

    eligible_by_year: Counter[int]
    secrets: list[str]


def _pick(rng: random.Random, weighted: Mapping[T, float]) -> T:
    return rng.choices(list(weighted), weights=list(weighted.values()))[0]


def generate(seed: int = 14) -> Generated:
    """Write 200 persons over many cases into the store: most substantiated, some not."""
    rng = random.Random(seed)
    vault = get_vault()
    secrets: list[str] = [CANARY_NAME, CANARY_TEXT]
    eligible: Counter[int] = Counter()
    with unit_of_work() as session:
        verifier = Stakeholder(key="vera.verifier", display_name="Vera", created_at=NOW)
        session.add(verifier)
        session.flush()
        made, n = 0, 0
        while made < PERSONS:
            n += 1
            year = _pick(rng, {2024: 0.25, 2025: 0.35, 2026: 0.4})
            opened = datetime(year, rng.randint(1, 11), rng.randint(1, 28), 9, tzinfo=UTC)
            # outcome of verification: substantiated, unsubstantiated, not yet decided, or
            # substantiated first and found unsubstantiated after reopening
            outcome = _pick(
                rng, {"substantiated": 0.8, "unsubstantiated": 0.08, "none": 0.07, "re": 0.05}
            )
            closed = outcome in ("unsubstantiated", "re") or rng.random() < 0.5
            closure = (
                ClosureType.NO_BASIS
                if outcome in ("unsubstantiated", "re")
                else rng.choice(
                    [
                        ClosureType.RESOLVED_ACCEPTED,
                        ClosureType.RESOLVED_REJECTED,
                        ClosureType.UNRESOLVED_AUTHORISED,
                        ClosureType.REFERRED_EXTERNAL,
                        ClosureType.CONSENT_WITHDRAWN,
                    ]
                )
                if closed
                else None
            )
            ref = f"RC-{year}-{n:04d}"
            secrets.append(ref)
            case = RemediationCase(
                reference=ref,
                state=CaseState.CLOSED
                if closed
                else (CaseState.VERIFYING if outcome == "none" else CaseState.IMPLEMENTING),
                step=5 if closed else 4,
                status=CaseStatus.CLOSED if closed else CaseStatus.ACTIVE,
                state_changed_at=opened,
                opened_at=opened,
                closed_at=opened + timedelta(days=90) if closed else None,
                closure_type=closure,
            )
            session.add(case)
            session.flush()
            narrative = f"{CANARY_TEXT} {CANARY_NAME} told us about case {n}"
            session.add(
                Allegation(
                    case_id=case.id,
                    received_at=opened,
                    occurred_on=opened.date() - timedelta(days=30),
                    source_type=SourceType.NGO,
                    channel=IntakeChannel.EMAIL,
                    language="fr",
                    country=_pick(rng, COUNTRY_WEIGHTS),
                    site=f"{CANARY_TEXT} pit {n}",
                    mineral=rng.choice(list(Mineral)),
                    persons_reported=3,
                    reported_indicators=["deception"],
                    description_ciphertext=vault.encrypt({"text": narrative}),
                    reporter_ciphertext=vault.encrypt({"name": CANARY_NAME}),
                    content_hash=uuid.uuid4().hex,
                    screening_reason=f"{CANARY_TEXT} screening",
                )
            )
            size = min(rng.randint(1, 6), PERSONS - made)
            for i in range(size):
                pseudonym = f"P-{n:03d}{i:02d}"
                secrets.append(pseudonym)
                session.add(
                    AffectedPerson(
                        case_id=case.id,
                        pseudonym=pseudonym,
                        age_band=_pick(rng, AGE_WEIGHTS),
                        sex=_pick(rng, SEX_WEIGHTS),
                        nationality=_pick(rng, NATIONALITY_WEIGHTS),
                        identity_ciphertext=vault.encrypt({"name": f"{CANARY_NAME} {n}-{i}"}),
                        created_at=opened,
                    )
                )
            made += size
            if outcome != "none":
                session.add(
                    VerificationFinding(
                        case_id=case.id,
                        assessed_by_id=verifier.id,
                        assessed_at=opened + timedelta(days=10),
                        ilo_indicators={
                            i.value: rng.choice(list(IndicatorStatus)).value for i in IloIndicator
                        },
                        trafficking_indicated=rng.random() < 0.4,
                        forced_labour_indicated=rng.random() < 0.8,
                    )
                )
                verdicts = {
                    "substantiated": ["substantiated"],
                    "unsubstantiated": ["unsubstantiated"],
                    "re": ["substantiated", "unsubstantiated"],
                }[outcome]
                for round_, verdict in enumerate(verdicts):
                    session.add(
                        Decision(
                            case_id=case.id,
                            kind=DecisionKind.VERIFICATION,
                            step=1,
                            outcome=verdict,
                            approver_id=verifier.id,
                            decided_at=opened + timedelta(days=10 + 40 * round_),
                            reason=f"{CANARY_TEXT} reason {round_}",
                        )
                    )
            if closed:
                assert closure is not None
                session.add(
                    ClosureRecord(
                        case_id=case.id,
                        closure_type=closure,
                        victim_view_recorded=True,
                        victim_view=f"{CANARY_TEXT} view of {CANARY_NAME}",
                        unmet_needs=f"{CANARY_TEXT} needs",
                        closed_at=opened + timedelta(days=90),
                        follow_up_on=(opened + timedelta(days=180)).date(),
                    )
                )
                session.add(
                    Lesson(
                        case_id=case.id,
                        root_causes=["recruitment_fees"],
                        summary=f"{CANARY_TEXT} lesson",
                        recorded_at=opened + timedelta(days=95),
                    )
                )
            if outcome == "substantiated":
                eligible[year] += size
    return Generated(eligible_by_year=eligible, secrets=secrets)


def read_export(out: Path) -> tuple[list[dict[str, str]], dict, str]:
    """The CSV rows, the JSON document and both files' raw text."""
    csv_text = (out / "htcds.csv").read_text(encoding="utf-8")
    json_text = (out / "htcds.json").read_text(encoding="utf-8")
    rows = list(csv.DictReader(csv_text.splitlines()))
    return rows, json.loads(json_text), csv_text + "\n" + json_text


def documented_fields() -> set[str]:
    """The field names docs/htcds-export.md lists under "Fields we fill"."""
    text = (ROOT / "docs" / "htcds-export.md").read_text(encoding="utf-8")
    section = text.split("## Fields we fill", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Za-z_]+)` \|", section, re.MULTILINE))


def check_k_anonymous(rows: list[dict[str, str]], k: int) -> None:
    combos = Counter(tuple(row[q] for q in QUASI) for row in rows)
    small = {combo: n for combo, n in combos.items() if n < k}
    assert not small, f"combinations below k={k}: {small}"


def check_export(out: Path, generated: Generated, k: int, eligible: int) -> dict:
    rows, doc, raw = read_export(out)
    meta = doc["metadata"]
    for name in ("htcds.csv", "htcds.json"):
        assert (out / name).stat().st_mode & 0o777 == 0o600
    # the same rows in both files
    assert [{key: str(v) for key, v in r.items()} for r in doc["rows"]] == rows
    # k-anonymity, counted here
    check_k_anonymous(rows, k)
    assert meta["k"] == k
    assert meta["rows_written"] == len(rows)
    assert meta["rows_written"] + meta["rows_suppressed"] == eligible
    assert meta["htcds_version"].startswith("2")
    # no identity, no free text, no reference or pseudonym, no full date
    for secret in generated.secrets:
        assert secret not in raw, "a planted identity, text, pseudonym or reference leaked"
    assert not re.search(r"\b\d{4}-\d{2}-\d{2}\b", "\n".join(",".join(r.values()) for r in rows))
    assert not re.search(r"RC-\d{4}", raw)
    # only the documented HTCDS v2 field names
    header = set(rows[0]) if rows else set(doc["metadata"]["fields"])
    assert header == HTCDS_FIELDS
    assert header <= documented_fields()
    assert set(meta["fields"]) == HTCDS_FIELDS
    # values from the standard's picklists, years only
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids)
    for row in rows:
        assert re.fullmatch(r"\d{4}(-\d{4})?", row["yearOfRegistration"]), row
        assert row["prs_Gender"] in GENDERS
        assert re.fullmatch(r"[A-Z]{2}", row["prs_Citizenship"]) or (
            row["prs_Citizenship"] in REGIONS
        )
        assert re.fullmatch(r"[A-Z]{2}", row["vic_LocationOfExploitation"]) or (
            row["vic_LocationOfExploitation"] in REGIONS
        )
        assert row["ageBroad"] in {
            "0-11", "12-14", "15-17", "18-24", "25-34", "35-49", "50+", "Minor", "Adult",
            "Unknown",
        }  # fmt: skip
        assert row["vic_TraffickingStatus"] in STATUSES
        assert row["vic_ForcedLabourIndustry"] == "B_MiningAndQuarrying"
        assert row["vic_TypeOfExploitation"] in {"ForcedLabour", "Other"}
        methods = [m for m in row["vic_Methods_of_Control"].split(";") if m]
        assert set(methods) <= METHODS and methods == sorted(methods)
        assert row["cas_Status"] in {"Active", "Closed", "ClosedReferred"}
        if row["cas_Status"] == "Active":
            assert row["cas_ReasonForCaseClosure"] == ""
        else:
            assert row["cas_ReasonForCaseClosure"] != ""
        assert row["cas_Status"] != "ClosedReferred" or (
            row["cas_ReasonForCaseClosure"] == "ReferredExternal"
        )
    return meta


def test_htcds_export_is_k_anonymous_and_holds_no_identity(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    generated = generate()
    eligible = sum(generated.eligible_by_year.values())
    assert 120 < eligible < PERSONS  # some persons are not eligible: the filter is exercised

    out = tmp_path / "export"
    assert run_cli("export", "htcds", "--out", str(out)) == 0
    printed = capsys.readouterr()
    meta = check_export(out, generated, 11, eligible)
    assert f"{meta['rows_suppressed']} suppressed" in printed.out
    for secret in generated.secrets:
        assert secret not in printed.out + printed.err
    # the generated data needs generalisation: it was applied, and it is said which
    assert meta["generalisation"], meta

    # a smaller k keeps at least as many rows, and is k-anonymous at its own k
    out5 = tmp_path / "export-k5"
    assert run_cli("export", "htcds", "--k", "5", "--out", str(out5)) == 0
    meta5 = check_export(out5, generated, 5, eligible)
    assert meta5["rows_written"] >= meta["rows_written"]

    # --since counts only the cases registered since then
    out_since = tmp_path / "export-since"
    assert run_cli("export", "htcds", "--since", "2026-01-01", "--out", str(out_since)) == 0
    check_export(out_since, generated, 11, generated.eligible_by_year[2026])

    # the same data gives the same rows (the row ids are random per export)
    again = tmp_path / "export-again"
    assert run_cli("export", "htcds", "--out", str(again)) == 0
    first, _, _ = read_export(out)
    second, _, _ = read_export(again)
    assert [{**r, "id": ""} for r in first] == [{**r, "id": ""} for r in second]
    assert {r["id"] for r in first}.isdisjoint({r["id"] for r in second})

    # every export is audited on the export chain, with counts only
    with read_only() as session:
        events = session.exec(
            select(AuditEvent).where(AuditEvent.chain == "export").order_by(col(AuditEvent.seq))
        ).all()
    assert [e.action for e in events] == ["htcds_exported"] * 4
    assert events[0].details["rows_written"] == meta["rows_written"]
    assert events[0].details["rows_suppressed"] == meta["rows_suppressed"]
    for event in events:
        for secret in generated.secrets:
            assert secret not in json.dumps(event.details)


def test_raw_rows_follow_the_mapping_tables(store: Store) -> None:
    """Before any generalisation, each eligible person is one row with their mapped values."""
    from tasks.export.htcds import collect_rows

    generate()
    expected: Counter[tuple[str, str, str, str]] = Counter()
    gender = {
        Sex.FEMALE: "Feminine",
        Sex.MALE: "Masculine",
        Sex.OTHER: "NonConforming",
        Sex.UNKNOWN: "NonSpecifiedUnknown",
    }
    with read_only() as session:
        for case in session.exec(select(RemediationCase)).all():
            verdicts = session.exec(
                select(Decision.outcome)
                .where(Decision.case_id == case.id, Decision.kind == DecisionKind.VERIFICATION)
                .order_by(col(Decision.decided_at))
            ).all()
            if not verdicts or verdicts[-1] != "substantiated":
                continue
            where = session.exec(select(Allegation.country).where(Allegation.case_id == case.id))
            country = where.one()
            for person in session.exec(
                select(AffectedPerson).where(AffectedPerson.case_id == case.id)
            ).all():
                expected[
                    (
                        gender[person.sex],
                        person.nationality or "Unknown",
                        country,
                        str(case.opened_at.year),
                    )
                ] += 1
    with read_only() as session:
        raw = collect_rows(session, since=None)
    got = Counter(
        (r["prs_Gender"], r["prs_Citizenship"], r["vic_LocationOfExploitation"],
         r["yearOfRegistration"])
        for r in raw
    )  # fmt: skip
    assert got == expected


def test_k_below_two_is_refused(store: Store, tmp_path: Path) -> None:
    assert run_cli("export", "htcds", "--k", "1", "--out", str(tmp_path / "x")) == 2
    assert not (tmp_path / "x").exists()


def test_since_is_a_day(store: Store, tmp_path: Path) -> None:
    assert run_cli("export", "htcds", "--since", "yesterday", "--out", str(tmp_path)) == 2


def test_a_case_substantiated_through_step_one_is_eligible(store: Store) -> None:
    """The real verification decision (not rows written here) makes a case's persons eligible."""
    from tasks.export.htcds import collect_rows
    from tests.integration.factories import Clock, start_sample_case, verify

    case = start_sample_case(Clock())
    with read_only() as session:
        assert collect_rows(session, since=None) == []  # still being verified
        persons = session.exec(
            select(AffectedPerson)
            .join(RemediationCase)
            .where(RemediationCase.reference == case.ref)
        ).all()
    verify(case)
    with read_only() as session:
        raw = collect_rows(session, since=None)
    assert len(raw) == len(persons) > 0
    assert {r["cas_Status"] for r in raw} == {"Active"}
    assert {r["vic_ForcedLabourIndustry"] for r in raw} == {"B_MiningAndQuarrying"}
