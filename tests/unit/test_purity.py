"""The pure core imports only the standard library, pydantic and models, and reads no clock."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE_MODULES = [
    "models/enums.py",
    "models/lifecycle.py",
    "models/policy.py",
    "models/plan.py",
]
FORBIDDEN = {"prefect", "sqlmodel", "sqlalchemy", "apprise", "jinja2"}


def imported_roots(source: str) -> set[str]:
    """Return the top-level packages a module imports (relative imports count as `models`)."""
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add("models" if node.level else (node.module or "").split(".")[0])
    return roots


def impure(source: str) -> set[str]:
    """Return the imports that the pure core may not use."""
    allowed = set(sys.stdlib_module_names) | {"pydantic", "models"}
    return imported_roots(source) - allowed


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_only_stdlib_pydantic_and_models(module: str) -> None:
    source = (ROOT / module).read_text(encoding="utf-8")
    assert "pydantic" in imported_roots(source) or module == "models/enums.py"
    assert impure(source) == set()


@pytest.mark.parametrize("name", sorted(FORBIDDEN))
def test_the_check_catches_forbidden_imports(name: str) -> None:
    assert impure(f"import {name}\n") == {name}
    assert impure(f"from {name}.sub import thing\n") == {name}
    assert impure(f"def f() -> None:\n    import {name}.x as y\n") == {name}
    assert impure("from . import enums\nimport json\nimport pydantic_core\n") == {"pydantic_core"}


def test_importing_the_core_loads_no_infrastructure() -> None:
    # Catches what an AST scan cannot: something pulled in indirectly through an import.
    code = (
        "import sys, models.enums, models.lifecycle, models.policy, models.plan\n"
        "models.policy.load_policy()\n"
        "models.plan.load_plan_templates()\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert FORBIDDEN.isdisjoint(result.stdout.split())


@pytest.mark.parametrize("module", ["models/lifecycle.py", "models/policy.py", "models/plan.py"])
def test_pure_functions_never_read_the_clock(module: str) -> None:
    tree = ast.parse((ROOT / module).read_text(encoding="utf-8"))
    calls = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    assert calls.isdisjoint({"now", "utcnow", "today", "time", "monotonic"})
