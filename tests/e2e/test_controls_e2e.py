"""Case controls against the session's real server and runner: a hold cancels the run waiting in
the held step, and renewed consent starts the step again, whose decisions are asked afresh."""

from __future__ import annotations

from pathlib import Path

import pytest

from demo.scripted import ScriptedStakeholders
from models.enums import CaseState
from tests.e2e.conftest import E2E
from tests.e2e.helpers import latest_artifact, open_case, wait_for
from tests.e2e.test_robustness import wait_final, waiting_kind
from tests.integration.test_intake import run_cli

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


def test_a_hold_cancels_the_waiting_run_and_renewal_starts_the_step_again(
    live: E2E, examples: Path, tmp_path: Path
) -> None:
    from tasks.decisions.requests import waiting_requests

    ref = open_case(examples, tmp_path)
    wait_for(lambda: waiting_kind(ref) == "screening", what="screening to wait")
    [request] = waiting_requests(ref)
    held_run = request.flow_run_id
    assert held_run is not None

    assert run_cli("consent", "withdraw", ref, "P-02", "--by", "lena.lead") == 0
    assert waiting_requests(ref) == []
    assert wait_final(held_run) == "Cancelled"  # nobody can resume a decision no longer needed
    view = latest_artifact(f"case-{ref.lower()}") or ""
    assert "State: `on_hold`" in view and "## Waiting decisions\n\nNone." in view

    # the case lead cannot renew for someone whose consent stands; the representative can
    assert run_cli("consent", "renew", ref, "P-01", "--by", "grace.advocate") == 1
    assert run_cli("consent", "renew", ref, "P-02", "--by", "grace.advocate") == 0
    wait_for(lambda: waiting_kind(ref) == "screening", what="screening to be asked afresh")
    [again] = waiting_requests(ref)
    assert again.scope == "entry-2" and again.flow_run_id not in (None, held_run)
    ScriptedStakeholders().drive(ref, until=CaseState.DETERMINING_RESPONSE, timeout=180)
