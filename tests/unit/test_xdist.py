"""`make test` runs on two pytest-xdist workers and keeps the tests on the session's Prefect
server on one of them (tests/conftest.py, `pytest_collection_modifyitems`): one server a session.
This runs a small suite the same way and checks the grouping holds with the installed versions
(pytest 9.2 silently stopped it: pyproject.toml pins below it), and that the test marked
`longest` is handed out first."""

from __future__ import annotations

import os
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
    done = _make_test(tmp_path)
    # "[gw1] [ 50%] PASSED tests/test_grouped.py::test_on_the_server[3]@prefect-session"
    lines = [line.split() for line in done.stdout.splitlines() if "PASSED" in line]
    grouped = {w[0] for w in lines if "test_on_the_server" in w[-1]}
    elsewhere = {w[0] for w in lines if "test_elsewhere" in w[-1]}
    assert len(grouped) == 1, done.stdout
    assert len(lines) == 12, done.stdout
    assert elsewhere, done.stdout


LONGEST = """
import os
import time
import pytest


def _started(name):
    with open(os.environ["STARTED"], "a") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"] + " " + name + "\\n")


@pytest.fixture
def e2e():
    return None


@pytest.mark.parametrize("i", range(4))
def test_on_the_server(e2e, i):
    _started(f"server{i}")


@pytest.mark.parametrize("i", range(8))
def test_quick(i):
    _started(f"quick{i}")


@pytest.mark.longest
def test_collected_last_but_longest():
    _started("longest")
    time.sleep(1)
"""


def test_the_longest_test_is_handed_out_first(tmp_path: Path) -> None:
    """Started last, the multi-host test (30 cases, most of the suite's time) would be the
    suite's tail: it starts first, on one worker, while the other takes the rest."""
    pytest.importorskip("xdist")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_longest.py").write_text(LONGEST)
    (tmp_path / "tests" / "conftest.py").write_text(
        "from tests.conftest import pytest_collection_modifyitems  # noqa: F401\n"
    )
    started = tmp_path / "started"
    done = _make_test(tmp_path, STARTED=str(started))
    ran = [line.split() for line in started.read_text().splitlines()]  # worker, test
    (worker,) = {w for w, name in ran if name == "longest"}
    # the first test its worker is given (when each worker starts depends on the machine's load)
    assert next(name for w, name in ran if w == worker) == "longest", ran
    # and the session server's tests go to the other worker, whatever comes after
    assert {w for w, name in ran if name.startswith("server")} == {"gw0", "gw1"} - {worker}, ran
    assert len(ran) == 13, done.stdout


def _make_test(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run tmp_path/tests as `make test` runs the suite (the Makefile's pytest line)."""
    line = next(x for x in (ROOT / "Makefile").read_text().splitlines() if "$(BIN)/pytest" in x)
    argv = [sys.executable, "-m", "pytest", *line.split()[1:], "-v", "-p", "no:cacheprovider"]
    argv += ["--rootdir", str(tmp_path), str(tmp_path / "tests")]
    done = subprocess.run(
        argv,
        cwd=ROOT,  # where `tests.conftest` imports from
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **env},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done
