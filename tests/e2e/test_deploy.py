"""prefect.yaml: `prefect deploy --all` against a server that has the process work pool."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from flows.local.stack import LocalStack, free_port
from tests.conftest import ROOT

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

EXPECTED = {
    "remediation-case": "flows/remediation_case.py:remediation_case",
    "verify-allegation": "flows/verify_allegation.py:verify_allegation",
    "determine-response": "flows/determine_response.py:determine_response",
    "design-action-plan": "flows/design_action_plan.py:design_action_plan",
    "implement-and-monitor": "flows/implement_and_monitor.py:implement_and_monitor",
    "close-incident": "flows/close_incident.py:close_incident",
    "capture-lessons": "flows/capture_lessons.py:capture_lessons",
    "deliver-notifications": "flows/deliver_notifications.py:deliver_notifications",
    "monitor-milestones": "flows/monitor_milestones.py:monitor_milestones",
}


def test_prefect_deploy_all(tmp_path: Path) -> None:
    # its own server: these deployments would replace the ones the session's runner serves
    stack = LocalStack(home=tmp_path, port=free_port())
    stack.start_server()
    try:
        env = stack.client_env() | {"PREFECT_HOME": str(tmp_path / "client")}
        prefect = [sys.executable, "-m", "prefect", "--no-prompt"]

        def run(*argv: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*prefect, *argv],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=300,
                check=False,
            )

        pool = run("work-pool", "create", "remedy-process", "--type", "process")
        assert pool.returncode == 0, pool.stdout + pool.stderr
        deployed = run("deploy", "--all")
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr

        api = stack.api_url
        rows = httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()
        found = {d["name"]: d for d in rows}
        assert set(found) == set(EXPECTED)
        for name, entrypoint in EXPECTED.items():
            assert found[name]["entrypoint"] == entrypoint
            assert found[name]["work_pool_name"] == "remedy-process"
            assert "remedy" in found[name]["tags"]
        schedules = found["deliver-notifications"]["schedules"]
        assert [x["schedule"]["interval"] for x in schedules] == [60.0]
        [hourly] = found["monitor-milestones"]["schedules"]
        assert hourly["schedule"]["cron"] == "0 * * * *" and hourly["active"]
        automations = httpx.post(f"{api}/automations/filter", json={}, timeout=10).json()
        [trigger] = [a for a in automations if "lessons-on-case-closed" in a["name"]]
        assert trigger["trigger"]["expect"] == ["remedy.case.closed"]
        [action] = trigger["actions"]
        assert action["deployment_id"] == found["capture-lessons"]["id"]
        assert action["parameters"] == {"case_ref": "{{ event.payload.case_ref }}"}
    finally:
        stack.stop()
