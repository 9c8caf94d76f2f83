"""One case through all six steps: Remedy against the same six deployments with empty bodies.

Remedy: intake (the CLI, in process), `remedy start`, then ScriptedStakeholders take the ten
decisions and finish the milestones. The clock runs from intake to LESSONS_CAPTURED.

Baseline ("bare"): seven empty flows of the same shape, defined below -- an entry flow that starts
step 1; steps 1-3 and 5 suspend as often as Remedy's (3, 2, 2, 0, 2) on a trivial RunInput form and
then start the next step with run_deployment(as_subflow=False, idempotency_key, timeout=0); step 5
emits an event that a DeploymentEventTrigger turns into step 6, which suspends once. One runner
serves them with the same limit; a loop resumes each run as soon as it is Paused with its form
saved, retrying a REJECT. The clock runs from starting the entry run to step 6 Completed.

Each measurement gets a fresh Prefect server (PostgreSQL by default, a new database each) and a
fresh runner, so Remedy and the baseline run against the same server configuration.

Only the standard library, prefect and pydantic are imported at module level: the runner's flow
processes load this file to run the bare flows, and they must not pay for Remedy's imports.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from prefect import flow, serve
from prefect.deployments import run_deployment
from prefect.events import DeploymentEventTrigger, emit_event
from prefect.flow_runs import suspend_flow_run
from prefect.input import RunInput

# --- the baseline: seven empty flows with Remedy's shape ----------------------------------------

BARE_CLOSED_EVENT = "bench.bare.closed"
BARE_TAGS = ["bench"]
BARE_DEPLOYMENTS = 7


class Ack(RunInput):
    """A trivial decision form."""

    ok: bool = True


def _start_next(flow_name: str, case_ref: str) -> None:
    run_deployment(
        f"{flow_name}/{flow_name}",
        parameters={"case_ref": case_ref},
        as_subflow=False,
        idempotency_key=f"{case_ref.lower()}-{flow_name}",
        timeout=0,
        tags=[f"case:{case_ref}"],
    )


def _ask(key: str) -> None:
    suspend_flow_run(wait_for_input=Ack, key=key, timeout=None)


@flow(name="bare-case", flow_run_name="case-{case_ref}", retries=0)
def bare_case(case_ref: str) -> str:
    """Start step 1."""
    _start_next("bare-verify", case_ref)
    return "started"


@flow(name="bare-verify", flow_run_name="verify-{case_ref}", retries=0)
def bare_verify(case_ref: str) -> str:
    """Wait for screening, safety and verification, then start step 2."""
    for key in ("screening", "safety", "verification"):
        _ask(key)
    _start_next("bare-respond", case_ref)
    return "done"


@flow(name="bare-respond", flow_run_name="respond-{case_ref}", retries=0)
def bare_respond(case_ref: str) -> str:
    """Wait for the impact assessment and the response, then start step 3."""
    for key in ("impact-assessment", "response"):
        _ask(key)
    _start_next("bare-plan", case_ref)
    return "done"


@flow(name="bare-plan", flow_run_name="plan-{case_ref}", retries=0)
def bare_plan(case_ref: str) -> str:
    """Wait for the plan's agreement and budget, then start step 4."""
    for key in ("plan-agreement", "plan-budget"):
        _ask(key)
    _start_next("bare-implement", case_ref)
    return "done"


@flow(name="bare-implement", flow_run_name="implement-{case_ref}", retries=0)
def bare_implement(case_ref: str) -> str:
    """Start step 5 at once (Remedy's step 4 waits for milestones, not for a suspend)."""
    _start_next("bare-close", case_ref)
    return "done"


@flow(name="bare-close", flow_run_name="close-{case_ref}", retries=0)
def bare_close(case_ref: str) -> str:
    """Wait for the closure and its confirmation, then announce the closure."""
    for key in ("closure", "closure-confirmation"):
        _ask(key)
    emit_event(
        event=BARE_CLOSED_EVENT,
        resource={"prefect.resource.id": f"bench.bare.{case_ref.lower()}"},
        payload={"case_ref": case_ref},
    )
    return "closed"


@flow(name="bare-lessons", flow_run_name="lessons-{case_ref}", retries=0)
def bare_lessons(case_ref: str) -> str:
    """Wait for the lessons."""
    _ask("lessons")
    return "lessons recorded"


def serve_bare() -> None:
    """Serve the bare deployments from one runner, with Remedy's runner limit."""
    trigger = DeploymentEventTrigger(
        name="bare-lessons-on-closed",
        expect={BARE_CLOSED_EVENT},
        match={"prefect.resource.id": "bench.bare.*"},
        parameters={"case_ref": "{{ event.payload.case_ref }}"},
    )
    steps = (bare_case, bare_verify, bare_respond, bare_plan, bare_implement, bare_close)
    built: list[Any] = [f.to_deployment(name=f.name, tags=BARE_TAGS) for f in steps]
    built.append(
        bare_lessons.to_deployment(name=bare_lessons.name, tags=BARE_TAGS, triggers=[trigger])
    )
    limit = int(os.environ.get("REMEDY_RUNNER_LIMIT", "8"))
    serve(*built, limit=limit, print_starting_message=True)


# --- measuring ----------------------------------------------------------------------------------


@dataclass
class RunStats:
    """What the flow runs of one case did, read from their state histories."""

    runs: int = 0
    pickups: int = 0  # Scheduled -> Running: a runner poll plus a fresh flow process
    pickup_wait_s: float = 0.0  # summed time from Scheduled to Running
    running_s: float = 0.0  # summed time in Running
    paused_s: float = 0.0  # summed time from Paused to the resume
    failed: list[str] = field(default_factory=list)


def run_stats(case_ref: str) -> RunStats:
    """Read every flow run of a case (by its case_ref parameter) and summarise its states."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType

    stats = RunStats()
    with get_client(sync_client=True) as client:
        runs = [
            r
            for r in client.read_flow_runs(limit=200)
            if (r.parameters or {}).get("case_ref") == case_ref
        ]
        for run in runs:
            stats.runs += 1
            states = sorted(client.read_flow_run_states(run.id), key=lambda s: s.timestamp)
            scheduled_at = None
            for i, state in enumerate(states):
                nxt = states[i + 1].timestamp if i + 1 < len(states) else None
                if state.type == StateType.SCHEDULED:
                    scheduled_at = state.timestamp
                elif state.type == StateType.RUNNING:
                    stats.pickups += 1
                    if scheduled_at is not None:
                        stats.pickup_wait_s += (state.timestamp - scheduled_at).total_seconds()
                        scheduled_at = None
                    if nxt is not None:
                        stats.running_s += (nxt - state.timestamp).total_seconds()
                elif state.type == StateType.PAUSED and nxt is not None:
                    stats.paused_s += (nxt - state.timestamp).total_seconds()
            final = states[-1] if states else None
            if final is None or final.type != StateType.COMPLETED:
                stats.failed.append(f"{run.name}: {final.name if final else 'no state'}")
    return stats


def _all_runs_final(case_ref: str, expected: int) -> bool:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = [
            r
            for r in client.read_flow_runs(limit=200)
            if (r.parameters or {}).get("case_ref") == case_ref
        ]
    return len(runs) >= expected and all(r.state is not None and r.state.is_final() for r in runs)


@dataclass
class Measurement:
    """One case through all six steps on one stack."""

    kind: str  # "remedy", "remedy-fresh" (pickups not forked) or "bare"
    poll: int
    limit: int
    server: str
    wall_s: float  # intake (remedy) / start (bare) -> lessons captured / lessons run completed
    done_s: float  # -> every run of the case in a final state
    decisions: int
    stats: RunStats
    runner_cpu_s: float
    server_cpu_s: float
    problems: int


def _cli(*argv: str) -> str:
    """Run a `remedy` command in this process; return what it printed."""
    import io
    from contextlib import redirect_stdout

    from flows.cli import main

    buf = io.StringIO()
    code = 0
    with redirect_stdout(buf):
        try:
            main(list(argv))
        except SystemExit as exc:
            code = int(exc.code or 0)
    if code != 0:
        raise RuntimeError(f"remedy {' '.join(argv)} exited with {code}: {buf.getvalue()}")
    return buf.getvalue()


def _sample_report(ws_root: Any) -> Any:
    import yaml

    from bench.common import EXAMPLES

    report = yaml.safe_load((EXAMPLES / "reports" / "tin-kivu.yaml").read_text())
    report["description"] += f" [bench {uuid.uuid4().hex[:8]}]"
    path = ws_root / f"report-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(report))
    return path


def measure_remedy(poll: int, server: str, keep: bool, *, fresh: bool = False) -> Measurement:
    """Take one fresh sample case from intake to lessons on a fresh Remedy stack (its runner's
    pickups forked, or with `fresh` each a fresh interpreter: REMEDY_FORK_PICKUPS)."""
    from bench.common import (
        cpu_seconds,
        local_stack,
        report_log_problems,
        say,
        server_database,
        settle_runner,
        talking_to,
        wait_until,
        workspace,
    )
    from demo.scripted import ScriptedStakeholders, Step
    from models.enums import CaseState
    from models.settings import get_settings

    with (
        workspace("pipeline-remedy", keep=keep) as ws,
        server_database(server, "pipeline") as server_db,
        local_stack(
            ws,
            server_db=server_db,
            poll_seconds=poll,
            extra_env={"REMEDY_FORK_PICKUPS": "false"} if fresh else None,
        ) as stack,
    ):
        say(f"remedy, poll {poll} s: server up at {stack.api_url}; starting the runner")
        stack.start_runner()
        limit = get_settings().runner_limit
        runner, srv = stack.processes["runner"].pid, stack.processes["prefect-server"].pid
        with talking_to(stack):
            report = _sample_report(ws.root)

            def note(step: Step) -> None:
                say(f"  {step.what} by {step.who}")

            people = ScriptedStakeholders(on_step=note)
            import flows.cli  # noqa: F401  # import before the clock starts: time Remedy, not imports
            import tasks.intake  # noqa: F401

            cpu0 = (cpu_seconds(runner), cpu_seconds(srv))
            t0 = time.monotonic()
            ref = _cli("intake", str(report), "--no-start").strip().splitlines()[0]
            _cli("start", ref)
            say(f"remedy: {ref} taken in and started")
            people.drive(ref, until=CaseState.LESSONS_CAPTURED, timeout=1200)
            wall = time.monotonic() - t0
            wait_until(lambda: _all_runs_final(ref, 7), timeout=120, what="runs to finish")
            done = time.monotonic() - t0
            cpu1 = (cpu_seconds(runner), cpu_seconds(srv))
            stats = run_stats(ref)
        settle_runner(stack)
        decisions = sum(1 for s in people.log if not s.what.startswith("milestone"))
        problems = report_log_problems(stack, ["runner"])
        return Measurement(
            "remedy-fresh" if fresh else "remedy",
            poll,
            limit,
            server,
            wall,
            done,
            decisions,
            stats,
            cpu1[0] - cpu0[0],
            cpu1[1] - cpu0[1],
            sum(p.count for p in problems),
        )


def _bare_ready(run: Any) -> bool:
    from prefect.client.schemas.objects import StateType

    state = run.state
    return bool(
        state is not None
        and state.type == StateType.PAUSED
        and state.state_details.pause_key
        and state.state_details.run_input_keyset
    )


def drive_bare(case_ref: str, *, timeout: float) -> int:
    """Resume every paused run of the case as soon as its form is saved; return the resumes."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.responses import SetStateStatus

    resumed: set[tuple[uuid.UUID, str]] = set()
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = [
                r
                for r in client.read_flow_runs(limit=200)
                if (r.parameters or {}).get("case_ref") == case_ref
            ]
            for run in runs:
                if not _bare_ready(run):
                    continue
                assert run.state is not None
                key = (run.id, str(run.state.state_details.pause_key))
                if key in resumed:
                    continue
                # a REJECT between suspension and the form being saved: retry, as
                # tasks.decisions.resume does
                while True:
                    result = client.resume_flow_run(run.id, run_input={"ok": True})
                    if result.status == SetStateStatus.ACCEPT:
                        break
                    if result.status not in (SetStateStatus.REJECT, SetStateStatus.WAIT):
                        raise RuntimeError(f"resume of {run.name} refused: {result.details}")
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"resume of {run.name} kept being rejected")
                    time.sleep(1.0)
                resumed.add(key)
            lessons = [r for r in runs if r.name == f"lessons-{case_ref}"]
            if lessons and lessons[0].state and lessons[0].state.type == StateType.COMPLETED:
                return len(resumed)
            time.sleep(0.5)
    raise TimeoutError(f"bare case {case_ref} did not finish in {timeout:.0f} s")


def measure_bare(poll: int, server: str, keep: bool) -> Measurement:
    """Take one bare case through the seven empty deployments on a fresh stack."""
    from bench.common import (
        ROOT,
        cpu_seconds,
        deployments_registered,
        local_stack,
        report_log_problems,
        say,
        server_database,
        settle_runner,
        start_process,
        talking_to,
        wait_until,
        workspace,
    )

    limit = int(os.environ.get("REMEDY_RUNNER_LIMIT", "8"))
    with (
        workspace("pipeline-bare", keep=keep) as ws,
        server_database(server, "pipeline") as server_db,
        local_stack(ws, server_db=server_db, poll_seconds=poll) as stack,
    ):
        say(f"bare, poll {poll} s: server up at {stack.api_url}; starting the bare runner")
        argv = [sys.executable, "-m", "bench.bench_pipeline", "--serve-bare"]
        start_process(stack, "runner", argv, deployments_registered(stack, BARE_DEPLOYMENTS))
        assert os.getcwd() == str(ROOT)
        runner, srv = stack.processes["runner"].pid, stack.processes["prefect-server"].pid
        with talking_to(stack):
            ref = f"BARE-{uuid.uuid4().hex[:8].upper()}"
            cpu0 = (cpu_seconds(runner), cpu_seconds(srv))
            t0 = time.monotonic()
            _start_next("bare-case", ref)
            say(f"bare: {ref} started")
            resumes = drive_bare(ref, timeout=1200)
            wall = time.monotonic() - t0
            wait_until(lambda: _all_runs_final(ref, 7), timeout=120, what="runs to finish")
            done = time.monotonic() - t0
            cpu1 = (cpu_seconds(runner), cpu_seconds(srv))
            stats = run_stats(ref)
        settle_runner(stack)
        problems = report_log_problems(stack, ["runner"])
        return Measurement(
            "bare",
            poll,
            limit,
            server,
            wall,
            done,
            resumes,
            stats,
            cpu1[0] - cpu0[0],
            cpu1[1] - cpu0[1],
            sum(p.count for p in problems),
        )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def summarise(results: list[Measurement]) -> str:
    """Return the table of every measurement and the ratio per poll interval."""
    from bench.common import grid

    header = [
        "kind",
        "poll",
        "wall s",
        "all done s",
        "decisions",
        "runs",
        "pickups",
        "s/pickup",
        "pickup wait",
        "running s",
        "paused s",
        "runner CPU s",
        "CPU s/pickup",
        "server CPU s",
        "failed",
        "log errs",
    ]
    rows = []
    for m in results:
        s = m.stats
        rows.append(
            [
                m.kind,
                m.poll,
                f"{m.wall_s:.1f}",
                f"{m.done_s:.1f}",
                m.decisions,
                s.runs,
                s.pickups,
                f"{m.wall_s / s.pickups:.2f}" if s.pickups else "-",
                f"{s.pickup_wait_s / s.pickups:.2f}" if s.pickups else "-",
                f"{s.running_s:.1f}",
                f"{s.paused_s:.1f}",
                f"{m.runner_cpu_s:.1f}",
                f"{m.runner_cpu_s / s.pickups:.2f}" if s.pickups else "-",
                f"{m.server_cpu_s:.1f}",
                len(s.failed),
                m.problems,
            ]
        )
    out = [grid("one case through six steps (per run)", header, rows)]
    ratio_rows = []
    for poll in sorted({m.poll for m in results}):
        remedy = [m for m in results if m.poll == poll and m.kind == "remedy"]
        bare = [m for m in results if m.poll == poll and m.kind == "bare"]
        if not remedy or not bare:
            continue
        rw, bw = _mean([m.wall_s for m in remedy]), _mean([m.wall_s for m in bare])
        rd, bd = _mean([m.done_s for m in remedy]), _mean([m.done_s for m in bare])
        rp = _mean([m.stats.pickups for m in remedy])
        bp = _mean([m.stats.pickups for m in bare])
        ratio_rows.append(
            [
                poll,
                remedy[0].limit,
                remedy[0].server,
                f"{rw:.1f}",
                f"{bw:.1f}",
                f"{rw / bw:.2f}x",
                f"{rd / bd:.2f}x",
                f"{rw / rp:.2f}",
                f"{bw / bp:.2f}",
                f"{(rw - bw) / rp:+.2f}",
                "yes" if rw / bw <= 2 else "NO",
            ]
        )
    if ratio_rows:
        header = [
            "poll",
            "limit",
            "server",
            "remedy s",
            "bare s",
            "ratio",
            "ratio all-done",
            "remedy s/pickup",
            "bare s/pickup",
            "extra s/pickup",
            "<= 2x",
        ]
        out.append("")
        out.append(grid("Remedy over Prefect's own (target <= 2x)", header, ratio_rows))
    for m in results:
        for f in m.stats.failed:
            out.append(f"NOT COMPLETED ({m.kind}, poll {m.poll}): {f}")
    return "\n".join(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the pipeline bench's options."""
    parser.add_argument(
        "--poll", default="1", help="runner poll seconds, comma-separated (default 1; e.g. 1,2)"
    )
    parser.add_argument("--server", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--only", choices=["both", "remedy", "bare"], default="both")
    parser.add_argument(
        "--fresh-pickups",
        action="store_true",
        help="also run Remedy with REMEDY_FORK_PICKUPS=false (a fresh interpreter per pickup)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="cases per configuration")
    parser.add_argument("--keep", action="store_true", help="keep temp dirs (logs) afterwards")


def run(args: argparse.Namespace) -> int:
    """Measure every configuration asked for and print the tables."""
    from bench.common import say

    polls = [int(p) for p in str(args.poll).split(",") if p.strip()]
    results: list[Measurement] = []
    for poll in polls:
        for i in range(args.repeat):
            # alternate the order so neither side always runs on a warmer machine
            order = ["bare", "remedy"] if i % 2 == 0 else ["remedy", "bare"]
            if args.fresh_pickups:
                order.insert(order.index("remedy") + i % 2, "remedy-fresh")
            for kind in order:
                if args.only not in ("both", kind.split("-")[0]):
                    continue
                if kind == "bare":
                    m = measure_bare(poll, args.server, args.keep)
                else:
                    m = measure_remedy(poll, args.server, args.keep, fresh=kind == "remedy-fresh")
                say(f"{kind}, poll {poll} s: {m.wall_s:.1f} s, {m.stats.pickups} pickups")
                results.append(m)
    print()
    print(summarise(results))
    print(
        "\nwall s: intake (bare: start) -> LESSONS_CAPTURED (bare: lessons run Completed); "
        "all done s: -> every run final;\npickup wait: mean Scheduled -> Running; running/paused "
        "s: summed over the case's runs; CPU: runner incl. its flow processes, and the server."
    )
    return 0


def main() -> None:
    """`python -m bench.bench_pipeline --serve-bare` (the baseline's runner), or the bench."""
    if "--serve-bare" in sys.argv[1:]:
        serve_bare()
        return
    from bench.__main__ import main as bench_main

    bench_main(["pipeline", *sys.argv[1:]])


if __name__ == "__main__":
    main()
