"""prefect.yaml: `prefect deploy --all` against a server that has the process work pool."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flows.local.stack import LocalStack, free_port
from tasks.orchestration.deployments import DEPLOYMENTS, LESSONS_TRIGGER, TAGS, WORK_POOL
from tests.conftest import ROOT

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

EXPECTED = {d.name: d for d in DEPLOYMENTS}
BY_KIND = {d.kind: d.name for d in DEPLOYMENTS if d.kind != "called"}


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

        api = stack.http()  # the API credential and a CSRF token: the server is locked
        rows = api.post("/deployments/filter", json={}).json()
        found = {d["name"]: d for d in rows}
        assert set(found) == set(EXPECTED)
        for name, expected in EXPECTED.items():
            assert found[name]["entrypoint"] == expected.entrypoint
            assert found[name]["description"] == expected.description
            assert found[name]["work_pool_name"] == WORK_POOL
            assert set(TAGS) <= set(found[name]["tags"])
        schedules = found[BY_KIND["interval"]]["schedules"]
        assert [x["schedule"]["interval"] for x in schedules] == [60.0]
        [hourly] = found[BY_KIND["cron"]]["schedules"]
        assert hourly["schedule"]["cron"] == "0 * * * *" and hourly["active"]
        automations = api.post("/automations/filter", json={}).json()
        api.close()
        [trigger] = [a for a in automations if LESSONS_TRIGGER.name in a["name"]]
        assert trigger["trigger"]["expect"] == [LESSONS_TRIGGER.expect]
        [action] = trigger["actions"]
        assert action["deployment_id"] == found[BY_KIND["event"]]["id"]
        assert action["parameters"] == dict(LESSONS_TRIGGER.parameters)
    finally:
        stack.stop()
