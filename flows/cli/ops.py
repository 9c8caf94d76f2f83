"""`remedy key|db|audit|notifications ...`, `doctor`, `up`, `monitor`: running store and stack."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Literal

from cyclopts import App, Parameter
from rich.table import Table

from flows.cli.common import EXIT_FAILED, EXIT_OK, actor, fail, out
from models.enums import NotificationChannel, NotificationStatus

db_app = App(name="db", help="The case store's schema.")
key_app = App(name="key", help="The encryption key for identifying data.")
audit_app = App(name="audit", help="The audit chain.")
notifications_app = App(name="notifications", help="The outbox, its templates and delivery.")


@key_app.command(name="init")
def key_init() -> int:
    """Create the local key file (mode 0600) unless a key is configured already."""
    from models.settings import get_settings
    from tasks.store.vault import init_key_file

    settings = get_settings()
    if settings.encryption_key is not None:
        out.print("An encryption key is set in REMEDY_ENCRYPTION_KEY; no key file needed.")
        return EXIT_OK
    path = settings.resolved_key_file()
    if init_key_file(path):
        out.print(
            f"Created {path} (readable by you only). Back it up: without it, "
            "identifying data cannot be read."
        )
    else:
        out.print(f"Key file {path} already exists; left as it is.")
    return EXIT_OK


@db_app.command(name="upgrade")
def db_upgrade() -> int:
    """Create or migrate the case store to the newest schema."""
    from alembic import command

    from migrations import alembic_config
    from models.settings import get_settings

    settings = get_settings()
    command.upgrade(
        alembic_config(settings.resolved_database_url(), settings.database_schema), "head"
    )
    from tasks.store.db import unit_of_work
    from tasks.store.sealed import seal_legacy_free_text

    with unit_of_work() as session:  # free text written before 0013, sealed (idempotent)
        seal_legacy_free_text(session)
    out.print("Case store is at the newest schema.")
    return EXIT_OK


@db_app.command(name="simulation")
def db_simulation(
    state: Annotated[
        Literal["on", "off"] | None, Parameter(help="on: a simulation; off: real cases.")
    ] = None,
    /,
    *,
    force: Annotated[
        bool, Parameter(help="Mark a store that already holds cases (none of them real).")
    ] = False,
) -> int:
    """Say whether the store is a simulation; `on` marks it so (`monitor --now` then works).

    A simulation's sweeps may run for a chosen moment, dating its audit in that moment and using
    up its reminders: never mark a store of real cases. One that holds cases needs --force.
    """
    from tasks.context import utcnow
    from tasks.store.settings import SimulationNotAllowed, mark_simulation, store_is_simulation

    if state is not None:
        try:
            changed = mark_simulation(state == "on", actor=actor(), now=utcnow(), force=force)
        except SimulationNotAllowed as exc:
            return fail(str(exc))
        if not changed:
            out.print("No change.")
    if store_is_simulation():
        out.print(
            "This case store is a simulation: `remedy monitor --now` may sweep it at any moment."
        )
    else:
        out.print("This case store is not a simulation: it is swept on the real clock only.")
    return EXIT_OK


@audit_app.command(name="verify")
def audit_verify(
    reference: str | None = None,
    /,
    *,
    public_key: Annotated[
        list[str] | None,
        Parameter(
            help="Trust checkpoints signed by this key (hex, as `remedy audit public-key` "
            "prints it; repeatable) instead of the signing key in REMEDY_HOME: an auditor's copy."
        ),
    ] = None,
    checkpoints: Annotated[
        str | None,
        Parameter(help="The checkpoints file; default: REMEDY_HOME/audit-checkpoints.jsonl."),
    ] = None,
) -> int:
    """Check a case's audit chain ('system' for the directory's, 'web' for the approval page's,
    'export' for the exports'), or every chain: each event's tag and link, each head, and the
    signed checkpoints. One line per problem: a forged event, a truncated, deleted or swapped
    chain, a bad checkpoint signature."""
    from pathlib import Path

    from tasks.export.htcds import EXPORT_CHAIN
    from tasks.store.audit import SYSTEM_CHAIN, WEB_CHAIN, when
    from tasks.store.cases import get_case
    from tasks.store.checkpoints import verify_audit
    from tasks.store.db import read_only

    verdict = verify_audit(
        reference,
        checkpoints_file=Path(checkpoints) if checkpoints else None,
        public_keys=public_key or (),
    )
    unknown = [r for r in verdict.reports if r.ok and r.events == 0]
    if (
        reference is not None
        and reference not in (SYSTEM_CHAIN, WEB_CHAIN, EXPORT_CHAIN)
        and unknown
    ):
        with read_only() as session:  # no chain and no checkpoint knows it: is it a case at all?
            get_case(session, reference)
    for problem in verdict.checkpoint_problems:
        fail(problem)
    for report in verdict.reports:
        if report.ok:
            if reference is not None:
                out.print(f"{report.chain}: audit chain {report.summary()}.")
        elif report.broken_at is not None:
            fail(
                f"{report.chain}: audit chain broken at event #{report.broken_at}: {report.problem}"
            )
        else:
            fail(f"{report.chain}: audit chain {report.problem}")
    if reference is None:
        intact = [r for r in verdict.reports if r.ok]
        events = sum(r.events for r in intact)
        checked = (
            f"checkpoint of {when(verdict.last_checkpoint)} matches"
            if verdict.last_checkpoint is not None
            else "no checkpoint yet"
        )
        out.print(
            f"{len(intact)} of {len(verdict.reports)} audit chains intact "
            f"({events} events, {checked})."
        )
    return EXIT_OK if verdict.ok else EXIT_FAILED


@audit_app.command(name="checkpoint")
def audit_checkpoint() -> int:
    """Sign a checkpoint of every chain's head now (the sweep does so daily and at closures)."""
    from tasks.context import utcnow
    from tasks.store.audit import when
    from tasks.store.checkpoints import checkpoint, checkpoints_path

    taken = checkpoint(utcnow())
    out.print(
        f"Checkpoint of {when(taken.at)}: {taken.chains} chains, {taken.events} events, "
        f"root {taken.root}; appended to {checkpoints_path()}."
    )
    return EXIT_OK


@audit_app.command(name="public-key")
def audit_public_key() -> int:
    """Print the checkpoints' Ed25519 public key (hex) to give an auditor (creates the key)."""
    from tasks.store.checkpoints import public_key_hex

    out.print(public_key_hex())
    return EXIT_OK


@notifications_app.command(name="deliver")
def notifications_deliver(
    *, case: str | None = None, limit: int = 2000, every: float | None = None
) -> int:
    """Send what the outbox holds (of one case, or all); --every N keeps draining every N s."""
    import time

    from tasks.context import utcnow
    from tasks.drain import deliver_due

    while True:
        report = deliver_due(now=utcnow(), limit=limit, case_ref=case)
        out.print(
            f"{report.delivered} delivered, {report.failed} to retry, {report.gave_up} given up, "
            f"{report.suppressed} suppressed"
        )
        if every is None:
            return EXIT_OK
        time.sleep(every)


@notifications_app.command(name="list")
def notifications_list(
    *,
    case: Annotated[str | None, Parameter(help="Only this case's messages (RC-...).")] = None,
    status: NotificationStatus | None = None,
    channel: NotificationChannel | None = None,
    limit: int = 500,
    as_json: Annotated[bool, Parameter(name="--json")] = False,
) -> int:
    """List the outbox, newest first: each message's case, event, channel, recipient (a
    stakeholder key), status, attempts, next attempt or delivery, and last error (never an
    address, a URL or a secret)."""
    from notifications.outbox import outbox_entries
    from tasks.store.cases import get_case
    from tasks.store.db import read_only

    with read_only() as session:
        case_id = get_case(session, case).id if case else None
        entries = outbox_entries(
            session, case_id=case_id, status=status, channel=channel, limit=limit
        )
    if as_json:
        out.print_json(json.dumps([e.model_dump(mode="json") for e in entries]))
        return EXIT_OK
    # one line per message: whole in any terminal, and for grep
    for e in entries:
        when = e.delivered_at or e.next_attempt_at
        timing = "-"
        if when is not None:
            timing = f"{'delivered' if e.delivered_at else 'next'} {when:%Y-%m-%d %H:%M:%S}"
        out.print(
            f"{e.case_ref or '-'}  {e.event}  {e.channel.value}  {e.recipient}  "
            f"{e.status.value}  attempts {e.attempts}  {timing}"
            + (f"  error: {e.last_error}" if e.last_error else ""),
            markup=False,
            soft_wrap=True,
        )
    out.print(
        f"{len(entries)} message(s)" + (" (--limit reached)" if len(entries) == limit else "")
    )
    return EXIT_OK


@notifications_app.command(name="check")
def notifications_check() -> int:
    """Check routing, templates and translations; list texts a locale does not translate."""
    from notifications.render import missing_translations
    from tasks.context import current_routing

    current_routing()  # raises with every problem if the routing file is wrong
    missing = missing_translations()
    problems = 0
    for locale, texts in missing.items():
        for text in texts:
            out.print(f"{locale}: missing translation (English is sent): {text}", markup=False)
            problems += 1
    if not problems:
        out.print("Routing and templates are valid; every text is translated.")
    return EXIT_FAILED if problems else EXIT_OK


def doctor(*, as_json: Annotated[bool, Parameter(name="--json")] = False) -> int:
    """List cases whose stored state and Prefect runs disagree (exit 1 if any)."""
    from tasks.context import utcnow
    from tasks.monitoring.doctor import default_silence, diagnose

    findings = diagnose(now=utcnow())
    silence = f"a run unheard for {default_silence().total_seconds() / 60:.0f} min counts as dead"
    if as_json:
        out.print_json(json.dumps([f.model_dump(mode="json") for f in findings]))
    elif not findings:
        out.print(
            "Store and Prefect agree: every waiting decision has a live suspended run and every "
            f"step in progress a live run ({silence})."
        )
    else:
        table = Table("case", "step", "problem", "flow run", "run state", "repair")
        for f in findings:
            table.add_row(
                f.case_ref,
                str(f.step),
                f.detail,
                str(f.flow_run_id or "-"),
                f.run_state or "-",
                f.repair,
            )
        out.print(table)
        out.print(f"The next monitoring sweep repairs these ({silence}); `remedy monitor` at once.")
    return EXIT_FAILED if findings else EXIT_OK


def up(*, port: int = 4200, approval_port: int | None = None) -> int:
    """Start the Prefect server (unless one is configured), the runner and the approval page."""
    from flows.local.stack import StackError
    from flows.local.up import prepare_store, run_until_interrupted, start_stack
    from models.settings import get_settings

    prepare_store()
    try:
        stack = start_stack(
            get_settings().home,
            port,
            out.print,
            approval_port=approval_port or get_settings().approval_port,
        )
    except StackError as exc:
        return fail(str(exc))
    out.print(f"Remedy is up. Prefect UI: {stack.ui_url}  (Ctrl-C stops everything)")
    out.print(f"Logs: {stack.home / 'logs'}")
    return run_until_interrupted(stack, out.print)


def monitor(
    *,
    now: Annotated[
        datetime | None, Parameter(help="Sweep as of this moment (a simulation store only).")
    ] = None,
) -> int:
    """Run one monitoring sweep now; --now sweeps a simulation store as of a chosen moment."""
    if now is None:
        from flows.monitor_milestones import monitor_milestones

        summary = monitor_milestones()
    else:
        from flows.monitor_milestones import simulated_sweep
        from tasks.store.settings import SimulationNotAllowed, require_simulation

        try:
            require_simulation()  # before a run exists: the flow checks again
        except SimulationNotAllowed as exc:
            return fail(str(exc))
        summary = simulated_sweep(now=now.astimezone(UTC))
    out.print(", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in summary.items()))
    return EXIT_OK
