"""The deployment registry, prefect.yaml and the runner's deployments agree (no Prefect server)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from prefect import Flow
from prefect.flows import load_flow_from_entrypoint
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows import serve
from models.enums import Step
from models.settings import Settings, get_settings
from tasks.orchestration.deployments import (
    CASE_CLOSED_EVENT,
    DEPLOYMENTS,
    ENTRY,
    LESSONS_TRIGGER,
    STEP_DEPLOYMENTS,
    TAGS,
    WORK_POOL,
    Cron,
    Interval,
    case_resource_id,
    deployment_name,
)
from tests.conftest import ROOT

# The shipped defaults, without the environment: prefect.yaml is written for them.
DEFAULTS = Settings.model_construct()
BY_NAME = {d.name: d for d in DEPLOYMENTS}


@pytest.fixture(scope="module")
def prefect_yaml() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture
def in_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entrypoints are relative to the checkout, as for workers (prefect.yaml's pull step)."""
    monkeypatch.chdir(ROOT)


def test_the_registry_names_each_deployment_once_and_each_step_once() -> None:
    names = [d.name for d in DEPLOYMENTS]
    assert len(set(names)) == len(names) == 9
    assert set(STEP_DEPLOYMENTS) == set(Step)
    assert [d.step for d in DEPLOYMENTS if d.step is not None] == list(Step)
    assert ENTRY in DEPLOYMENTS and ENTRY.step is None and ENTRY.kind == "called"
    for d in DEPLOYMENTS:
        module = d.entrypoint.split(":")[0]
        assert module.startswith("flows/") and module.endswith(".py")
        assert deployment_name(d.name) == f"{d.name}/{d.name}"
    kinds = {d.name: d.kind for d in DEPLOYMENTS if d.kind != "called"}
    assert kinds == {
        "capture-lessons": "event",
        "deliver-notifications": "interval",
        "monitor-milestones": "cron",
    }
    assert STEP_DEPLOYMENTS[Step.LESSONS].start is LESSONS_TRIGGER


def test_the_closure_trigger_matches_the_event_handover_emits() -> None:
    assert LESSONS_TRIGGER.expect == CASE_CLOSED_EVENT
    pattern = LESSONS_TRIGGER.match["prefect.resource.id"]
    assert pattern.endswith(".*")
    assert case_resource_id("RC-2026-0007") == pattern[:-1] + "rc-2026-0007"


def test_prefect_yaml_declares_exactly_the_registry(prefect_yaml: dict[str, Any]) -> None:
    declared = prefect_yaml["deployments"]
    assert [d["name"] for d in declared] == [d.name for d in DEPLOYMENTS]
    for row in declared:
        entry = BY_NAME[row["name"]]
        assert row["entrypoint"] == entry.entrypoint
        assert row["description"] == entry.description
        assert row["tags"] == list(TAGS)
        assert row["work_pool"]["name"] == WORK_POOL
        assert row["work_pool"]["job_variables"] == {}  # secrets are never job variables


def test_prefect_yaml_has_the_registry_trigger_and_schedules(prefect_yaml: dict[str, Any]) -> None:
    for row in prefect_yaml["deployments"]:
        entry = BY_NAME[row["name"]]
        triggers, schedules = row.get("triggers", []), row.get("schedules", [])
        if entry.kind == "event":
            assert triggers == [
                {
                    "type": "event",
                    "name": LESSONS_TRIGGER.name,
                    "enabled": True,
                    "match": dict(LESSONS_TRIGGER.match),
                    "expect": [LESSONS_TRIGGER.expect],
                    "parameters": dict(LESSONS_TRIGGER.parameters),
                }
            ]
        else:
            assert triggers == []
        if isinstance(entry.start, Cron):
            [schedule] = schedules
            assert schedule["cron"] == entry.start.cron(DEFAULTS) == "0 * * * *"
            assert schedule["timezone"] == "UTC" and schedule["active"]
        elif isinstance(entry.start, Interval):
            [schedule] = schedules
            assert schedule["interval"] == entry.start.seconds(DEFAULTS) == 60
            assert schedule["active"]
        else:
            assert schedules == []


@pytest.mark.usefixtures("in_checkout")
@pytest.mark.parametrize("entry", DEPLOYMENTS, ids=lambda d: d.name)
def test_each_entrypoint_is_a_flow_named_after_its_deployment(entry: Any) -> None:
    # the way a worker loads it (by file path) and the way the runner does (by module)
    by_path = load_flow_from_entrypoint(entry.entrypoint, use_placeholder_flow=False)
    assert isinstance(by_path, Flow) and by_path.name == entry.name
    loaded = serve.load_flow(entry)
    assert isinstance(loaded, Flow) and loaded.name == entry.name


@pytest.mark.usefixtures("in_checkout")
def test_the_runner_builds_exactly_the_registry_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMEDY_MONITOR_CRON", "*/5 * * * *")
    monkeypatch.setenv("REMEDY_DELIVERY_DRAIN_SECONDS", "30")
    get_settings.cache_clear()
    # nothing listens there: building the deployments must not need a server
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        built = serve.deployments()
    assert [d.name for d in built] == [d.name for d in DEPLOYMENTS]
    for deployment in built:
        entry = BY_NAME[deployment.name]
        assert deployment.flow_name == entry.name
        assert deployment.entrypoint == entry.entrypoint
        assert deployment.tags == list(TAGS)
        schedules = [s.schedule.model_dump() for s in deployment.schedules]
        if entry.kind == "cron":
            [schedule] = schedules
            assert schedule["cron"] == "*/5 * * * *"  # from the settings
        elif entry.kind == "interval":
            [schedule] = schedules
            assert schedule["interval"].total_seconds() == 30  # from the settings
        else:
            assert schedules == []
        if entry.kind == "event":
            [trigger] = deployment.triggers
            assert trigger.name == LESSONS_TRIGGER.name
            assert trigger.expect == {CASE_CLOSED_EVENT}
            assert trigger.match.model_dump() == dict(LESSONS_TRIGGER.match)
            assert trigger.parameters == dict(LESSONS_TRIGGER.parameters)
        else:
            assert deployment.triggers == []
