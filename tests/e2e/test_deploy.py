"""prefect.yaml: `prefect deploy --all` against a server that has the process work pool."""

from __future__ import annotations

from pathlib import Path

import pytest

from demo.scaled import register
from flows.local.stack import LocalStack, free_port
from tasks.orchestration.deployments import DEPLOYMENTS, LESSONS_TRIGGER, TAGS, WORK_POOL

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

EXPECTED = {d.name: d for d in DEPLOYMENTS}
BY_KIND = {d.kind: d.name for d in DEPLOYMENTS if d.kind != "called"}


def test_prefect_deploy_all(tmp_path: Path) -> None:
    # its own server: these deployments would replace the ones the session's runner serves
    stack = LocalStack(home=tmp_path, port=free_port())
    stack.start_server()
    try:
        # as README.md's scaled installation: `prefect work-pool create`, `prefect deploy --all`
        register(stack, tmp_path / "client")

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
