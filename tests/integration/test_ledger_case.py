"""A debt-bondage case with dozens of workers, from the amounts at intake to the lessons report
(issue 13's first test): the agreement page shows each person's amount and the total, the budget
approves the totals per currency, each payment is recorded and confirmed, the fee milestone is
verified once all are, and the lessons report's totals match a count made here.

Below Prefect: the steps' own functions on real stores, and the approval page through Starlette's
TestClient (as tests/integration/test_web_app.py does).
"""

from __future__ import annotations

import statistics
import uuid
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlmodel import select

from demo.scripted import REPRESENTATIVE, settle
from flows.web.app import create_app
from models.enums import CaseState, DecisionKind, Locale, MilestoneStatus, OwedKind, Step
from models.ledger import Payment
from models.tables import ActionPlan, ApprovalLink, Decision, PlanAction, Stakeholder
from tasks.context import utcnow
from tasks.reports.lessons import lessons_figures
from tasks.reports.lessons_render import render_lessons
from tasks.reports.portfolio import portfolio
from tasks.steps.implement import MilestoneUpdateError, activate_plan, update_milestone
from tasks.store.db import read_only
from tests.conftest import Store, _clear_caches
from tests.integration.factories import (
    LEAD,
    Clock,
    milestones,
    rows,
)
from tests.integration.test_ledger import FEE_PAYERS, WAGES, drafted_bondage_case
from tests.integration.test_web_app import NOWHERE, TestClient, link_decides_policy
from tests.integration.test_web_links import token_of


@pytest.fixture
def page(store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[TestClient]:
    """The approval page's app, Prefect pointed where nothing answers."""
    monkeypatch.setenv("PREFECT_API_URL", NOWHERE)
    monkeypatch.setenv("REMEDY_POLICY_FILE", str(link_decides_policy(tmp_path)))
    _clear_caches()
    with (
        temporary_settings({PREFECT_API_URL: NOWHERE}),
        TestClient(create_app(check_seconds=0)) as client,
    ):
        yield client


def _link(request_id: uuid.UUID, who: str) -> ApprovalLink:
    with read_only() as session:
        link = session.exec(
            select(ApprovalLink)
            .join(Stakeholder)
            .where(ApprovalLink.request_id == request_id, Stakeholder.key == who)
        ).first()
    assert link is not None, f"{who} has no link for {request_id}"
    return link


def test_a_debt_bondage_case_from_the_amounts_at_intake_to_the_lessons_report(
    page: TestClient, store: Store
) -> None:
    clock = Clock(utcnow())  # the page reads the real clock: its links are valid now
    case = drafted_bondage_case(clock)
    ref = case.ref

    # the victims' representative's agreement page: each person's amount, the total, and the
    # fee action's own amount
    pending = case.prepare(DecisionKind.PLAN_AGREEMENT)
    shown = page.get(f"/a/{token_of(_link(pending.request_id, REPRESENTATIVE))}")
    assert shown.status_code == 200
    text = shown.text
    for pseudonym in FEE_PAYERS:
        assert f"<td>{pseudonym}</td>" in text
    assert text.count("1,500.00 USD") >= len(FEE_PAYERS)
    assert "350,000.50 CDF" in text
    assert "350,000.50 CDF (1 person); 45,000.00 USD (30 persons)" in text  # the total
    assert "45,000.00 USD to 30 persons" in text  # on the fee-reimbursement action's row
    assert "Canaryname" not in text  # amounts by pseudonym, never names
    case.decide(DecisionKind.PLAN_AGREEMENT)

    # the budget approves the totals per currency, recorded exactly with the decision
    budget = case.decide(DecisionKind.PLAN_BUDGET)
    with read_only() as session:
        decided = session.get(Decision, budget.id)
        assert decided is not None
        assert decided.payload["approved_owed"] == {"CDF": "350000.50", "USD": "45000.00"}

    # implementation: the portfolio shows owed / paid / confirmed as payments come in
    case.enter(Step.IMPLEMENT)
    activate_plan(ref, now=clock.tick())
    [row] = [r for r in portfolio(now=clock.now)[0] if r["case"] == ref]
    assert (
        row["owed / paid / confirmed"]
        == "350,000.50 / 0.00 / 0.00 CDF; 45,000.00 / 0.00 / 0.00 USD"
    )
    fee_key = "fee-reimbursement"
    update_milestone(
        ref, fee_key, status=MilestoneStatus.DONE, by=LEAD, evidence=["doc:fees"], now=clock.tick()
    )
    with pytest.raises(MilestoneUpdateError, match="P-01 \\(recruitment_fee\\)"):
        update_milestone(ref, fee_key, status=MilestoneStatus.VERIFIED, by=LEAD, now=clock.tick())
    for key, owner in milestones(ref):
        if key != fee_key:
            update_milestone(
                ref,
                key,
                status=MilestoneStatus.DONE,
                by=owner or LEAD,
                evidence=[key],
                now=clock.tick(),
            )
        clock.tick(days=1)
        settle(ref, key, payer=LEAD, representative=REPRESENTATIVE, now=clock.tick())
        update_milestone(ref, key, status=MilestoneStatus.VERIFIED, by=LEAD, now=clock.tick())
    assert case.case().state == CaseState.CLOSING

    # the closure, by two different approvers
    case.enter(Step.CLOSE)
    stored = case.case().closure_type
    proposal = case.decide(
        DecisionKind.CLOSURE, **({"closure_type": stored.value} if stored else {})
    )
    case.decide(
        DecisionKind.CLOSURE_CONFIRMATION,
        scope=case.confirmation_scope(proposal),
        exclude=[proposal.approver_id],
    )

    # the lessons report's totals against a count made here from the rows themselves
    with read_only() as session:
        payments = list(session.exec(select(Payment)).all())
        approved = min(
            p.approved_at
            for p in rows(ActionPlan, ActionPlan.case_id == case.case().id)
            if p.approved_at
        )
    sums: dict[str, Decimal] = defaultdict(Decimal)
    for p in payments:
        assert p.confirmed_at is not None
        sums[p.currency] += p.amount
    assert sums == {"USD": Decimal("45000"), "CDF": WAGES}
    days = [(p.confirmed_at - approved).total_seconds() / 86400 for p in payments]  # type: ignore[operator]
    figures = lessons_figures(since=None, now=clock.tick())
    repaid = {(r.kind, r.currency): r for r in figures.repaid}
    fee = repaid[(OwedKind.RECRUITMENT_FEE, "USD")]
    wages = repaid[(OwedKind.WITHHELD_WAGES, "CDF")]
    assert (fee.persons, fee.owed, fee.paid, fee.confirmed) == (30, *[Decimal("45000")] * 3)
    assert (wages.persons, wages.owed, wages.paid, wages.confirmed) == (1, *[WAGES] * 3)
    assert figures.confirmed_payments == len(payments) == 31
    assert figures.median_days_to_confirmed_payment == round(statistics.median(days), 1)
    assert all(
        a.status == MilestoneStatus.VERIFIED for a in rows(PlanAction, PlanAction.key == fee_key)
    )
    # and the report says it, in the reader's language
    report = render_lessons(figures, "md", locale=Locale.ES)
    assert "Lo que se reembolsó" in report and "comisiones de contratación" in report
    assert "45,000.00 USD" in report and "350,000.50 CDF" in report
