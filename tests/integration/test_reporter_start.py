"""A report is stored but its run cannot start (Prefect down): the reporter still gets the receipt.

The case and the receipt are committed before the case's run is started; should Prefect not
answer, the reporter must not be told "send again" with a stored report they hold no receipt
for. The failure is audited, and the case waits at intake for the next sweep: the doctor lists
it, the reconciler starts its entry run once.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import timedelta

import pytest
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlmodel import select

from models.enums import CaseState, Step
from models.tables import AuditEvent, RemediationCase, ReporterReceipt
from tasks.intake import read_report
from tasks.monitoring.doctor import GRACE, RunSeen, diagnose
from tasks.monitoring.reconcile import reconcile
from tasks.reporter.receipts import file_report, follow_up
from tasks.store.db import read_only
from tests.conftest import Store
from tests.integration.factories import SAMPLE_REPORT, Clock
from tests.integration.test_intake import run_cli
from tests.integration.test_reconcile import FakePrefect, reader

CANARY = "Canary-Ngoy-4417"


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def prefect_down() -> Iterator[None]:
    with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{closed_port()}/api"}):
        yield


def case_of(receipt_ref: str) -> RemediationCase:
    with read_only() as session:
        receipt = session.exec(
            select(ReporterReceipt).where(ReporterReceipt.receipt_ref == receipt_ref)
        ).one()
        case = session.get(RemediationCase, receipt.case_id)
        assert case is not None
        return case


def audit(ref: str, action: str) -> list[AuditEvent]:
    with read_only() as session:
        return list(
            session.exec(
                select(AuditEvent).where(AuditEvent.chain == ref, AuditEvent.action == action)
            ).all()
        )


def test_a_report_filed_while_prefect_is_down_keeps_its_receipt_and_starts_later(
    store: Store,
    prefect_down: None,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock = Clock()
    report = read_report(SAMPLE_REPORT, now=clock.now)
    report = report.model_copy(update={"description": f"{CANARY} {report.description}"})
    filed_at = clock.tick()

    filed = file_report(report, now=filed_at, actor="public-page", contact_ok=False)

    # the reporter holds a receipt that opens the stored report
    shown = follow_up(filed.code, now=filed_at)
    assert shown is not None and shown.receipt_ref == filed.receipt_ref
    case = case_of(filed.receipt_ref)
    assert case.state == CaseState.INTAKE
    [failed] = audit(case.reference, "reporter.start_failed")
    assert failed.details["error"] and CANARY not in str(failed.details)
    assert case.reference in caplog.text and CANARY not in caplog.text

    # not yet a problem within the grace period; then the doctor lists it
    assert [
        f for f in diagnose(now=filed_at, runs=reader({})) if f.case_ref == case.reference
    ] == []
    later = filed_at + GRACE * 2
    [finding] = [f for f in diagnose(now=later, runs=reader({})) if f.case_ref == case.reference]
    assert (finding.kind, finding.step) == ("case-not-started", int(Step.VERIFY))
    assert run_cli("doctor", "--json") == 1  # `remedy doctor` lists it (no run to ask Prefect of)
    listed = json.loads(capsys.readouterr().out)
    assert [f["kind"] for f in listed if f["case_ref"] == case.reference] == ["case-not-started"]

    # the next sweep starts the case's entry run once, audited; a second sweep does nothing
    prefect = FakePrefect()
    [repair] = reconcile(now=later, control=prefect, reader=reader({}))
    assert repair.case_ref == case.reference and repair.flow_run_id is not None
    assert prefect.calls == ["start remediation-case"]
    running = {repair.flow_run_id: RunSeen(state_type=StateType.SCHEDULED, state_name="Scheduled")}
    again = later + timedelta(minutes=5)
    assert [f for f in diagnose(now=again, runs=reader(running))] == []
    assert reconcile(now=again, control=prefect, reader=reader(running)) == []
    assert prefect.calls == ["start remediation-case"]
    assert len(audit(case.reference, "reconcile.case_started")) == 1

    # a run that ended with the case still at intake is restarted (a fresh key), once more
    ended = {repair.flow_run_id: RunSeen(state_type=StateType.CRASHED, state_name="Crashed")}
    [second] = reconcile(now=again, control=prefect, reader=reader(ended))
    assert second.flow_run_id not in (None, repair.flow_run_id)
    assert len(audit(case.reference, "reconcile.case_started")) == 2
