"""`remedy ledger owe|pay|confirm|waive|show`: what each person is owed, the payments and their
confirmation (docs/domain.md, The remedy ledger). Persons appear by pseudonym only."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Literal

from cyclopts import App, Parameter

from flows.cli.common import BY, EXIT_OK, fail, operator, out
from models.enums import OwedKind
from models.iso4217 import format_amount
from models.ledger import PaymentMethod

if TYPE_CHECKING:
    from tasks.store.ledger_view import LedgerSummary

ledger_app = App(name="ledger", help="The remedy ledger: amounts owed, paid and confirmed.")


def _act(reference: str, call: Callable[[], str]) -> int:
    """Run a ledger change, republish the case's view, and say what it did or why it was
    refused."""
    from tasks.actors import ActorNotAllowed
    from tasks.reports.case_view import refresh_case_view
    from tasks.store.ledger import LedgerError

    try:
        said = call()
    except (ActorNotAllowed, LedgerError) as exc:
        return fail(str(exc))
    refresh_case_view(reference)  # committed: the view in the Prefect UI shows it at once
    out.print(said, markup=False)
    return EXIT_OK


def _money(amount: Decimal, currency: str) -> str:
    return format_amount(amount, currency).removesuffix(f" {currency}")


@ledger_app.command(name="owe")
def ledger_owe(
    reference: str,
    *,
    kind: OwedKind,
    currency: str,
    amount: str,
    person: Annotated[
        list[str] | None,
        Parameter(help="A person's pseudonym (repeatable); none: every person of the case."),
    ] = None,
    by: Annotated[str | None, BY] = None,
) -> int:
    """Record what each person is owed (the case lead); replaces an amount nothing was paid on."""
    from tasks.context import utcnow
    from tasks.store.ledger import record_owed

    def call() -> str:
        who = operator()
        ids = record_owed(
            reference,
            kind=kind,
            currency=currency,
            amount=amount,
            pseudonyms=person,
            by=who.speaks_for(by),
            now=utcnow(),
            operator=who,
        )
        return (
            f"{reference}: {kind.value} {amount} {currency.upper()} owed to {len(ids)} person(s)."
        )

    return _act(reference, call)


@ledger_app.command(name="pay")
def ledger_pay(
    reference: str,
    pseudonym: str,
    *,
    kind: OwedKind,
    currency: str,
    amount: str,
    paid_on: date,
    method: PaymentMethod,
    payment_reference: Annotated[
        str | None, Parameter(help="The bank or transfer reference (kept encrypted).")
    ] = None,
    evidence: Annotated[
        list[str] | None, Parameter(help="Evidence reference (repeatable), e.g. doc:receipt-12.")
    ] = None,
    key: Annotated[
        str | None, Parameter(help="An idempotency key: the same key records the payment once.")
    ] = None,
    by: Annotated[str | None, BY] = None,
) -> int:
    """Record a payment to one person (the case lead or the repaying milestone's owner)."""
    from tasks.context import utcnow
    from tasks.store.ledger import record_payment

    def call() -> str:
        who = operator()
        payment = record_payment(
            reference,
            pseudonym,
            kind=kind,
            currency=currency,
            amount=amount,
            paid_on=paid_on,
            method=method,
            reference=payment_reference,
            evidence=evidence,
            by=who.speaks_for(by),
            now=utcnow(),
            idempotency_key=key,
            operator=who,
        )
        return (
            f"{reference} {pseudonym}: payment {payment} of {amount} {currency.upper()} "
            f"({kind.value}) recorded; the person or their representative confirms it."
        )

    return _act(reference, call)


@ledger_app.command(name="confirm")
def ledger_confirm(
    reference: str,
    payment_id: uuid.UUID,
    *,
    given_by: Annotated[
        Literal["person", "representative"],
        Parameter(help="Who confirmed receipt: the person (to you), or their representative."),
    ],
    by: Annotated[str | None, BY] = None,
) -> int:
    """Confirm that a payment reached the person (their representative, or the case lead)."""
    from tasks.context import utcnow
    from tasks.store.ledger import confirm_payment

    def call() -> str:
        who = operator()
        confirm_payment(
            reference,
            payment_id,
            given_by=given_by,
            by=who.speaks_for(by),
            now=utcnow(),
            operator=who,
        )
        return f"{reference}: payment {payment_id} confirmed (by the {given_by})."

    return _act(reference, call)


@ledger_app.command(name="waive")
def ledger_waive(
    reference: str,
    pseudonym: str,
    *,
    kind: OwedKind,
    currency: str,
    reason: str,
    by: Annotated[str | None, BY] = None,
) -> int:
    """Waive what one person is owed of a kind, with a reason (the case lead)."""
    from tasks.context import utcnow
    from tasks.store.ledger import waive

    def call() -> str:
        who = operator()
        waive(
            reference,
            pseudonym,
            kind,
            currency,
            reason=reason,
            by=who.speaks_for(by),
            now=utcnow(),
            operator=who,
        )
        return f"{reference} {pseudonym}: {kind.value} in {currency.upper()} waived."

    return _act(reference, call)


@ledger_app.command(name="show")
def ledger_show(reference: str) -> int:
    """Show a case's ledger: each person's amounts owed, paid and confirmed; totals per currency."""
    from tasks.store.cases import get_case
    from tasks.store.db import read_only
    from tasks.store.ledger_view import ledger_summary

    with read_only() as session:
        summary = ledger_summary(session, get_case(session, reference).id)
    print_ledger(reference, summary)
    return EXIT_OK


def print_ledger(reference: str, summary: LedgerSummary) -> None:
    """Print a ledger: each person's lines, the totals per currency, the payments."""
    from rich.table import Table

    if not summary.lines:
        out.print(f"{reference}: nothing is recorded as owed.")
        return
    table = Table(title=f"{reference}: remedy ledger")
    for name in ("person", "kind", "currency", "owed", "paid", "confirmed", "status"):
        table.add_column(name, justify="right" if name in ("owed", "paid", "confirmed") else "left")
    for line in summary.lines:
        table.add_row(
            line.pseudonym,
            line.kind.value,
            line.currency,
            _money(line.owed, line.currency),
            _money(line.paid, line.currency),
            _money(line.confirmed, line.currency),
            line.status,
        )
    out.print(table)
    totals = Table(title="Totals per currency")
    for name in ("currency", "owed", "waived", "paid", "confirmed"):
        totals.add_column(name, justify="left" if name == "currency" else "right")
    for t in summary.totals.values():
        totals.add_row(
            t.currency,
            *(_money(v, t.currency) for v in (t.owed, t.waived, t.paid, t.confirmed)),
        )
    out.print(totals)
    if summary.payments:
        payments = Table(title="Payments")
        payments.add_column("payment", no_wrap=True, min_width=36)  # `ledger confirm` takes it
        for name in ("person", "kind", "amount", "paid on", "method", "confirmed"):
            payments.add_column(name)
        for p in summary.payments:
            payments.add_row(
                str(p.id),
                p.pseudonym,
                p.kind.value,
                f"{_money(p.amount, p.currency)} {p.currency}",
                p.paid_on.isoformat(),
                p.method.value,
                f"yes ({p.confirmed_given_by})" if p.confirmed else "no",
            )
        out.print(payments)
