"""`remedy decide`: answer a case's waiting decision from the terminal, as the Prefect UI does."""

from __future__ import annotations

import json
import uuid
from typing import Annotated

from cyclopts import Parameter

from flows.cli.common import EXIT_BAD_INPUT, EXIT_OK, err, fail, operator, os_user, out


def _parse_value(raw: str) -> object:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _prompt_fields(form: type, values: dict[str, object]) -> None:
    """Ask for each form field not given yet, showing its choices (interactive use only)."""
    from rich.prompt import Prompt

    from models.forms import SUBMITTER_FIELDS
    from tasks.decisions.fields import fields_from_schema

    schema = form.model_json_schema()  # type: ignore[attr-defined]
    # the person's key and code are asked for last (the code hidden), not as form fields
    for field in fields_from_schema(schema, skip=tuple(SUBMITTER_FIELDS)):
        if field.name in values:
            continue
        # the prompt names a field by its schema title, else its name (as it always has)
        label = schema["properties"][field.name].get("title", field.name)
        if field.type == "boolean":
            answer = Prompt.ask(f"{label} (yes/no)", choices=["yes", "no"], default=field.default)
            values[field.name] = answer == "yes"
        elif field.type == "enum":
            values[field.name] = Prompt.ask(
                label, choices=[value for value, _ in field.options], default=field.default
            )
        elif field.type in ("enum_list", "string_list"):
            raw = Prompt.ask(f"{label} (comma-separated)", default="")
            values[field.name] = [v.strip() for v in raw.split(",") if v.strip()]
        elif field.type in ("integer", "number"):
            default = field.default if isinstance(field.default, str) else None
            # a zero default (0 or 0.0) and no default both offer "0"
            shown = default if default and _parse_value(default) else "0"
            values[field.name] = _parse_value(Prompt.ask(label, default=shown))
        else:
            values[field.name] = Prompt.ask(label, default=field.default or "")


def _mapped_stakeholder() -> str | None:
    """The stakeholder the directory maps this account to, if any (the code proves the rest)."""
    from tasks.actors import ActorNotAllowed

    try:
        return operator().key
    except ActorNotAllowed:
        return None


def _reissue(request_id: uuid.UUID, person: str) -> int:
    from tasks.actors import ActorNotAllowed
    from tasks.context import utcnow
    from tasks.decisions.tickets import AttemptFailedError, reissue

    try:
        lead = operator()
        reissue(request_id, person, by=lead.key, now=utcnow(), os_user=lead.os_user)
    except (ActorNotAllowed, AttemptFailedError) as exc:
        return fail(str(exc))
    out.print(f"A new code and link go to {person}; their earlier ones no longer work.")
    return EXIT_OK


def decide(
    reference: str,
    *,
    kind: Annotated[str | None, Parameter(help="Which waiting decision, if several.")] = None,
    as_: Annotated[str | None, Parameter(name="--as", help="Your stakeholder key.")] = None,
    code: Annotated[str | None, Parameter(help="One-time code (prompted if absent).")] = None,
    set_: Annotated[
        list[str] | None, Parameter(name="--set", help="field=value (repeatable; JSON values).")
    ] = None,
    wait: Annotated[float, Parameter(help="Seconds to wait for the step's verdict.")] = 120.0,
    reissue_for: Annotated[
        str | None,
        Parameter(
            name="--reissue-for",
            help="Case leads: send this approver a new code (and lift a lock after failed "
            "attempts) instead of deciding.",
        ),
    ] = None,
) -> int:
    """Show a case's waiting decision and submit it through the Prefect API, as the UI does.

    Your code is checked by Remedy, not sent to Prefect: the run is resumed with a single-use
    reference, and the decision is recorded with your operating-system account.
    """
    import sys

    from pydantic import ValidationError
    from rich.markdown import Markdown
    from rich.prompt import Prompt

    from tasks.decisions.requests import describe_request, waiting_requests
    from tasks.decisions.resume import SubmitFailedError, await_verdict, submit_with_code
    from tasks.inputs import explain
    from tasks.orchestration.runs import flow_run_link
    from tasks.steps.table import spec_of

    waiting = waiting_requests(reference)
    if kind:
        waiting = [r for r in waiting if r.kind.value == kind]
    if not waiting:
        return fail(f"{reference} has no waiting decision" + (f" of kind {kind}" if kind else ""))
    if len(waiting) > 1:
        kinds = ", ".join(r.kind.value for r in waiting)
        return fail(f"{reference} waits for several decisions ({kinds}); choose one with --kind")
    request = waiting[0]
    if reissue_for:
        return _reissue(request.id, reissue_for)
    out.print(Markdown(describe_request(request.id)))
    link = flow_run_link(request.flow_run_id)
    if link:
        out.print(f"Also in the Prefect UI: {link}")
    interactive = sys.stdin.isatty()
    values: dict[str, object] = {}
    for item in set_ or []:
        name, sep, raw = item.partition("=")
        if not sep:
            return fail(f"--set {item}: use field=value", EXIT_BAD_INPUT)
        values[name.strip()] = _parse_value(raw)
    form = spec_of(request.kind).form
    if interactive:
        _prompt_fields(form, values)
    mapped = _mapped_stakeholder()
    if mapped is not None and as_ not in (None, mapped):
        # a decision is personal: an account the directory maps to someone decides only as them
        return fail(
            f"--as {as_}: this operating-system account ({os_user()}) is {mapped} in the "
            "directory, and decides only as them; nothing was submitted"
        )
    values["approver"] = (
        as_ or mapped or (Prompt.ask("Your stakeholder key") if interactive else "")
    )
    values["approval_code"] = code or (
        Prompt.ask("One-time approval code", password=True) if interactive else ""
    )
    try:
        form.model_validate(values)
    except ValidationError as exc:
        err.print(
            "[bold red]error:[/] the decision is incomplete; nothing was submitted.", markup=True
        )
        for line in explain(exc):
            err.print(f"  - {line}", markup=False)
        return EXIT_BAD_INPUT
    try:
        # the code is checked here, against the case store; Prefect sees a single-use ticket
        submit_with_code(request.id, values, channel="command-line", os_user=os_user())
    except SubmitFailedError as exc:
        return fail(str(exc))
    out.print("Submitted; the step checks it when it resumes.")
    checked = await_verdict(request.id, wait_seconds=wait, poll=1.0, tries=request.tries)
    if checked.status == "accepted":
        out.print(f"Accepted: the {request.kind.value} decision is recorded.")
        return EXIT_OK
    if checked.status == "refused":
        return fail(f"Refused: {checked.reason or 'see the audit chain'}. The step asks again.")
    if checked.status == "cancelled":
        return fail("The decision is no longer needed: the case left its step.")
    out.print("The step has not checked the submission yet; see `remedy show`.")
    return EXIT_OK
