"""The remedy ledger (issue 13, item 1): what each person is owed, each payment and its
confirmation, and a financial milestone verified only once every person's amount is settled.

A debt-bondage case with 32 workers: 30 are owed a recruitment fee of 1,500 USD each (recorded at
intake, as a group), one is owed withheld wages in Congolese francs (recorded by the case lead).
Payments are recorded by the fee milestone's owner, confirmed by the victims' representative (or
the case lead when the worker confirmed to them); every refusal stores nothing.
"""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from models.enums import DecisionKind, MilestoneStatus, OwedKind, Step
from models.intake import ReportIn
from models.ledger import LedgerEntry, Payment, PaymentMethod
from models.tables import AuditEvent, PlanAction
from tasks.case_state import begin_case, open_step
from tasks.intake import open_case, read_report
from tasks.steps.implement import MilestoneUpdateError, activate_plan, update_milestone
from tasks.store.cases import get_case
from tasks.store.db import read_only
from tasks.store.ledger import LedgerError, confirm_payment, record_owed, record_payment, waive
from tasks.store.ledger_view import by_action, ledger_summary, unsettled
from tasks.store.vault import get_vault
from tests.conftest import Store
from tests.integration.factories import (
    ADVOCATE,
    LEAD,
    OBSERVER,
    SAMPLE_REPORT,
    SUPPLIER,
    Clock,
    SampleCase,
    dump_store,
    load_sample_directory,
    respond,
    rows,
    start_sample_case,
    verify,
)
from tests.integration.test_cli_actor import map_me, me
from tests.integration.test_intake import run_cli

WORKERS = 32
FEE = Decimal("1500")
WAGES = Decimal("350000.50")
CANARY_REFERENCE = "DE89-CANARY-3704-0044-0532"
NAMES = [f"Canaryname Worker{n:02d}" for n in range(1, WORKERS + 1)]
FEE_PAYERS = [f"P-{n:02d}" for n in range(1, 31)]


def bondage_report(clock: Clock) -> ReportIn:
    """The sample report with 32 named workers; the first 30 owed 1,500 USD each at intake."""
    report = read_report(SAMPLE_REPORT, now=clock.now)
    data: dict[str, Any] = report.model_dump(mode="json")
    data["description"] = f"{report.description} (ledger test)"
    data["affected_persons"] = [
        {"age_band": "25_to_34", "sex": "male", "nationality": "CD", "identity": {"name": name}}
        for name in NAMES
    ]
    data["persons_reported"] = 40
    data["owed"] = [
        {"kind": "recruitment_fee", "currency": "USD", "amount": 1500, "pseudonyms": FEE_PAYERS}
    ]
    return ReportIn.model_validate(data, context={"now": clock.now})


def drafted_bondage_case(clock: Clock) -> SampleCase:
    """The 32-worker case, verified and responded to, its plan drafted in step 3."""
    from tasks.steps.plan import draft_plan

    load_sample_directory(clock.now)
    ref = open_case(bondage_report(clock), now=clock.tick(), actor="test").reference
    # one person's withheld wages, in another currency, before the plan is drafted
    record_owed(
        ref,
        kind=OwedKind.WITHHELD_WAGES,
        currency="CDF",
        amount=WAGES,
        pseudonyms=["P-31"],
        by=LEAD,
        now=clock.tick(),
    )
    begin_case(ref, now=clock.tick())
    run_id = uuid.uuid4()
    ctx = open_step(ref, Step.VERIFY, flow_run_id=run_id, now=clock.tick())
    case = SampleCase(ref=ref, clock=clock, ctx=ctx, run_id=run_id)
    verify(case)
    respond(case)
    case.enter(Step.PLAN)
    draft_plan(case.ref, now=case.clock.tick())
    return case


def bondage_case(clock: Clock) -> SampleCase:
    """The 32-worker case, its plan agreed, funded and activated: implementing."""
    case = drafted_bondage_case(clock)
    case.decide(DecisionKind.PLAN_AGREEMENT)
    case.decide(DecisionKind.PLAN_BUDGET)
    case.enter(Step.IMPLEMENT)
    activate_plan(case.ref, now=case.clock.tick())
    return case


def action(case: SampleCase, key: str) -> PlanAction:
    found = [a for a in rows(PlanAction, PlanAction.key == key) if a.status != "superseded"]
    assert found, f"no milestone {key}"
    return found[-1]


def refused(store: Store, match: str, call: Any) -> None:
    """`call` raises LedgerError matching `match`, and no row of any table changed."""
    before = store.row_counts()
    with pytest.raises(LedgerError, match=match):
        call()
    assert store.row_counts() == before


def pay(case: SampleCase, who: str, amount: str, *, by: str = SUPPLIER, **kw: Any) -> uuid.UUID:
    values: dict[str, Any] = {
        "kind": OwedKind.RECRUITMENT_FEE,
        "currency": "USD",
        "paid_on": date(2026, 11, 26),
        "method": PaymentMethod.MOBILE_MONEY,
        "reference": None,
        "evidence": [f"doc:receipt-{who}"],
    } | kw
    return record_payment(case.ref, who, amount=amount, by=by, now=case.clock.tick(), **values)


def test_a_fee_milestone_is_verified_only_when_every_workers_payment_is_confirmed_or_waived(
    store: Store,
) -> None:
    case = bondage_case(Clock())
    fee, back = action(case, "fee-reimbursement"), action(case, "back-pay")
    fees = rows(LedgerEntry, LedgerEntry.kind == OwedKind.RECRUITMENT_FEE)
    assert len(fees) == 30 and {e.source for e in fees} == {"intake"}
    assert len({e.group_id for e in fees}) == 1 and fees[0].group_id is not None
    with read_only() as session:
        assert {line.pseudonym for line in by_action(session, fee)} == set(FEE_PAYERS)
        assert [(x.pseudonym, x.currency) for x in by_action(session, back)] == [("P-31", "CDF")]
        assert len(unsettled(session, fee)) == 30
        assert unsettled(session, action(case, "document-return")) == []

    update_milestone(
        case.ref,
        "fee-reimbursement",
        status=MilestoneStatus.DONE,
        by=SUPPLIER,
        evidence=["doc:receipts"],
        now=case.clock.tick(),
    )
    with pytest.raises(
        MilestoneUpdateError, match=r"P-01 \(recruitment_fee\): payment not confirmed"
    ):
        update_milestone(
            case.ref,
            "fee-reimbursement",
            status=MilestoneStatus.VERIFIED,
            by=LEAD,
            now=case.clock.tick(),
        )

    # the milestone's owner pays 28 workers in full (P-01 in two parts), P-30 half
    payments = [pay(case, "P-01", "1000.10"), pay(case, "P-01", "499.90")]
    payments += [pay(case, p, "1500.00") for p in FEE_PAYERS[1:28]]
    half = pay(case, "P-30", "750", method=PaymentMethod.BANK_TRANSFER, reference=CANARY_REFERENCE)
    # the representative confirms every payment but P-30's; the case lead one the worker confirmed
    for pid in payments[:-1]:
        confirm_payment(
            case.ref, pid, given_by="representative", by=ADVOCATE, now=case.clock.tick()
        )
    confirm_payment(case.ref, payments[-1], given_by="person", by=LEAD, now=case.clock.tick())
    with read_only() as session:
        assert unsettled(session, fee) == ["P-29 (recruitment_fee)", "P-30 (recruitment_fee)"]
    with pytest.raises(MilestoneUpdateError, match=r"P-29 \(recruitment_fee\)"):
        update_milestone(
            case.ref,
            "fee-reimbursement",
            status=MilestoneStatus.VERIFIED,
            by=LEAD,
            now=case.clock.tick(),
        )

    # P-29 is waived with a reason; P-30's half is confirmed, then the other half paid, confirmed
    waive(
        case.ref,
        "P-29",
        "recruitment_fee",
        "usd",
        reason="Fee already refunded by the recruiter",
        by=LEAD,
        now=case.clock.tick(),
    )
    confirm_payment(case.ref, half, given_by="representative", by=ADVOCATE, now=case.clock.tick())
    rest = pay(case, "P-30", "750.00")
    confirm_payment(case.ref, rest, given_by="representative", by=ADVOCATE, now=case.clock.tick())
    with read_only() as session:
        assert unsettled(session, fee) == []
        assert unsettled(session, back) == ["P-31 (withheld_wages)"]
    done = update_milestone(
        case.ref,
        "fee-reimbursement",
        status=MilestoneStatus.VERIFIED,
        by=LEAD,
        now=case.clock.tick(),
    )
    assert done.status == MilestoneStatus.VERIFIED

    # totals per currency, computed here from what was paid
    paid_usd = Decimal("1000.10") + Decimal("499.90") + 27 * Decimal("1500.00") + 2 * Decimal(750)
    with read_only() as session:
        summary = ledger_summary(session, get_case(session, case.ref).id)
    usd, cdf = summary.totals["USD"], summary.totals["CDF"]
    assert (usd.owed, usd.waived, usd.paid, usd.confirmed) == (
        29 * FEE,
        FEE,
        paid_usd,
        paid_usd,
    )
    assert (cdf.owed, cdf.paid, cdf.confirmed) == (WAGES, 0, 0)
    lines = {(x.pseudonym, x.kind): x for x in summary.lines}
    assert lines["P-01", OwedKind.RECRUITMENT_FEE].paid == FEE
    assert lines["P-29", OwedKind.RECRUITMENT_FEE].waived
    assert lines["P-29", OwedKind.RECRUITMENT_FEE].status == "waived"
    assert lines["P-31", OwedKind.WITHHELD_WAGES].status == "owed"
    assert len(summary.payments) == 31
    assert not summary.settled  # P-31's wages are still owed

    # the bank reference is sealed: absent from every row in clear, readable through the vault
    assert CANARY_REFERENCE not in dump_store(store)
    sealed = rows(Payment, Payment.id == half)[0].reference_ciphertext
    assert get_vault().decrypt(sealed) == {"reference": CANARY_REFERENCE}

    # the audit trail: amounts, kinds, currencies and pseudonyms; never a name or the reference
    events = [e for e in case.audit() if e.action.startswith("ledger.")]
    assert [e.action for e in events].count("ledger.payment_recorded") == 31
    assert [e.action for e in events].count("ledger.payment_confirmed") == 31
    owed = [e.details for e in events if e.action == "ledger.owed"]
    assert owed[0] | {"group": "-"} == {
        "kind": "recruitment_fee",
        "currency": "USD",
        "amount": "1500.00",
        "persons": FEE_PAYERS,
        "replaced": [],
        "source": "intake",
        "group": "-",
    }
    assert owed[1]["persons"] == ["P-31"] and owed[1]["amount"] == "350000.50"
    text = " ".join(f"{e.actor} {e.details}" for e in rows(AuditEvent))
    assert "Canaryname" not in text and "CANARY" not in text and "refunded" not in text
    assert case.chain().ok


def test_refusals_say_why_and_store_nothing(store: Store) -> None:
    case = bondage_case(Clock())
    first = pay(case, "P-01", "1500")

    refused(store, "has no affected person P-99", lambda: pay(case, "P-99", "10"))
    refused(store, "more than zero, not -5", lambda: pay(case, "P-02", "-5"))
    refused(store, "more than zero", lambda: pay(case, "P-02", "0"))
    refused(
        store,
        "P-02 is owed recruitment_fee in USD, not in EUR",
        lambda: pay(case, "P-02", "10", currency="EUR"),
    )
    refused(store, "nothing is owed to P-32 as recruitment_fee", lambda: pay(case, "P-32", "10"))
    refused(
        store,
        r"10\.005 USD has more decimals than USD allows \(2\)",
        lambda: pay(case, "P-02", "10.005"),
    )
    refused(
        store,
        "0.5 RWF has more decimals",
        lambda: record_owed(
            case.ref,
            kind="compensation",
            currency="RWF",
            amount="0.5",
            pseudonyms=["P-02"],
            by=LEAD,
            now=case.clock.tick(),
        ),
    )
    refused(store, "finite", lambda: pay(case, "P-02", "NaN"))
    refused(store, "cannot exceed", lambda: pay(case, "P-02", "1000000000000.01"))
    refused(store, "not an active ISO 4217 code", lambda: pay(case, "P-02", "5", currency="XXX"))
    refused(store, "not as float", lambda: pay(case, "P-02", 0.1))
    # a double payment: P-01 was paid in full already
    refused(
        store,
        r"1500\.00 USD to P-01 \(recruitment_fee\) is more than remains owed: "
        r"0\.00 USD of 1500\.00 USD",
        lambda: pay(case, "P-01", "1500"),
    )
    refused(store, "in the future", lambda: pay(case, "P-02", "5", paid_on=date(2027, 1, 1)))
    refused(store, "only the case lead or the owner", lambda: pay(case, "P-02", "5", by=OBSERVER))
    refused(
        store,
        "only the case lead records amounts owed",
        lambda: record_owed(
            case.ref,
            kind="compensation",
            currency="USD",
            amount="5",
            pseudonyms=None,
            by=SUPPLIER,
            now=case.clock.tick(),
        ),
    )
    refused(
        store,
        "has no affected person P-77",
        lambda: record_owed(
            case.ref,
            kind="compensation",
            currency="USD",
            amount="5",
            pseudonyms=["P-02", "P-77"],
            by=LEAD,
            now=case.clock.tick(),
        ),
    )
    refused(
        store,
        "P-01 .recruitment_fee, USD. has payments already",
        lambda: record_owed(
            case.ref,
            kind="recruitment_fee",
            currency="USD",
            amount="2000",
            pseudonyms=None,
            by=LEAD,
            now=case.clock.tick(),
        ),
    )
    refused(
        store,
        "needs a reason",
        lambda: waive(
            case.ref, "P-02", "recruitment_fee", "USD", reason="  ", by=LEAD, now=case.clock.tick()
        ),
    )

    # confirming: the representative, or the lead for the person's own word; once only
    refused(
        store,
        "only the case's victim representative",
        lambda: confirm_payment(
            case.ref, first, given_by="representative", by=LEAD, now=case.clock.tick()
        ),
    )
    refused(
        store,
        "only the case's victim representative",
        lambda: confirm_payment(
            case.ref, first, given_by="person", by=SUPPLIER, now=case.clock.tick()
        ),
    )
    confirm_payment(case.ref, first, given_by="person", by=ADVOCATE, now=case.clock.tick())
    refused(
        store,
        "was confirmed already",
        lambda: confirm_payment(
            case.ref, first, given_by="person", by=ADVOCATE, now=case.clock.tick()
        ),
    )
    refused(
        store,
        "has no payment",
        lambda: confirm_payment(
            case.ref, uuid.uuid4(), given_by="person", by=ADVOCATE, now=case.clock.tick()
        ),
    )

    # nothing paid yet: a second amount for the same person, kind and currency replaces the first
    record_owed(
        case.ref,
        kind="withheld_wages",
        currency="cdf",
        amount="400000",
        pseudonyms=["P-31"],
        by=LEAD,
        now=case.clock.tick(),
    )
    entries = rows(LedgerEntry, LedgerEntry.kind == OwedKind.WITHHELD_WAGES)
    assert [e.amount for e in entries] == [Decimal("400000.00")]
    replaced = [e for e in case.audit() if e.action == "ledger.owed"][-1]
    assert replaced.details["replaced"] == ["P-31"]


def test_amounts_are_exact_decimals(store: Store) -> None:
    case = bondage_case(Clock())
    record_owed(
        case.ref,
        kind="compensation",
        currency="USD",
        amount="0.3",
        pseudonyms=["P-32"],
        by=LEAD,
        now=case.clock.tick(),
    )
    record_owed(
        case.ref,
        kind="compensation",
        currency="KWD",
        amount="1.001",
        pseudonyms=["P-32"],
        by=LEAD,
        now=case.clock.tick(),
    )
    big = "999999999999.99"
    record_owed(
        case.ref,
        kind="compensation",
        currency="EUR",
        amount=big,
        pseudonyms=["P-32"],
        by=LEAD,
        now=case.clock.tick(),
    )
    comp = {"kind": "compensation", "by": LEAD}
    a = pay(case, "P-32", "0.1", **comp)
    b = pay(case, "P-32", "0.2", **comp)  # 0.1 + 0.2 == 0.3 exactly: nothing remains
    refused(store, "more than remains owed: 0.00 USD", lambda: pay(case, "P-32", "0.01", **comp))
    pay(case, "P-32", big, currency="EUR", **comp)
    pay(case, "P-32", "1.001", currency="KWD", **comp)
    for pid in (a, b):
        confirm_payment(case.ref, pid, given_by="person", by=LEAD, now=case.clock.tick())
    with read_only() as session:
        summary = ledger_summary(session, get_case(session, case.ref).id)
    lines = {x.currency: x for x in summary.lines if x.pseudonym == "P-32"}
    assert lines["USD"].paid == lines["USD"].confirmed == Decimal("0.3") and lines["USD"].settled
    assert lines["EUR"].paid == Decimal(big) and not lines["EUR"].settled
    assert lines["KWD"].owed == Decimal("1.001")
    assert summary.totals["EUR"].paid == Decimal(big)


def test_amounts_at_intake_are_checked_against_the_reports_persons(store: Store) -> None:
    clock = Clock()
    data = bondage_report(clock).model_dump(mode="json")
    for bad, why in [
        (
            {"kind": "recruitment_fee", "currency": "USD", "amount": "5", "pseudonyms": ["P-33"]},
            "owed.0. names P-33",
        ),
        ({"kind": "recruitment_fee", "currency": "JPY", "amount": "0.5"}, "more decimals"),
        ({"kind": "recruitment_fee", "currency": "USD", "amount": -3}, "more than zero"),
    ]:
        with pytest.raises(ValueError, match=why):
            ReportIn.model_validate({**data, "owed": [bad]}, context={"now": clock.now})


def test_remedy_ledger_owe_and_show_on_the_command_line(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    map_me(tmp_path)  # this account is lena.lead, the case lead
    case = start_sample_case(Clock(), directory=False, owed=False)
    argv = ["ledger", "owe", case.ref, "--kind", "recruitment_fee", "--currency", "USD"]
    assert run_cli(*argv, "--amount", "1500", "--person", "P-01", "--person", "P-03") == 0
    assert run_cli(*argv, "--amount", "1500.001") == 1
    assert "more decimals than USD allows" in capsys.readouterr().err
    assert run_cli(*argv, "--amount", "20", "--person", "P-09") == 1
    assert "has no affected person P-09" in capsys.readouterr().err
    capsys.readouterr()
    assert run_cli("ledger", "show", case.ref) == 0
    shown = capsys.readouterr().out
    assert "P-01" in shown and "P-03" in shown and "P-02" not in shown
    assert "recruitment_fee" in shown and "3,000.00" in shown
    assert "Jean-Baptiste" not in shown and "Emmanuel" not in shown
    assert sorted(e.amount for e in rows(LedgerEntry)) == [Decimal("1500.00")] * 2

    paid = ["ledger", "pay", case.ref, "P-01", "--kind", "recruitment_fee", "--currency", "usd"]
    paid += ["--paid-on", "2026-11-26", "--method", "cash", "--evidence", "doc:receipt-1"]
    assert run_cli(*paid, "--amount", "1500", "--payment-reference", CANARY_REFERENCE) == 0
    assert run_cli(*paid, "--amount", "0.01") == 1
    assert "more than remains owed: 0.00 USD of 1500.00 USD" in capsys.readouterr().err
    (payment,) = rows(Payment)
    confirm = ["ledger", "confirm", case.ref, str(payment.id), "--given-by"]
    assert run_cli(*confirm, "representative") == 1  # the case lead only for the person's word
    assert run_cli(*confirm, "person") == 0
    assert run_cli(*confirm, "person") == 1
    assert "was confirmed already" in capsys.readouterr().err
    waived = ["ledger", "waive", case.ref, "P-03", "--kind", "recruitment_fee", "--currency", "USD"]
    assert run_cli(*waived, "--reason", "Refunded by the recruiter") == 0
    capsys.readouterr()
    assert run_cli("ledger", "show", case.ref) == 0
    shown = capsys.readouterr().out
    assert "confirmed" in shown and "waived" in shown and str(payment.id) in shown
    assert CANARY_REFERENCE not in shown
    assert {e.details.get("os_user") for e in case.audit() if e.action.startswith("ledger.")} == {
        me()
    }
