"""`remedy show REF` (the case's summary) and `remedy show plan|decisions|audit REF`: what an
operator acts on, from the command line.

Nothing identifying (names, contacts, the narrative) is printed unless `--reveal` is given with a
reason; only the case lead or the victims' representative of the case may reveal, and the read is
audited before anything is decrypted (tasks/reports/case_view.py `reveal_identities`).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from cyclopts import App, Parameter

from flows.cli import cases
from flows.cli.common import EXIT_BAD_INPUT, EXIT_OK, fail, operator, out

show_app = App(
    name="show",
    help="A case: its summary (remedy show REF), its plan, decisions and audit events.",
)
show_app.default(cases.show)

REVEAL = Parameter(
    help="Also print the persons' identities (the case lead or the victims' representative; "
    "audited, needs --reason)."
)
REASON = Parameter(help="Why identifying data is needed (audited).")
JSON = Parameter(name="--json")


def _revealed(reference: str, view: str, reveal: bool, reason: str | None) -> int | None:
    """Print the persons' identities if asked (and allowed); an exit code if refused."""
    if not reveal:
        return None
    assert reason is not None  # checked first (_refused_before)
    from tasks.actors import ActorNotAllowed
    from tasks.context import utcnow
    from tasks.reports.case_view import RevealNotAllowed, reveal_identities

    try:
        who = operator()
        identities = reveal_identities(
            reference,
            view=view,
            by=who.key,
            reason=reason.strip()[:200],
            now=utcnow(),
            operator=who,
        )
    except (ActorNotAllowed, RevealNotAllowed) as exc:
        return fail(str(exc))
    out.rule("Identities (this read is recorded in the audit chain)")
    out.print(json.dumps(identities, indent=2, ensure_ascii=False), markup=False)
    return None


def _refused_before(reveal: bool, reason: str | None, as_json: bool) -> int | None:
    if reveal and not (reason and reason.strip()):
        return fail(
            "--reveal needs --reason: every read of identifying data is audited", EXIT_BAD_INPUT
        )
    if reveal and as_json:  # identities are for a person to read, not for another program
        return fail("--reveal is not given with --json", EXIT_BAD_INPUT)
    return None


@show_app.command(name="plan")
def show_plan(
    reference: str,
    *,
    reveal: Annotated[bool, REVEAL] = False,
    reason: Annotated[str | None, REASON] = None,
    as_json: Annotated[bool, JSON] = False,
) -> int:
    """Print the case's plan in force and its milestones: key, status, for whom, owner, due
    (and any extension asked), evidence count, title."""
    from tasks.reports.case_view import plan_record

    if (refused := _refused_before(reveal, reason, as_json)) is not None:
        return refused
    plan = plan_record(reference)
    if as_json:
        out.print_json(plan.model_dump_json() if plan else "null")
    elif plan is None:
        out.print(f"{reference}: no plan yet.")
    else:
        out.rule(f"Case {plan.case_ref} · plan version {plan.version} ({plan.status.value})")
        if plan.approved_at:
            out.print(f"Approved {plan.approved_at:%Y-%m-%d %H:%M} UTC")
        for m in plan.milestones:  # one line each: whole in any terminal, and for grep
            due = f"due {m.due_on}" + (f" (asked: {m.extension_to})" if m.extension_to else "")
            out.print(
                f"{m.key}  [{m.status.value}]  for {m.person or 'the case'}  owner "
                f"{m.owner or '-'}  {due}  evidence {m.evidence}  · {m.title}",
                markup=False,
                soft_wrap=True,
            )
        if plan.other_versions:
            out.print("Other versions: " + ", ".join(plan.other_versions))
        _ledger_section(reference)
    return _revealed(reference, "plan", reveal, reason) or EXIT_OK


def _ledger_section(reference: str) -> None:
    """The remedy ledger's part of the plan view: what is owed, paid and confirmed per person
    (amounts by pseudonym; the payments' references stay sealed)."""
    from flows.cli.ledger import print_ledger
    from tasks.store.cases import get_case
    from tasks.store.db import read_only
    from tasks.store.ledger_view import ledger_summary

    with read_only() as session:
        summary = ledger_summary(session, get_case(session, reference).id)
    print_ledger(reference, summary)


@show_app.command(name="decisions")
def show_decisions(
    reference: str,
    *,
    reveal: Annotated[bool, REVEAL] = False,
    reason: Annotated[str | None, REASON] = None,
    as_json: Annotated[bool, JSON] = False,
) -> int:
    """Print the decisions taken on the case: when, which, by whom, the outcome and the reason."""
    from tasks.reports.case_view import decision_records

    if (refused := _refused_before(reveal, reason, as_json)) is not None:
        return refused
    decisions = decision_records(reference)
    if as_json:
        out.print_json(json.dumps([d.model_dump(mode="json") for d in decisions]))
    elif not decisions:
        out.print(f"{reference}: no decision taken yet.")
    else:
        out.rule(f"Case {reference} · decisions")
        for d in decisions:
            out.print(
                f"[{d.decided_at:%Y-%m-%d %H:%M}] step {d.step} · {d.title} ({d.kind.value}) · "
                f"by {d.by} · {d.outcome}",
                markup=False,
            )
            if d.reason:
                out.print(f"    reason: {d.reason}", markup=False)
    return _revealed(reference, "decisions", reveal, reason) or EXIT_OK


@show_app.command(name="audit")
def show_audit(
    reference: str,
    *,
    last: Annotated[int | None, Parameter(help="Only the last N events.")] = None,
    as_json: Annotated[bool, JSON] = False,
) -> int:
    """Print the case's audit events in chain order: when, who, what, about what, the details
    (references only). `remedy audit verify` checks the chain."""
    from tasks.reports.case_view import audit_records

    events = audit_records(reference, limit=last)
    if as_json:
        out.print_json(json.dumps([e.model_dump(mode="json") for e in events]))
        return EXIT_OK
    out.rule(f"Case {reference} · audit events")
    for e in events:
        out.print(
            f"#{e.seq} [{e.at:%Y-%m-%d %H:%M:%S}] {e.actor} {e.action}"
            + (f" {e.subject}" if e.subject else "")
            + (f" {_compact(e.details)}" if e.details else ""),
            markup=False,
            soft_wrap=True,
        )
    return EXIT_OK


def _compact(details: dict[str, Any]) -> str:
    return json.dumps(details, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
