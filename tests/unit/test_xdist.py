"""`make test` runs on two pytest-xdist workers and keeps the tests on the session's Prefect
server on one of them (tests/conftest.py, `pytest_collection_modifyitems`): one server a session.
This runs a small suite the same way and checks the grouping holds with the installed versions
(pytest 9.2 silently stopped it: pyproject.toml pins below it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GROUPED = """
import os
import pytest


@pytest.fixture
def e2e():  # named as the session server's fixture: the hook groups by it
    return os.environ["PYTEST_XDIST_WORKER"]


@pytest.mark.parametrize("i", range(6))
def test_on_the_server(e2e, i):
    pass


@pytest.mark.parametrize("i", range(6))
def test_elsewhere(i):
    pass
"""


def test_the_session_server_tests_share_one_worker(tmp_path: Path) -> None:
    pytest.importorskip("xdist")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_grouped.py").write_text(GROUPED)
    # the checkout's own hook, nothing else of its conftest
    (tmp_path / "tests" / "conftest.py").write_text(
        "from tests.conftest import pytest_collection_modifyitems  # noqa: F401\n"
    )
    argv = [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v"]
    argv += ["-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path / "tests")]
    done = subprocess.run(
        argv,
        cwd=ROOT,  # where `tests.conftest` imports from
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # "[gw1] [ 50%] PASSED tests/test_grouped.py::test_on_the_server[3]@prefect-session"
    lines = [line.split() for line in done.stdout.splitlines() if "PASSED" in line]
    grouped = {w[0] for w in lines if "test_on_the_server" in w[-1]}
    elsewhere = {w[0] for w in lines if "test_elsewhere" in w[-1]}
    assert len(grouped) == 1, done.stdout
    assert len(lines) == 12, done.stdout
    assert elsewhere, done.stdout
