"""Identifying data is encrypted at rest and never shows in output, errors, logs or repr."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

from tests.conftest import ROOT, Store
from tests.integration.test_intake import base_report, run_cli

CANARY_NAME = "Zqxcanary Vexlamont"
CANARY_CONTACT = "zqx.canary.7731@example.org"
CANARY_DOC = "ZQX-CANARY-7731"


def canary_report() -> dict:
    report = base_report()
    report["reporter"] = {"name": CANARY_NAME + " Sr", "contact": CANARY_CONTACT}
    report["affected_persons"] = [
        {
            "age_band": "15_to_17",
            "identity": {
                "name": CANARY_NAME,
                "contact": CANARY_CONTACT,
                "document_numbers": [CANARY_DOC],
            },
        }
    ]
    report["description"] = f"{CANARY_NAME} ({CANARY_CONTACT}) had documents taken."
    return report


CANARIES = (CANARY_NAME, CANARY_CONTACT, CANARY_DOC, "Zqxcanary", "zqx.canary")


def assert_clean(text: str, where: str) -> None:
    for canary in CANARIES:
        assert canary.lower() not in text.lower(), f"canary {canary!r} found in {where}"


def dump_store(store: Store) -> str:
    chunks = []
    with store.engine().connect() as conn:
        for table in SQLModel.metadata.tables.values():
            for row in conn.execute(sa.select(table)):
                chunks.append(json.dumps([str(v) for v in row], ensure_ascii=False))
        conn.rollback()
    return "\n".join(chunks)


def test_canary_is_nowhere_in_clear_text(
    store: Store,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "canary.json"
    path.write_text(json.dumps(canary_report()))
    assert run_cli("intake", str(path)) == 0
    reference = capsys.readouterr().out.strip()
    assert run_cli("show", reference) == 0
    assert run_cli("show", reference, "--json") == 0
    assert run_cli("cases") == 0
    assert run_cli("audit", "verify", reference) == 0
    captured = capsys.readouterr()
    assert_clean(captured.out + captured.err, "command output")
    assert_clean(caplog.text, "logs")
    assert_clean(dump_store(store), "the case store's rows")
    if store.path is not None:
        for f in store.path.parent.glob(store.path.name + "*"):  # the file, its WAL and SHM
            assert_clean(f.read_bytes().decode("latin-1"), f.name)
    # the identity is there, encrypted: reveal finds it, and the read is audited
    from tasks.context import utcnow
    from tasks.store.cases import case_summary, reveal_identifying_data

    events_before = case_summary(reference).audit_events
    revealed = reveal_identifying_data(
        reference, actor="cli:test", reason="canary check", now=utcnow()
    )
    assert revealed.identities["P-01"]["name"] == CANARY_NAME
    assert case_summary(reference).audit_events == events_before + 1
    assert_clean(repr(revealed) + str(revealed), "repr of revealed data")


def test_errors_never_echo_the_input(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = canary_report()
    report["affected_persons"][0]["identity"]["unexpected"] = CANARY_NAME  # unknown field
    report["affected_persons"][0]["sex"] = CANARY_NAME  # bad enum value
    report["location"]["country"] = CANARY_DOC  # bad country
    report["description"] = CANARY_NAME * 2000  # too long
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(report))
    assert run_cli("intake", str(path)) == 2
    captured = capsys.readouterr()
    assert_clean(captured.out + captured.err, "error output")
    yaml_path = tmp_path / "bad.yaml"
    yaml_path.write_text(f"description: {CANARY_NAME}\nsource_type: [unclosed {CANARY_CONTACT}\n")
    assert run_cli("intake", str(yaml_path)) == 2
    captured = capsys.readouterr()
    assert "not valid YAML" in captured.err
    assert_clean(captured.out + captured.err, "YAML error output")


def test_models_hide_identities_in_repr() -> None:
    from models.intake import ReportIn

    report = ReportIn.model_validate(canary_report())
    assert_clean(repr(report), "repr(ReportIn)")
    assert_clean(str(report.affected_persons), "str(persons)")


def test_cli_subprocess_output_is_clean(store: Store, tmp_path: Path) -> None:
    """The real command, as an operator runs it: stdout, stderr and Python warnings."""
    path = tmp_path / "canary.json"
    path.write_text(json.dumps(canary_report()))
    proc = subprocess.run(
        [sys.executable, "-W", "always", "-m", "flows.cli", "intake", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert_clean(proc.stdout + proc.stderr, "subprocess output")
    reference = proc.stdout.strip()
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "show", reference],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert reference in proc.stdout
    assert_clean(proc.stdout + proc.stderr, "subprocess show output")
