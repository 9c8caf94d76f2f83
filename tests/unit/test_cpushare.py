"""A host's CPU share (demo/cpushare.py): the quota is set, processes started in it stay in it with
their children, and nothing is left behind, not even by a run that was killed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from demo import cpushare
from demo.cpushare import CpuShare, CpuShareError
from tests.conftest import require


@pytest.fixture(autouse=True)
def _needs_cgroups() -> None:
    reason = cpushare.unavailable()
    require(reason is None, f"CPU control groups: {reason}")


def _quota(path: Path) -> str:
    if (path / "cpu.cfs_quota_us").exists():
        quota, period = (
            (path / name).read_text().strip() for name in ("cpu.cfs_quota_us", "cpu.cfs_period_us")
        )
        return f"{quota} {period}"
    return (path / "cpu.max").read_text().strip()


def test_a_share_caps_its_processes_and_their_children_and_goes_away() -> None:
    share = CpuShare(7, 0.25).open()
    assert share.path is not None
    path = share.path
    try:
        assert _quota(path) == "25000 100000"
        # the child joins before it runs its command; what it starts is born in the group
        child = subprocess.Popen(
            [sys.executable, "-c", "import subprocess,sys; subprocess.run(['sleep', '30'])"],
            preexec_fn=share.join,
        )
        try:
            for _ in range(100):
                if len(share.members()) == 2:
                    break
                time.sleep(0.05)
            members = share.members()
            assert child.pid in members
            assert len(members) == 2, members  # python and its sleep
            assert os.getpid() not in members  # the parent stays outside
        finally:
            subprocess.run(["pkill", "-KILL", "-P", str(child.pid)], check=False)
            child.kill()
            child.wait()
    finally:
        share.close()
    assert not path.exists()


def test_a_process_that_wants_more_than_its_share_is_held_back() -> None:
    share = CpuShare(8, 0.1).open()
    assert share.path is not None
    try:
        busy = "import time\nend = time.monotonic() + 0.6\nwhile time.monotonic() < end: pass"
        subprocess.run([sys.executable, "-c", busy], preexec_fn=share.join, check=True)
        stat = dict(
            line.split() for line in (share.path / "cpu.stat").read_text().splitlines() if line
        )
        # a tenth of a core is 10 ms per 100 ms period: a busy loop of 0.6 s is throttled
        assert int(stat["nr_throttled"]) >= 1, stat
    finally:
        share.close()


def test_a_share_needs_a_positive_number_of_cores() -> None:
    with pytest.raises(CpuShareError, match="more than 0"):
        CpuShare(0, 0).open()


def test_the_group_of_a_killed_run_is_removed_by_the_next_one() -> None:
    base, _ = cpushare._hierarchy()
    # a run whose owner is gone: pid 2**22 + 1 is above Linux's largest pid
    stale = base / f"{cpushare.PREFIX}-{2**22 + 1}-0"
    stale.mkdir()
    mine = base / f"{cpushare.PREFIX}-{os.getpid()}-9"
    mine.mkdir()
    try:
        removed = cpushare.remove_stale()
        assert stale.name in removed
        assert not stale.exists()
        assert mine.exists()  # this process is alive: its groups are its own
    finally:
        for group in (stale, mine):
            if group.exists():
                group.rmdir()
