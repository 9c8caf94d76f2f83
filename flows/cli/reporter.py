"""`remedy reporter show|ack|reply|note`: the case team's side of a reporter's thread.

The person at the terminal is the stakeholder their operating-system account maps to; only a case
lead or the victims' representative of the case may read the thread or write to the reporter.
A message's text is printed here and nowhere else: not in the audit, not in any notification.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

from cyclopts import App, Parameter

from flows.cli.common import EXIT_BAD_INPUT, EXIT_OK, fail, operator, out

if TYPE_CHECKING:
    from tasks.actors import Operator
    from tasks.reporter.staff import StaffThread

reporter_app = App(name="reporter", help="A reporter's receipt and thread: read, ack, reply, note.")

RECEIPT = Parameter(help="Which receipt (R-...), when the case has several (duplicate reports).")
T = TypeVar("T")


def _as_operator(call: Callable[[Operator], T]) -> T | int:
    """Run a call as the person at this terminal; an exit code if they may not."""
    from tasks.actors import ActorNotAllowed
    from tasks.reporter.staff import ReporterError, ReporterNotAllowed

    try:
        return call(operator())
    except (ActorNotAllowed, ReporterNotAllowed, ReporterError) as exc:
        return fail(str(exc))
    except ValueError as exc:  # an empty or too long text: the message names no content
        return fail(str(exc), EXIT_BAD_INPUT)


@reporter_app.command(name="show")
def show(reference: str) -> int:
    """Show a case's receipts: acknowledged or not, the status the reporter sees, the thread."""
    from tasks.context import utcnow
    from tasks.reporter.staff import threads

    found = _as_operator(lambda who: threads(reference, by=who.key, now=utcnow(), operator=who))
    if isinstance(found, int):
        return found
    if not found:
        out.print(f"{reference}: no reporter's receipt (no report was filed through the page).")
        return EXIT_OK
    for thread in found:
        _print_thread(reference, thread)
    return EXIT_OK


def _print_thread(reference: str, t: StaffThread) -> None:
    out.rule(f"{reference} · receipt {t.receipt_ref}")
    out.print(f"Filed: {t.filed_at:%Y-%m-%d %H:%M} UTC")
    if t.acknowledged_at:
        out.print(
            f"Acknowledged: {t.acknowledged_at:%Y-%m-%d %H:%M} UTC by {t.acknowledged_by or '-'}"
        )
    else:
        out.print("Acknowledged: not yet (remedy reporter ack, or the first reply)")
    f = t.follow_up
    reason = f" ({f.closed_reason.value})" if f.closed_reason else ""
    out.print(f"Status the reporter sees: {f.status.value}{reason}")
    if f.reason_note:
        out.print("Note shown with it:", markup=False)
        out.print(f"  {f.reason_note}", markup=False)
    out.print(
        "E-mail on news: " + ("yes (they agreed and gave an address)" if t.contact_ok else "no")
    )
    if not t.messages:
        out.print("No messages yet.")
    for m in t.messages:
        who = "reporter" if m.from_reporter else (m.author or "case team")
        out.print(f"[{m.at:%Y-%m-%d %H:%M}] {who}:", markup=False)
        for line in m.text.splitlines() or [""]:
            out.print(f"  {line}", markup=False)


def _text(text: str | None, file: Path | None) -> str | None:
    if (text is None) == (file is None):
        return None
    if file is not None:
        return file.read_text(encoding="utf-8")
    return text


@reporter_app.command(name="reply")
def reply(
    reference: str,
    *,
    text: str | None = None,
    file: Path | None = None,
    receipt: Annotated[str | None, RECEIPT] = None,
) -> int:
    """Write to the reporter (kept encrypted); the first reply also acknowledges the report."""
    from tasks.context import utcnow
    from tasks.reporter.staff import reply as write

    body = _text(text, file)
    if body is None:
        return fail("give the message with --text or --file (one of them)", EXIT_BAD_INPUT)
    done = _as_operator(
        lambda who: write(
            reference, body, by=who.key, now=utcnow(), receipt_ref=receipt, operator=who
        )
    )
    if isinstance(done, int):
        return done
    out.print(
        f"Sent to the reporter of {done.receipt_ref}"
        + (" (this also acknowledged the report)" if done.acknowledged else "")
        + (". They will be told by e-mail that there is news." if done.reporter_told else ".")
    )
    return EXIT_OK


@reporter_app.command(name="ack")
def ack(reference: str, *, receipt: Annotated[str | None, RECEIPT] = None) -> int:
    """Acknowledge the report to its reporter (before any reply)."""
    from tasks.context import utcnow
    from tasks.reporter.staff import acknowledge

    done = _as_operator(
        lambda who: acknowledge(
            reference, by=who.key, now=utcnow(), receipt_ref=receipt, operator=who
        )
    )
    if isinstance(done, int):
        return done
    if done.acknowledged:
        out.print(f"Acknowledged {done.receipt_ref}.")
    else:
        out.print(f"{done.receipt_ref} was acknowledged already; nothing changed.")
    return EXIT_OK


@reporter_app.command(name="note")
def note(reference: str, *, text: str, receipt: Annotated[str | None, RECEIPT] = None) -> int:
    """Set the note the reporter sees with the status (e.g. why it was not substantiated)."""
    from tasks.context import utcnow
    from tasks.reporter.staff import set_note

    done = _as_operator(
        lambda who: set_note(
            reference, text, by=who.key, now=utcnow(), receipt_ref=receipt, operator=who
        )
    )
    if isinstance(done, int):
        return done
    out.print(("Note set on " if text.strip() else "Note removed from ") + ", ".join(done) + ".")
    return EXIT_OK
