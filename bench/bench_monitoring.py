"""The monitoring sweep at scale: 10,000 open cases, 100,000 milestones (SQLite and PostgreSQL).

Prints one sweep's wall time when 1% of cases have something due, the ratio to the bare SQL
queries that find the same rows (target: under 3x the bare queries plus a fixed cost per
affected case), a sweep with nothing due (target: under a second of work beyond Prefect's own
start-up), and peak memory.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
import tracemalloc
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.common import DEFAULT_ADMIN_URL, EXAMPLES, clear_remedy_caches, say


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--milestones", type=int, default=10, help="per case")
    parser.add_argument("--affected", type=float, default=0.01, help="share of cases with one due")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument(
        "--prefect",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the flow against a local Prefect server",
    )


def run(args: argparse.Namespace) -> int:
    from cryptography.fernet import Fernet

    os.environ["REMEDY_ENCRYPTION_KEY"] = Fernet.generate_key().decode()
    os.environ.pop("REMEDY_SMTP_URL", None)
    results = []
    results_prefect: dict[str, float] | None = None
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for backend in backends:
        tmp = Path(tempfile.mkdtemp(prefix=f"remedy-bench-monitor-{backend}-"))
        os.environ["REMEDY_HOME"] = str(tmp)
        schema = None
        if backend == "sqlite":
            os.environ["REMEDY_DATABASE_URL"] = f"sqlite:///{tmp / 'remedy.db'}"
            os.environ.pop("REMEDY_DATABASE_SCHEMA", None)
        else:
            admin = os.environ.get("REMEDY_BENCH_POSTGRES_URL", DEFAULT_ADMIN_URL)
            schema = f"bench_monitor_{uuid.uuid4().hex[:8]}"
            with sa.create_engine(admin).begin() as conn:
                conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
            os.environ["REMEDY_DATABASE_URL"] = admin
            os.environ["REMEDY_DATABASE_SCHEMA"] = schema
        clear_remedy_caches()
        try:
            results.append(_measure(backend, args))
            if args.prefect and results_prefect is None:
                results_prefect = _prefect_overhead()  # against this backend's seeded store
        finally:
            if schema:
                with sa.create_engine(os.environ["REMEDY_DATABASE_URL"]).begin() as conn:
                    conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    _print(results, results_prefect, args)
    return 0


def _seed(cases: int, per_case: int, affected: float, today: date) -> tuple[int, int]:
    """Bulk-insert open cases in step 4 with approved plans; return (affected, milestones)."""
    import yaml
    from alembic import command
    from sqlmodel import select

    from migrations import alembic_config
    from models.intake import DirectoryIn
    from models.settings import get_settings
    from models.tables import ActionPlan, CaseMember, PlanAction, RemediationCase, Stakeholder
    from tasks.store.db import get_engine, read_only
    from tasks.store.directory import load_directory

    settings = get_settings()
    command.upgrade(
        alembic_config(settings.resolved_database_url(), settings.database_schema), "head"
    )
    now = datetime.now(UTC)
    data = yaml.safe_load((EXAMPLES / "stakeholders.yaml").read_text())
    load_directory(DirectoryIn.model_validate(data), now=now, actor="bench")
    with read_only() as session:
        people = {s.key: s.id for s in session.exec(select(Stakeholder)).all()}
    every = max(round(1 / affected), 1) if affected > 0 else 0
    case_rows, plan_rows, action_rows, member_rows = [], [], [], []
    hit = 0
    for n in range(cases):
        case_id, plan_id = uuid.uuid4(), uuid.uuid4()
        case_rows.append(
            {
                "id": case_id,
                "reference": f"RC-2099-{n:05d}",
                "state": "implementing",
                "step": 4,
                "status": "active",
                "state_changed_at": now,
                "opened_at": now,
                "severity_is_final": True,
                "version": 1,
            }
        )
        plan_rows.append(
            {
                "id": plan_id,
                "case_id": case_id,
                "version": 1,
                "status": "approved",
                "created_at": now,
                "approved_at": now,
            }
        )
        due_one = every and n % every == 0
        hit += bool(due_one)
        for m in range(per_case):
            due = (
                today - timedelta(days=1)
                if (due_one and m == 0)
                else today + timedelta(days=30 + (n + m) % 300)
            )
            action_rows.append(
                {
                    "id": uuid.uuid4(),
                    "plan_id": plan_id,
                    "case_id": case_id,
                    "key": f"m-{m}",
                    "kind": "assistance",
                    "category": "medical",
                    "title": f"Milestone {m}",
                    "owner_id": people["grace.advocate"],
                    "due_on": due,
                    "verification_method": "records",
                    "status": "active",
                    "status_changed_at": now,
                    "evidence_refs": [],
                }
            )
        for key, role in (("lena.lead", "case_lead"), ("sofia.senior", "senior_approver")):
            member_rows.append(
                {
                    "id": uuid.uuid4(),
                    "case_id": case_id,
                    "stakeholder_id": people[key],
                    "role": role,
                    "added_at": now,
                }
            )
    engine = get_engine()
    with engine.begin() as conn:
        for table, rows in (
            (RemediationCase.__table__, case_rows),  # type: ignore[attr-defined]
            (ActionPlan.__table__, plan_rows),  # type: ignore[attr-defined]
            (PlanAction.__table__, action_rows),  # type: ignore[attr-defined]
            (CaseMember.__table__, member_rows),  # type: ignore[attr-defined]
        ):
            for start in range(0, len(rows), 5000):
                conn.execute(sa.insert(table), rows[start : start + 5000])
    return hit, len(action_rows)


BARE_SQL = """
SELECT pa.id, c.reference, pa.due_on
FROM plan_action pa
JOIN action_plan ap ON ap.id = pa.plan_id
JOIN remediation_case c ON c.id = pa.case_id
WHERE ap.status = 'approved' AND c.status = 'active' AND c.state = 'implementing'
  AND pa.status IN ('planned', 'active') AND pa.due_on <= :horizon
"""
BARE_DECISIONS = """
SELECT dr.id, c.reference, dr.due_at FROM decision_request dr
JOIN remediation_case c ON c.id = dr.case_id
WHERE dr.status = 'waiting' AND c.status = 'active' AND dr.due_at < :now
"""


def _bare(now: datetime, due_soon_days: int) -> tuple[float, int]:
    from tasks.store.db import get_engine

    horizon = now.date() + timedelta(days=due_soon_days)
    t0 = time.perf_counter()
    with get_engine().connect() as conn:
        rows = conn.execute(sa.text(BARE_SQL), {"horizon": horizon}).all()
        conn.execute(sa.text(BARE_DECISIONS), {"now": now}).all()
        # the same rows minus those already acted on: one IN lookup of their keys
        keys = [f"overdue:{r[0]}:{r[2]}" for r in rows]
        if keys:
            conn.execute(
                sa.text("SELECT key FROM reminder_sent WHERE key IN :keys").bindparams(
                    sa.bindparam("keys", expanding=True)
                ),
                {"keys": keys},
            ).all()
        conn.rollback()
    return time.perf_counter() - t0, len(rows)


def _measure(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    from tasks.context import current_policy
    from tasks.monitoring.sweep import check_case, find_due

    now = datetime.now(UTC)
    say(f"{backend}: seeding {args.cases} cases x {args.milestones} milestones")
    t0 = time.perf_counter()
    hit, milestones = _seed(args.cases, args.milestones, args.affected, now.date())
    seeded = time.perf_counter() - t0
    policy = current_policy()
    _bare(now, policy.milestones.due_soon_days)  # warm the caches once, for both sides
    find_due(now=now)
    bare = min(_bare(now, policy.milestones.due_soon_days)[0] for _ in range(3))
    found = min(_timed(lambda: find_due(now=now))[0] for _ in range(3))
    tracemalloc.start()
    t0 = time.perf_counter()
    plan = find_due(now=now)
    checks = [check_case(ref, items, now=now) for ref, items in plan.by_case.items()]
    full = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    sent = sum(len(c.sent) for c in checks)
    t0 = time.perf_counter()
    again = find_due(now=now)
    second = time.perf_counter() - t0
    assert again.by_case == {}, "a second sweep at the same moment must find nothing new"
    quiet_now = now - timedelta(days=30)
    quiet, quiet_plan = _timed(lambda: find_due(now=quiet_now))
    assert quiet_plan.by_case == {}
    affected = len(plan.by_case)
    per_case = (full - found) / affected if affected else 0.0
    return {
        "backend": backend,
        "cases": args.cases,
        "milestones": milestones,
        "affected": affected,
        "seeded": seeded,
        "bare": bare,
        "find": found,
        "full": full,
        "sent": sent,
        "second": second,
        "quiet": quiet,
        "per_case": per_case,
        "peak_mb": peak / 2**20,
        "hit": hit,
    }


def _timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def _prefect_overhead() -> dict[str, float]:
    """Time the sweep flow with nothing due against an empty flow, on a local server."""
    from prefect import flow
    from prefect.settings import temporary_settings

    from flows.local.stack import LocalStack, free_port
    from flows.monitor_milestones import simulated_sweep
    from tasks.store.settings import mark_simulation

    # the seeded store is throw-away: a sweep a month back (nothing due) may run on it
    mark_simulation(True, actor="bench", now=datetime.now(UTC), force=True)
    home = Path(tempfile.mkdtemp(prefix="remedy-bench-monitor-prefect-"))
    stack = LocalStack(home=home, port=free_port())
    say("starting a local Prefect server for the flow timings")
    stack.start_server()
    try:
        with temporary_settings(stack.prefect_settings()):

            @flow(name="empty-sweep")
            def empty() -> int:
                return 0

            empty()  # warm up: first-run costs (flow registration, imports) on both sides
            simulated_sweep(now=datetime.now(UTC) - timedelta(days=30))
            empty_s = min(_timed(empty)[0] for _ in range(3))
            sweep_s = min(
                _timed(lambda: simulated_sweep(now=datetime.now(UTC) - timedelta(days=30)))[0]
                for _ in range(3)
            )
    finally:
        stack.stop()
    return {"empty": empty_s, "sweep": sweep_s}


def _print(
    results: list[dict[str, Any]], prefect: dict[str, float] | None, args: argparse.Namespace
) -> None:
    print()
    print(
        f"Monitoring sweep: {args.cases} open cases, {args.milestones} milestones each, "
        f"{args.affected:.0%} with one overdue"
    )
    print()
    print(
        "| backend | bare queries | find_due | ratio | full sweep (find + check) | affected | "
        "per affected case | 2nd sweep | nothing due | peak memory |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        ratio = r["find"] / r["bare"] if r["bare"] else float("nan")
        print(
            f"| {r['backend']} | {r['bare'] * 1000:.1f} ms | {r['find'] * 1000:.1f} ms | "
            f"{ratio:.2f}x | {r['full']:.2f} s | {r['affected']} | {r['per_case'] * 1000:.1f} ms | "
            f"{r['second'] * 1000:.1f} ms | {r['quiet'] * 1000:.1f} ms | {r['peak_mb']:.1f} MiB |"
        )
    print()
    print("Target: find_due under 3x the bare queries; the rest is a fixed cost per affected case")
    print("(reminders, escalation, audit, all in one transaction per case).")
    if prefect:
        extra = prefect["sweep"] - prefect["empty"]
        print(
            f"With Prefect: an empty flow {prefect['empty']:.2f} s; the sweep flow with nothing "
            f"due {prefect['sweep']:.2f} s: {extra:.2f} s of work beyond Prefect's own "
            "(target < 1 s)."
        )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"Peak resident memory of this process: {rss:.0f} MiB.")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
