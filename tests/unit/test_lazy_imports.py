"""A step's flow process imports only what the step uses (issue 11, cheaper pickups).

A runner or worker starts a fresh Python process for every pickup and imports the deployment's
entrypoint module; whatever that module imports is paid again at each pickup. The heavy libraries
below serve only some runs (apprise and jinja2 only once a notification is due, webauthn only on
the approval page) or other processes (the approval page, the command line, the lessons report),
so importing an entrypoint must not load them: they are imported where they are used.

Each entrypoint is imported in a fresh interpreter (imports accumulate in one), all at once,
followed by what the step flows' tasks import when they run (tasks/orchestration/step_tasks.py
imports them lazily): a pickup loads those too, so they must not bring the heavy ones back.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tasks.orchestration.deployments import DEPLOYMENTS, entrypoint_modules
from tasks.orchestration.step_tasks import RUN_BY_TASKS

ROOT = Path(__file__).resolve().parents[2]
# Loaded on first use, never by importing an entrypoint.
HEAVY = (
    "apprise",  # sending (notifications/send.py); loads all its plugins
    "markdown",  # apprise's markdown conversion
    "jinja2",  # rendering a notification (notifications/render.py)
    "markupsafe",
    "webauthn",  # passkeys on the approval page (tasks/web/passkeys.py)
    "cbor2",
    "pyasn1",
    "OpenSSL",
    "markdown_it",  # the approval page's markdown
    "flows.web",  # the approval page
    "flows.cli",  # the command line
    "tasks.web.enrolment",
    "tasks.web.enrol_page",
    "tasks.reports.lessons",  # the lessons report
    "tasks.reports.lessons_render",
)


def import_fresh(*modules: str) -> tuple[set[str], int]:
    """Import Prefect as the engine does, then the modules and what their tasks run, in a fresh
    interpreter; return its sys.modules and how many objects it set aside from the collector."""
    code = (
        "import gc, json, sys\n"
        "import prefect.engine, prefect.flow_engine\n"
        "frozen = gc.get_freeze_count()\n"
        f"import {', '.join(modules)}\n"
        f"import {', '.join(RUN_BY_TASKS)}\n"
        "print(json.dumps([sorted(sys.modules), gc.get_freeze_count() - frozen]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded, frozen = json.loads(done.stdout.splitlines()[-1])
    return set(loaded), frozen


def modules_after_import(*modules: str) -> set[str]:
    """Return sys.modules of a fresh interpreter that imported the modules (see import_fresh)."""
    return import_fresh(*modules)[0]


def heavy_in(modules: set[str]) -> list[str]:
    """Return the heavy modules (or any of their submodules) among the loaded ones."""
    return sorted(
        heavy for heavy in HEAVY if any(m == heavy or m.startswith(f"{heavy}.") for m in modules)
    )


def culprits(modules: list[str]) -> dict[str, list[str]]:
    """Return, for each entrypoint that loads any, the heavy modules it loads on its own."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        found = dict(zip(modules, pool.map(modules_after_import, modules), strict=True))
    return {module: heavy for module, loaded in found.items() if (heavy := heavy_in(loaded))}


@pytest.fixture(scope="module")
def all_entrypoints() -> tuple[set[str], int]:
    return import_fresh(*entrypoint_modules())


def test_no_entrypoint_loads_a_heavy_module(all_entrypoints: tuple[set[str], int]) -> None:
    # Every entrypoint has the same list, so one interpreter importing them all checks each
    # (a module none of them loads is loaded by no single one); only a failure looks closer.
    entrypoints = entrypoint_modules()
    assert len(entrypoints) == len(DEPLOYMENTS)
    loaded, _ = all_entrypoints
    assert set(entrypoints) <= loaded
    assert "sqlmodel" in loaded  # a real import: the case store is there
    if heavy_in(loaded):
        pytest.fail(f"heavy modules loaded with a step's flow: {culprits(entrypoints)}")


def test_prefect_s_objects_are_set_aside_from_the_collector(
    all_entrypoints: tuple[set[str], int],
) -> None:
    # tasks/__init__.py: our imports' full collections then skip what Prefect built before them
    _, frozen = all_entrypoints
    assert frozen > 10_000


def test_the_check_sees_a_heavy_module() -> None:
    assert heavy_in({"jinja2.runtime", "sqlmodel", "apprisely"}) == ["jinja2"]


def test_the_list_of_what_the_tasks_import_is_theirs() -> None:
    # RUN_BY_TASKS is what a fork server imports for every flow process (flows/prefork.py) and
    # what the checks above import: the modules step_tasks' functions import when they run
    tree = ast.parse((ROOT / "tasks" / "orchestration" / "step_tasks.py").read_text())
    lazily: set[str] = set()
    for function in (node for node in tree.body if isinstance(node, ast.FunctionDef)):
        for node in ast.walk(function):
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    path = ROOT / (submodule.replace(".", "/") + ".py")
                    lazily.add(submodule if path.exists() else node.module)
    assert lazily == set(RUN_BY_TASKS)
