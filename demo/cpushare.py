"""A host's CPU: a Linux control group that caps what its processes may use, in cores.

Two hosts on a 2-core machine share those cores with the Prefect server and PostgreSQL, so adding
the second worker cannot add capacity: whatever it uses, the server loses (bench/README.md,
`workers`). A real scaled installation gives each worker a machine of its own. This models that,
scaled down: each host's worker and the flow processes it starts run in a control group whose CPU
quota is a fraction of a core (say 0.5), so a host cannot take more than its machine would have,
and the server keeps the rest of the machine, as it would on its own hardware.

Works with the cgroup v1 `cpu` controller (`cpu.cfs_quota_us` under /sys/fs/cgroup/cpu) or
cgroup v2 (`cpu.max`, with `cpu` in the root's `cgroup.subtree_control`). Needs root. A group
left behind by a killed run (its name carries the dead owner's pid) is removed by the next
`CpuShare.open()`.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from demo.hosts import owner_alive

ROOT = Path("/sys/fs/cgroup")
PREFIX = "remedy-host"  # remedy-host-<owner pid>-<n>, as the hosts' namespaces are named
PERIOD_US = 100_000


class CpuShareError(RuntimeError):
    """No CPU controller this process may use."""


def _hierarchy() -> tuple[Path, str]:
    """Return the directory new groups go in and the file that sets their quota."""
    v1 = ROOT / "cpu"
    if (v1 / "cpu.cfs_quota_us").exists() and os.access(v1, os.W_OK):
        return v1, "cpu.cfs_quota_us"
    controllers = ROOT / "cgroup.subtree_control"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        return ROOT, "cpu.max"
    raise CpuShareError("no writable cgroup CPU controller (cgroup v1 cpu or v2 cpu.max)")


def unavailable() -> str | None:
    """Say why CPU shares cannot be made here, or None if they can."""
    if os.geteuid() != 0:
        return "CPU control groups need root"
    try:
        _hierarchy()
    except CpuShareError as exc:
        return str(exc)
    return None


def remove_stale() -> list[str]:
    """Delete the empty groups of runs that were killed; return their names."""
    base, _ = _hierarchy()
    removed = []
    for group in base.glob(f"{PREFIX}-*"):
        if group.is_dir() and not owner_alive(group.name):
            with contextlib.suppress(OSError):  # still holds a process: left for a later run
                group.rmdir()
                removed.append(group.name)
    return removed


@dataclass
class CpuShare:
    """One group capped at `cores` CPUs (0.5: half a core)."""

    number: int
    cores: float
    path: Path | None = None

    def open(self) -> CpuShare:
        """Create the group and set its quota."""
        if self.cores <= 0:
            raise CpuShareError(f"a host needs more than {self.cores} cores")
        base, quota_file = _hierarchy()
        remove_stale()
        self.path = base / f"{PREFIX}-{os.getpid()}-{self.number}"
        self.path.mkdir(exist_ok=True)
        quota = max(1000, round(self.cores * PERIOD_US))
        if quota_file == "cpu.cfs_quota_us":
            (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.path / quota_file).write_text(str(quota))
        else:
            (self.path / quota_file).write_text(f"{quota} {PERIOD_US}")
        return self

    def join(self) -> None:
        """Move the calling process into the group; its children are born in it. Called in a
        child before it executes its command (subprocess's preexec_fn)."""
        if self.path is None:
            raise CpuShareError("the group is not open")
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def members(self) -> list[int]:
        """Return the processes in the group."""
        if self.path is None:
            return []
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def close(self, timeout: float = 5.0) -> None:
        """Remove the group once its processes are gone (the hosts kill them first; a killed
        process whose parent died stays in the group until init reaps it, so this waits up to
        `timeout` seconds; a group still busy then is left to the next run's remove_stale)."""
        if self.path is None:
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.path.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.05)
        self.path = None
