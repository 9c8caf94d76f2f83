"""Imports point one way, form no cycle, and flow and task modules stay short.

The modules are parsed, never imported: every `import` and `from ... import` statement counts,
wherever it stands (inside functions and `if TYPE_CHECKING:` blocks too). The layers and their
arrows are those of docs/architecture.md (Layers); `demo/` is a driver that may import anything.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("flows", "tasks", "models", "notifications", "demo")
# What each layer may import of ours (the arrows compose: flows may name models directly).
ALLOWED: dict[str, frozenset[str]] = {
    "flows": frozenset({"flows", "tasks", "models", "notifications"}),
    "tasks": frozenset({"tasks", "models", "notifications"}),
    "notifications": frozenset({"notifications", "models"}),
    "models": frozenset({"models"}),
    "demo": frozenset(LAYERS),
}
SHORT_LAYERS = ("flows", "tasks")
MAX_LINES = 500

Graph = dict[str, set[str]]


# --- reading the tree ----------------------------------------------------------------------------


def read_tree(root: Path, layers: Iterable[str] = LAYERS) -> dict[str, str]:
    """Return the source of every module of the layers, by path relative to the root."""
    return {
        path.relative_to(root).as_posix(): path.read_text(encoding="utf-8")
        for layer in layers
        for path in sorted((root / layer).rglob("*.py"))
    }


def module_name(path: str) -> str:
    """Return the dotted name of a relative path (a package's `__init__.py` is the package)."""
    parts = path.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(name: str, modules: set[str]) -> str:
    """Return the longest prefix of a dotted name that is one of the modules (else the name)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if (prefix := ".".join(parts[:end])) in modules:
            return prefix
    return name


def imports_of(path: str, source: str, modules: set[str]) -> set[str]:
    """Return the modules of ours that one module imports, anywhere in its body."""
    here = module_name(path)
    package = here if path.endswith("__init__.py") else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Import):
            found |= {_resolve(alias.name, modules) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base_name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                base_name = node.module or ""
            for alias in node.names:
                # `from tasks.steps import plan` imports the module tasks.steps.plan when it exists
                submodule = f"{base_name}.{alias.name}"
                found.add(submodule if submodule in modules else _resolve(base_name, modules))
    return {name for name in found if name.split(".")[0] in LAYERS}


def import_graph(sources: Mapping[str, str]) -> Graph:
    """Return, for every module, the modules of ours it imports."""
    modules = {module_name(path) for path in sources}
    return {
        module_name(path): imports_of(path, source, modules) for path, source in sources.items()
    }


# --- the checks ----------------------------------------------------------------------------------


def direction_violations(graph: Mapping[str, set[str]]) -> list[str]:
    """Return each import that goes against the layers' arrows, as a sentence."""
    found = []
    for module in sorted(graph):
        layer = module.split(".")[0]
        allowed = ALLOWED.get(layer, frozenset())
        for target in sorted(graph[module]):
            if target.split(".")[0] not in allowed:
                found.append(
                    f"{module} imports {target} ({layer} may import only "
                    f"{', '.join(sorted(allowed))})"
                )
    return found


def _components(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components of the graph (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            target = next(targets, None)
            if target is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
            elif target not in index:
                index[target] = low[target] = len(index)
                stack.append(target)
                on_stack.add(target)
                work.append((target, iter(sorted(graph.get(target, ())))))
            elif target in on_stack:
                low[node] = min(low[node], index[target])
    return components


def cycle_through(graph: Mapping[str, set[str]], start: str) -> list[str] | None:
    """Return a shortest import path from a module back to itself, or None."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph.get(node, ())):
                if target == start:
                    return [*paths[node], start]
                if target not in paths:
                    paths[target] = [*paths[node], target]
                    following.append(target)
        frontier = following
    return None


def import_cycles(graph: Mapping[str, set[str]]) -> list[str]:
    """Return one cycle, as `a → b → a`, for each group of modules that import each other."""
    found = []
    for component in _components(graph):
        cycle = cycle_through(graph, component[0])
        if cycle is not None:
            others = len(component) - len(cycle) + 1
            noun = "module" if others == 1 else "modules"
            more = f" (and {others} more {noun} in the same cycle group)" if others else ""
            found.append(" → ".join(cycle) + more)
    return sorted(found)


def long_modules(
    sources: Mapping[str, str], layers: Iterable[str] = SHORT_LAYERS, limit: int = MAX_LINES
) -> list[str]:
    """Return each module of the layers longer than the limit, with its length."""
    return [
        f"{path}: {lines} lines (limit {limit})"
        for path, source in sorted(sources.items())
        if path.split("/")[0] in layers and (lines := len(source.splitlines())) > limit
    ]


# --- the real tree -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree() -> dict[str, str]:
    return read_tree(ROOT)


@pytest.fixture(scope="module")
def graph(tree: dict[str, str]) -> Graph:
    return import_graph(tree)


def test_the_scan_sees_every_layer_and_its_imports(graph: Graph) -> None:
    assert {module.split(".")[0] for module in graph} == set(LAYERS)
    # a few imports known to be there, in the forms the scan must read
    assert "tasks.steps.base" in graph["tasks.steps.verify"]
    assert "tasks.steps.table" in graph["tasks.decisions.requests"]
    assert graph["models.enums"] <= {"models"}


@pytest.mark.parametrize("layer", LAYERS)
def test_imports_point_one_way(graph: Graph, layer: str) -> None:
    mine = {module: targets for module, targets in graph.items() if module.split(".")[0] == layer}
    violations = direction_violations(mine)
    assert not violations, "imports against the layers:\n" + "\n".join(violations)


def test_no_import_cycles(graph: Graph) -> None:
    cycles = import_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("layer", SHORT_LAYERS)
def test_flow_and_task_modules_are_short(tree: dict[str, str], layer: str) -> None:
    too_long = long_modules(tree, layers=[layer])
    assert not too_long, "modules to split:\n" + "\n".join(too_long)


# --- the checks can fail -------------------------------------------------------------------------


def test_the_scan_reads_every_import_form() -> None:
    sources = {
        "tasks/__init__.py": "",
        "tasks/steps/__init__.py": "from . import base\n",
        "tasks/steps/base.py": "import models.enums as enums\nfrom models import forms\n",
        "tasks/steps/plan.py": "from .base import DecisionSpec\nfrom .. import store\n",
        "tasks/store/__init__.py": "",
        "tasks/store/db.py": (
            "from __future__ import annotations\n"
            "import json\n"
            "def engine() -> None:\n"
            "    from tasks.steps import plan, missing\n"
            "    import prefect\n"
        ),
        "models/__init__.py": "",
        "models/enums.py": "",
        "models/forms.py": "",
        "flows/__init__.py": "",
        "flows/cli/__init__.py": "from .common import out\nfrom ..asking import ask\n",
        "flows/cli/common.py": "from tasks.steps.base import thing\nimport tasks.steps.plan\n",
        "flows/asking.py": "",
    }
    assert import_graph(sources) == {
        "tasks": set(),
        "tasks.steps": {"tasks.steps.base"},
        "tasks.steps.base": {"models.enums", "models.forms"},
        "tasks.steps.plan": {"tasks.steps.base", "tasks.store"},
        "tasks.store": set(),
        # a name that is not a submodule counts as an import of its package
        "tasks.store.db": {"tasks.steps.plan", "tasks.steps"},
        "models": set(),
        "models.enums": set(),
        "models.forms": set(),
        "flows": set(),
        "flows.cli": {"flows.cli.common", "flows.asking"},
        "flows.cli.common": {"tasks.steps.base", "tasks.steps.plan"},
        "flows.asking": set(),
    }


def test_the_check_reports_a_cycle_with_its_path() -> None:
    sources = {
        "tasks/a.py": "from tasks import b\n",
        "tasks/b.py": "def later() -> None:\n    import tasks.c\n",
        "tasks/c.py": "from .a import thing\n",
        "tasks/d.py": "from . import a\n",
        "tasks/e.py": "import tasks.e\n",
    }
    assert import_cycles(import_graph(sources)) == [
        "tasks.a → tasks.b → tasks.c → tasks.a",
        "tasks.e → tasks.e",
    ]


def test_the_check_reports_every_module_of_a_cycle_group() -> None:
    graph = {"tasks.a": {"tasks.b", "tasks.c"}, "tasks.b": {"tasks.a"}, "tasks.c": {"tasks.a"}}
    assert import_cycles(graph) == [
        "tasks.a → tasks.b → tasks.a (and 1 more module in the same cycle group)"
    ]


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        pytest.param(
            "models/tables.py",
            "from tasks.store import db\n",
            "models.tables imports tasks.store",
            id="models-to-tasks",
        ),
        pytest.param(
            "models/enums.py",
            "import notifications.outbox\n",
            "models.enums imports notifications.outbox",
            id="models-to-notifications",
        ),
        pytest.param(
            "tasks/steps/plan.py",
            "from flows.asking import ask\n",
            "tasks.steps.plan imports flows.asking",
            id="tasks-to-flows",
        ),
        pytest.param(
            "tasks/drain.py",
            "def send() -> None:\n    import flows.serve\n",
            "tasks.drain imports flows.serve",
            id="tasks-to-flows-in-a-function",
        ),
        pytest.param(
            "tasks/store/db.py",
            "from ...demo import scripted\n",
            "tasks.store.db imports demo.scripted",
            id="tasks-to-demo-relative",
        ),
        pytest.param(
            "flows/serve.py",
            "from demo.catchers import Catcher\n",
            "flows.serve imports demo.catchers",
            id="flows-to-demo",
        ),
        pytest.param(
            "notifications/send.py",
            "from tasks import drain\n",
            "notifications.send imports tasks.drain",
            id="notifications-to-tasks",
        ),
    ],
)
def test_the_check_reports_an_import_against_the_layers(
    path: str, source: str, expected: str
) -> None:
    others = ["tasks/store/__init__.py", "tasks/drain.py", "flows/asking.py", "flows/serve.py"]
    others += ["demo/scripted.py", "demo/catchers.py", "notifications/outbox.py"]
    sources = {**dict.fromkeys(others, ""), path: source}
    violations = direction_violations(import_graph(sources))
    assert len(violations) == 1 and violations[0].startswith(expected), violations


def test_demo_may_import_anything_and_layers_their_own() -> None:
    sources = {
        "demo/__main__.py": "import flows.serve, tasks.drain, models.enums, notifications.send\n",
        "flows/serve.py": "import flows.asking, tasks.drain, models.enums, notifications.send\n",
        "tasks/drain.py": "import tasks.store, models.enums, notifications.send\n",
        "notifications/send.py": "import notifications.render, models.enums\n",
        "models/enums.py": "import models.lifecycle, json, prefect\n",
    }
    assert direction_violations(import_graph(sources)) == []


def test_the_check_reports_long_flow_and_task_modules() -> None:
    sources = {
        "flows/fine.py": "x = 1\n" * MAX_LINES,
        "flows/cli/__init__.py": "x = 1\n" * (MAX_LINES + 1),
        "tasks/web/page.py": "x = 1\n" * 900,
        "models/tables.py": "x = 1\n" * 900,
    }
    assert long_modules(sources) == [
        "flows/cli/__init__.py: 501 lines (limit 500)",
        "tasks/web/page.py: 900 lines (limit 500)",
    ]


def test_one_more_edge_in_the_real_tree_closes_a_reported_cycle(graph: Graph) -> None:
    # Pretend the step contract imported the decision engine, which reads the steps' table.
    assert cycle_through(graph, "tasks.steps.base") is None
    extra = {**graph, "tasks.steps.base": graph["tasks.steps.base"] | {"tasks.decisions.requests"}}
    cycle = cycle_through(extra, "tasks.steps.base")
    assert cycle is not None and cycle[:2] == ["tasks.steps.base", "tasks.decisions.requests"]
    assert cycle[-1] == "tasks.steps.base"
    new = set(import_cycles(extra)) - set(import_cycles(graph))
    assert new and any("tasks.steps.base" in line for line in new), new
