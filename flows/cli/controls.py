"""`remedy consent|case|plan|person ...`: the controls that move a case outside its steps'
decisions, and what is recorded for an affected person (their view of the remedy)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from cyclopts import App, Parameter

from flows.cli.common import (
    BY,
    EXIT_BAD_INPUT,
    EXIT_OK,
    err,
    fail,
    hand_over_next,
    operator,
    out,
)
from models.enums import ConsentMethod, ConsentPurpose

if TYPE_CHECKING:
    from tasks.actors import Operator
    from tasks.controls import ControlResult

consent_app = App(name="consent", help="Consent of affected persons.")
case_app = App(
    name="case", help="Close a case early or reopen a closed one; hold or release its data."
)
plan_app = App(name="plan", help="A case's action plan.")
person_app = App(
    name="person", help="Affected persons: their view of the remedy, their data (export, erase)."
)


def _settle(result: ControlResult) -> None:
    """After a control: cancel the runs left waiting on cancelled decisions, start the new step,
    and show the case's new state in its case view."""
    from tasks.orchestration.runs import prefect_configured

    if not prefect_configured():
        if result.moved:
            hand_over_next(result.case_ref)  # says the sweep will start it
        return
    from tasks.context import utcnow
    from tasks.orchestration.runs import cancel_waiting_runs
    from tasks.reports.case_view import publish_case_view

    try:
        if result.stale_runs:
            n = cancel_waiting_runs(result.stale_runs, why=f"{result.case_ref} left the step")
            err.print(f"Cancelled {n} run(s) that waited on decisions no longer needed.")
        publish_case_view(result.case_ref, now=utcnow())
    except Exception as exc:  # the store is right either way; a resumed stale run ends idle
        err.print(f"Could not update Prefect's side ({type(exc).__name__}); the store is updated.")
    if result.moved:
        hand_over_next(result.case_ref)


def _control(
    call: Callable[[Operator], ControlResult], said: Callable[[ControlResult], str]
) -> int:
    """Run a case control as the person at this terminal, say where the case is now, then
    settle Prefect's side of it."""
    from tasks.actors import ActorNotAllowed
    from tasks.controls import ControlError

    try:
        result = call(operator())
    except (ActorNotAllowed, ControlError) as exc:
        return fail(str(exc))
    out.print(said(result))
    _settle(result)
    return EXIT_OK


@consent_app.command(name="withdraw")
def consent_withdraw(
    reference: str,
    pseudonym: str,
    *,
    purpose: ConsentPurpose = ConsentPurpose.CASE_HANDLING,
    by: Annotated[str | None, BY] = None,
) -> int:
    """Record a person's withdrawn consent: messages mentioning them stop; the case holds."""
    from tasks.context import utcnow
    from tasks.controls import withdraw_consent

    def call(who: Operator) -> ControlResult:
        result = withdraw_consent(
            reference,
            pseudonym,
            purpose=purpose,
            by=who.speaks_for(by),
            now=utcnow(),
            operator=who,
        )
        return result.model_copy(update={"moved": False})  # a held case starts no step

    return _control(
        call,
        lambda r: (
            f"{reference} {pseudonym}: consent for {purpose.value} withdrawn; case {r.state.value}."
        ),
    )


@consent_app.command(name="renew")
def consent_renew(
    reference: str,
    pseudonym: str,
    *,
    purpose: ConsentPurpose = ConsentPurpose.CASE_HANDLING,
    method: ConsentMethod = ConsentMethod.VERBAL,
    language: str | None = None,
    interpreter: bool = False,
    by: Annotated[str | None, BY] = None,
) -> int:
    """Record a person's renewed consent; a held case resumes its step (asked afresh)."""
    from tasks.context import utcnow
    from tasks.controls import renew_consent

    return _control(
        lambda who: renew_consent(
            reference,
            pseudonym,
            purpose=purpose,
            by=who.speaks_for(by),
            method=method,
            language=language,
            interpreter_used=interpreter,
            now=utcnow(),
            operator=who,
        ),
        lambda r: (
            f"{reference} {pseudonym}: consent for {purpose.value} renewed; case {r.state.value}."
        ),
    )


@case_app.command(name="close")
def case_close(
    reference: str,
    *,
    reason: str,
    by: Annotated[str | None, BY] = None,
) -> int:
    """Send a case to closure before its plan is done (unresolved, or after a withdrawal)."""
    from tasks.context import utcnow
    from tasks.controls import close_early

    return _control(
        lambda who: close_early(
            reference, by=who.speaks_for(by), reason=reason, now=utcnow(), operator=who
        ),
        lambda r: f"{reference}: {r.state.value}; two approvers sign the closure in step 5.",
    )


@case_app.command(name="reopen")
def case_reopen(
    reference: str,
    *,
    to: Literal["verification", "remedy"],
    reason: str,
    by: Annotated[str | None, BY] = None,
) -> int:
    """Reopen a closed case: to verification (new facts) or to plan design (remedy failed)."""
    from tasks.context import utcnow
    from tasks.controls import reopen_case

    return _control(
        lambda who: reopen_case(
            reference, to=to, by=who.speaks_for(by), reason=reason, now=utcnow(), operator=who
        ),
        lambda r: f"{reference}: reopened, {r.state.value}.",
    )


@plan_app.command(name="revise")
def plan_revise(
    reference: str,
    *,
    reason: str,
    by: Annotated[str | None, BY] = None,
    agreed_by: Annotated[
        str | None,
        Parameter(
            help="The victim representative who agreed to the revision. Default: you; naming "
            "them (e.g. their agreement taken by phone) needs their key in your acts_for."
        ),
    ] = None,
) -> int:
    """Take a plan under way back to design; step 3 drafts its next version."""
    from tasks.context import utcnow
    from tasks.controls import revise_plan

    return _control(
        lambda who: revise_plan(
            reference,
            by=who.speaks_for(by),
            agreed_by=who.speaks_for(agreed_by, "--agreed-by"),
            reason=reason,
            now=utcnow(),
            operator=who,
        ),
        lambda r: f"{reference}: {r.state.value}; the plan's next version is drafted in step 3.",
    )


@person_app.command(name="view")
def person_view(
    reference: str,
    pseudonym: str,
    *,
    text: str | None = None,
    file: Path | None = None,
    by: Annotated[str | None, BY] = None,
    given_by: Annotated[
        Literal["person", "representative"],
        Parameter(help="Whose words: the person's own, or their representative's (the default)."),
    ] = "representative",
) -> int:
    """Record a person's view of the remedy (kept encrypted), shown to the closure's signers on
    the approval page; it replaces their earlier view."""
    from tasks.actors import ActorNotAllowed
    from tasks.context import utcnow
    from tasks.store.person_views import PersonViewError, record_person_view

    if (text is None) == (file is None):
        return fail("give the view with --text or --file (one of them)", EXIT_BAD_INPUT)
    try:
        words = text if file is None else file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return fail(f"cannot read {file} ({type(exc).__name__})", EXIT_BAD_INPUT)
    assert words is not None
    try:
        who = operator()
        done = record_person_view(
            reference,
            pseudonym,
            words,
            by=who.speaks_for(by),
            given_by=given_by,
            now=utcnow(),
            operator=who,
        )
    except (ActorNotAllowed, PersonViewError) as exc:
        return fail(str(exc))
    whose = "their own words" if done.given_by == "person" else "their representative's words"
    out.print(
        f"{reference} {pseudonym}: view of the remedy recorded ({whose})"
        + ("; it replaces the earlier one." if done.replaced else "."),
        markup=False,
    )
    return EXIT_OK
