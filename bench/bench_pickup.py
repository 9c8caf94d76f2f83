"""What a pickup costs before the flow starts: CPU seconds to import each deployment's entrypoint.

Prefect starts a fresh Python process for every flow run (every pickup, also every resume of a
suspended run): `python -m prefect.engine` imports Prefect's engine, then the deployment's
entrypoint module (`flows/<module>.py`, tasks/orchestration/deployments.py). So what a step's
module imports is paid again at each pickup, on every case. Remedy's runner and workers fork
their flow runs from a process that imported all of it once instead (flows/prefork.py), so this is
what a pickup costs without that (REMEDY_FORK_PICKUPS=false, or a plain `prefect worker start`);
`python -m bench pipeline --fresh-pickups` measures whole pickups both ways.

For each entrypoint this starts, several times and one process after the other:

- `python -c "import prefect.engine, prefect.flow_engine; import flows.<module>"`: the import;
- the same followed by the modules the flow's tasks import when they run (step_tasks imports
  them lazily, so a pickup that runs the tasks pays for them too): the import plus the tasks.

and reads the CPU seconds (user + system) each child used from `resource.getrusage(
RUSAGE_CHILDREN)` before and after it. The baseline is Prefect alone (`import prefect.engine,
prefect.flow_engine`, what the engine imports before it loads a flow). Prints the median per
module, what Remedy adds on top of the baseline and the ratio total / baseline. `--root` measures
another checkout too (e.g. an older copy of the tree), in the same round-robin, to compare.
Figures only: it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import ROOT, say
from tasks.orchestration.deployments import entrypoint_modules
from tasks.orchestration.step_tasks import RUN_BY_TASKS

BASELINE = "prefect.engine, prefect.flow_engine"
# What a step flow's tasks (tasks/orchestration/step_tasks.py) import when they run, but the
# modules of steps 3 and 4 alone.
STEP_TASKS = tuple(m for m in RUN_BY_TASKS if not m.startswith("tasks.steps."))
# Flows whose tasks import less than a step's (the rest import STEP_TASKS).
TASKS_OF = {
    "flows.deliver_notifications": ("tasks.drain",),
    "flows.monitor_milestones": ("tasks.drain",),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repeat", type=int, default=7, help="fresh processes per module (median of these)"
    )
    parser.add_argument(
        "--module",
        action="append",
        default=None,
        help="measure only this module (e.g. flows.verify_allegation); may be given again",
    )
    parser.add_argument(
        "--root",
        action="append",
        type=Path,
        default=None,
        help="also measure the checkout at this directory (e.g. a copy of an older tree)",
    )


@dataclass
class Figure:
    """The CPU seconds of the fresh processes that imported one module in one checkout."""

    root: Path
    module: str
    with_tasks: bool
    cpu_s: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """Return the median CPU seconds."""
        return statistics.median(self.cpu_s)

    def code(self) -> str:
        """Return the child's program."""
        if self.module == BASELINE:
            return f"import {BASELINE}"
        code = f"import {BASELINE}; import {self.module}"
        if self.with_tasks:
            code += f"; import {', '.join(TASKS_OF.get(self.module, STEP_TASKS))}"
        return code


def child_cpu_seconds(code: str, root: Path) -> float:
    """Run `python -c code` in a fresh process in root; return the CPU seconds it used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run(args: argparse.Namespace) -> int:
    """Time a fresh import of Prefect's engine, then of each entrypoint; print the figures."""
    modules = args.module or entrypoint_modules()
    roots = [ROOT, *(r.resolve() for r in args.root or [])]
    figures = [Figure(root, BASELINE, False) for root in roots[:1]]
    figures += [
        Figure(root, module, with_tasks)
        for root in roots
        for module in modules
        for with_tasks in (False, True)
    ]
    # a first run of each (not counted) compiles what is not yet in __pycache__
    for figure in figures:
        child_cpu_seconds(figure.code(), figure.root)
    say(f"{len(figures)} programs, {args.repeat} fresh processes each")
    # round-robin, so a burst of load elsewhere on the machine spreads over every figure
    for _ in range(args.repeat):
        for figure in figures:
            figure.cpu_s.append(child_cpu_seconds(figure.code(), figure.root))
    _print(figures, roots, args)
    return 0


def _print(figures: list[Figure], roots: list[Path], args: argparse.Namespace) -> None:
    base = figures[0].median
    print()
    print(
        f"CPU seconds (user + system) of a fresh `python -c 'import {BASELINE}; import "
        f"<module>'`, median of {args.repeat}; `+ tasks`: then what its tasks import when they run"
    )
    print()
    print("| checkout | module | CPU s | min | max | Remedy adds (s) | total / Prefect |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for f in figures:
        label = "Prefect alone" if f.module == BASELINE else f.module
        label += " + tasks" if f.with_tasks else ""
        print(
            f"| {_name(f.root)} | {label} | {f.median:.2f} | {min(f.cpu_s):.2f} | "
            f"{max(f.cpu_s):.2f} | {f.median - base:+.2f} | {f.median / base:.2f} |"
        )
    print()
    for root in roots:
        for with_tasks in (False, True):
            medians = [
                f.median
                for f in figures
                if f.root == root and f.with_tasks == with_tasks and f.module != BASELINE
            ]
            if not medians:
                continue
            mean = statistics.mean(medians)
            what = "import + tasks" if with_tasks else "import"
            print(
                f"{_name(root)}, {what}: mean {mean:.2f} CPU s per pickup; Remedy adds "
                f"{mean - base:.2f} s on Prefect's {base:.2f} s "
                f"(Remedy / Prefect = {(mean - base) / base:.2f})"
            )


def _name(root: Path) -> str:
    return "this" if root == ROOT else str(root)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
