"""Intake against real SQLite and PostgreSQL stores: good reports, duplicates and bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from sqlmodel import select

from flows.cli import main as remedy
from tests.conftest import Store

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def run_cli(*argv: str) -> int:
    try:
        remedy(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def base_report() -> dict:
    return {
        "received_at": "2026-11-20T09:30:00Z",
        "source_type": "ngo",
        "channel": "grievance_platform",
        "language": "fr",
        "occurred_on": "2026-10-15",
        "location": {"country": "CD", "site": "Site A"},
        "mineral": "tin",
        "description": "Identity cards were taken on arrival.",
        "affected_persons": [{"age_band": "15_to_17", "sex": "male", "nationality": "CD"}],
        "indicators": ["retention_of_identity_documents"],
    }


def write(tmp_path: Path, name: str, data: object) -> Path:
    path = tmp_path / name
    if name.endswith(".json"):
        path.write_text(json.dumps(data))
    else:
        path.write_text(yaml.safe_dump(data))
    return path


def all_example_reports(examples: Path) -> list[Path]:
    return sorted((examples / "reports").iterdir())


def test_every_example_round_trips(
    store: Store, examples: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tasks.intake import read_report
    from tasks.store.cases import case_summary

    assert run_cli("directory", "load", str(examples / "stakeholders.yaml")) == 0
    reports = all_example_reports(examples)
    assert len(reports) >= 2
    for path in reports:
        capsys.readouterr()
        assert run_cli("intake", str(path)) == 0
        reference = capsys.readouterr().out.strip()
        assert reference.startswith("RC-")
        report = read_report(path, now=NOW)
        summary = case_summary(reference)
        assert summary.country == report.location.country
        assert summary.mineral == report.mineral
        assert summary.source_type == report.source_type
        assert summary.anonymous == report.anonymous
        assert len(summary.persons) == len(report.affected_persons)
        assert [p.age_band for p in summary.persons] == [
            p.age_band for p in report.affected_persons
        ]
        assert sorted(summary.reported_indicators) == sorted(i.value for i in report.indicators)
        assert {o["name"] for o in summary.organisations} == {o.name for o in report.organisations}
        assert summary.state == "intake" and summary.step == 1
        assert summary.deadlines["acknowledge_by"] is not None
        # members come from the directory's default roles
        assert {"case_lead", "verifier", "senior_approver"} <= {m["role"] for m in summary.members}


def test_references_are_sequential_per_year(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refs = []
    for n in range(3):
        data = base_report() | {"description": f"report number {n}"}
        assert run_cli("intake", str(write(tmp_path, f"r{n}.json", data))) == 0
        refs.append(capsys.readouterr().out.strip())
    assert refs == ["RC-2026-0001", "RC-2026-0002", "RC-2026-0003"]


def test_duplicate_report_returns_existing_case_and_stores_nothing(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "r.yaml", base_report())
    assert run_cli("intake", str(path)) == 0
    first = capsys.readouterr().out.strip()
    before = store.row_counts()
    # same content, received again later and in the other format: still the same report
    again = write(tmp_path, "r.json", base_report() | {"received_at": "2026-11-21T10:00:00Z"})
    assert run_cli("intake", str(again)) == 0
    out = capsys.readouterr().out
    assert out.startswith(first) and "already known" in out
    assert store.row_counts() == before


def test_intake_is_one_transaction(store: Store, tmp_path: Path) -> None:
    """A failure after the case row was written leaves nothing behind."""
    from models.intake import ReportIn
    from models.tables import RemediationCase
    from tasks.intake import open_case
    from tasks.store.db import unit_of_work

    report = ReportIn.model_validate(base_report())
    before = store.row_counts()
    # a person whose pseudonym collides can't be stored: make the sequence produce a taken reference
    with unit_of_work() as session:
        session.add(RemediationCase(reference="RC-2026-0001", state_changed_at=NOW, opened_at=NOW))
    with pytest.raises(Exception):
        open_case(report, now=NOW, actor="test")
    after = store.row_counts()
    assert after["allegation"] == before["allegation"] == 0
    assert after["remediation_case"] == 1 and after["audit_event"] == 0


BAD_INPUTS: list[tuple[str, object, str]] = [
    (
        "missing.json",
        {k: v for k, v in base_report().items() if k != "mineral"},
        "mineral: is required",
    ),
    ("unknown.json", base_report() | {"victim_name": "x"}, "victim_name: is not a known field"),
    ("type.json", base_report() | {"anonymous": "perhaps"}, "anonymous:"),
    ("future.json", base_report() | {"occurred_on": "2099-01-01"}, "occurred_on: is in the future"),
    (
        "future2.json",
        base_report() | {"received_at": "2099-01-01T00:00:00Z"},
        "received_at: is in the future",
    ),
    ("enum.json", base_report() | {"mineral": "kryptonite"}, "mineral: Input should be"),
    (
        "country.json",
        base_report() | {"location": {"country": "XX"}},
        "location.country: must be an ISO 3166",
    ),
    (
        "long.json",
        base_report() | {"description": "x" * 20_001},
        "description: text is too long (20001 characters; the limit is 20000)",
    ),
    (
        "nul.json",
        base_report() | {"description": "a\u0000b"},
        "description: contains a NUL character",
    ),
    (
        "anon.json",
        base_report() | {"anonymous": True, "reporter": {"name": "Someone"}},
        "anonymous report cannot carry",
    ),
    (
        "person.json",
        base_report() | {"affected_persons": [{"age_band": "teen"}]},
        "affected_persons[0].age_band: Input should be",
    ),
    ("list.json", [1, 2, 3], "must be a mapping"),
]


@pytest.mark.parametrize(("name", "data", "expected"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_refused_with_a_clear_answer(
    store: Store,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    data: object,
    expected: str,
) -> None:
    before = store.row_counts()
    assert run_cli("intake", str(write(tmp_path, name, data))) == 2
    err = capsys.readouterr().err
    assert expected in " ".join(err.split()), err
    assert "nothing was stored" in err
    assert store.row_counts() == before


RAW_BAD: list[tuple[str, bytes, str]] = [
    ("empty.json", b"", "the file is empty"),
    ("blank.yaml", b"   \n# only a comment\n", "the file is empty"),
    (
        "latin1.json",
        json.dumps(base_report()).encode().replace(b"Identity", b"Identit\xe9"),
        "not valid UTF-8",
    ),
    ("broken.json", b'{"source_type": ', "not valid JSON"),
    ("broken.yaml", b"source_type: [ngo\n", "not valid YAML"),
    (
        "bomb.yaml",
        b'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
        b"b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
        b"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n",
        "YAML aliases (*name) are not accepted",
    ),
    ("pyobj.yaml", b"a: !!python/object/apply:os.system ['echo hi']\n", "not valid YAML"),
    ("deep.json", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (
        "huge.json",
        b'{"description": "' + b"x" * (1024 * 1024) + b'"}',
        "the limit is 1048576 bytes",
    ),
    ("report.txt", b"source_type: ngo", "unsupported file type"),
]


@pytest.mark.parametrize(("name", "raw", "expected"), RAW_BAD, ids=[b[0] for b in RAW_BAD])
def test_unreadable_files_are_refused(
    store: Store,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    raw: bytes,
    expected: str,
) -> None:
    before = store.row_counts()
    path = tmp_path / name
    path.write_bytes(raw)
    assert run_cli("intake", str(path)) == 2
    err = capsys.readouterr().err
    assert expected in " ".join(err.split()), err
    assert store.row_counts() == before


def test_free_text_is_data(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tasks.store.cases import reveal_identifying_data

    text = "{{ 7*7 }} {% raw %} <script>alert(1)</script> '; DROP TABLE allegation; --"
    assert (
        run_cli("intake", str(write(tmp_path, "r.json", base_report() | {"description": text})))
        == 0
    )
    reference = capsys.readouterr().out.strip()
    revealed = reveal_identifying_data(reference, actor="test", reason="test", now=NOW)
    assert revealed.description == text
    assert store.row_counts()["allegation"] == 1


def test_concurrent_intakes_of_one_report_open_one_case(store: Store, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from models.intake import ReportIn
    from tasks.intake import open_case

    report = ReportIn.model_validate(base_report())
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: open_case(report, now=NOW, actor="t"), range(4)))
    assert len({r.reference for r in results}) == 1
    assert sum(not r.duplicate for r in results) == 1
    assert store.row_counts()["remediation_case"] == 1


def test_directory_load_is_idempotent(store: Store, examples: Path) -> None:
    from models.tables import Stakeholder
    from tasks.store.db import read_only

    assert run_cli("directory", "load", str(examples / "stakeholders.yaml")) == 0
    first = store.row_counts()
    assert run_cli("directory", "load", str(examples / "stakeholders.yaml")) == 0
    assert store.row_counts() == first
    with read_only() as session:
        keys = set(session.exec(select(Stakeholder.key)).all())
    assert "amani.verifier" in keys


def test_directory_maps_accounts_and_whom_they_act_for(
    store: Store, examples: Path, tmp_path: Path
) -> None:
    from models.tables import AuditEvent, Stakeholder
    from tasks.store.db import read_only

    data = yaml.safe_load((examples / "stakeholders.yaml").read_text())
    lead = next(s for s in data["stakeholders"] if s["key"] == "lena.lead")
    lead |= {"os_users": ["lena", "lh"], "acts_for": ["grace.advocate", "*"]}
    assert run_cli("directory", "load", str(write(tmp_path, "d.yaml", data))) == 0
    with read_only() as session:
        stored = session.exec(select(Stakeholder).where(Stakeholder.key == "lena.lead")).one()
        assert (stored.os_users, stored.acts_for) == (["lena", "lh"], ["grace.advocate", "*"])

    del lead["os_users"], lead["acts_for"]  # the file is the truth for the keys it lists
    assert run_cli("directory", "load", str(write(tmp_path, "d2.yaml", data))) == 0
    assert run_cli("directory", "load", str(write(tmp_path, "d2.yaml", data))) == 0  # no change
    with read_only() as session:
        stored = session.exec(select(Stakeholder).where(Stakeholder.key == "lena.lead")).one()
        assert (stored.os_users, stored.acts_for) == ([], [])
        loaded = AuditEvent.action == "directory.loaded"
        loads = session.exec(select(AuditEvent).where(loaded).order_by(AuditEvent.seq)).all()
    # every change of who is whom on the command line is named in the system chain
    remapped = [e.details.get("accounts_remapped") for e in loads]
    assert remapped == [["lena.lead", "sofia.senior", "grace.advocate"], ["lena.lead"]]


@pytest.mark.parametrize(
    ("entries", "problem"),
    [
        ({"lena.lead": {"os_users": ["lena; rm"]}}, "os_users"),
        ({"lena.lead": {"os_users": [""]}}, "os_users"),
        ({"lena.lead": {"acts_for": ["Grace Advocate"]}}, "acts_for"),
        ({"lena.lead": {"os_users": ["ops"]}, "sofia.senior": {"os_users": ["ops"]}}, "ops"),
    ],
)
def test_directory_refuses_bad_account_mappings(
    store: Store,
    examples: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    entries: dict[str, dict[str, list[str]]],
    problem: str,
) -> None:
    data = yaml.safe_load((examples / "stakeholders.yaml").read_text())
    for person in data["stakeholders"]:
        person.update(entries.get(person["key"], {}))
    before = store.row_counts()
    assert run_cli("directory", "load", str(write(tmp_path, "d.yaml", data))) == 2
    assert problem in capsys.readouterr().err
    assert store.row_counts() == before
