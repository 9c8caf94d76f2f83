"""Plans from facts: the child-specific measures for every presumed minor, and the financial
actions chosen by what is owed (the remedy ledger), not by an indicator (docs/domain.md)."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from models.enums import IloIndicator, Involvement, OwedKind, Severity
from models.plan import (
    ActionDraft,
    Conditions,
    PersonFacts,
    PlanFacts,
    draft_actions,
    load_plan_templates,
)
from models.policy import load_policy

POLICY = load_policy()
TEMPLATES = load_plan_templates()
TODAY = date(2026, 3, 10)


def facts(
    *indicators: IloIndicator,
    persons: tuple[PersonFacts, ...] = (),
    owed: frozenset[OwedKind] = frozenset(),
) -> PlanFacts:
    return PlanFacts(
        country="CD",
        indicators=frozenset(indicators),
        persons=persons,
        involvement=Involvement.CONTRIBUTE,
        severity=Severity.HIGH,
        owed=owed,
    )


def draft(case: PlanFacts) -> dict[str, ActionDraft]:
    return {a.key: a for a in draft_actions(case, TEMPLATES, today=TODAY, policy=POLICY)}


def child(pseudonym: str, *, uncertain: bool = False) -> PersonFacts:
    return PersonFacts(pseudonym=pseudonym, is_minor=not uncertain, age_uncertain=uncertain)


# The fee, wages and debt actions follow what is owed.


def test_debt_bondage_without_a_fee_owed_gets_no_fee_reimbursement() -> None:
    actions = draft(facts(IloIndicator.DEBT_BONDAGE, IloIndicator.DECEPTION))
    assert "fee-reimbursement" not in actions
    assert "debt-cancellation" not in actions
    assert "back-pay" not in actions


def test_a_recruitment_fee_owed_gets_fee_reimbursement_without_any_indicator() -> None:
    actions = draft(facts(owed=frozenset({OwedKind.RECRUITMENT_FEE})))
    assert actions["fee-reimbursement"].category == "fee_reimbursement"
    assert "back-pay" not in actions
    assert "debt-cancellation" not in actions
    with_bondage = draft(
        facts(IloIndicator.DEBT_BONDAGE, owed=frozenset({OwedKind.RECRUITMENT_FEE}))
    )
    assert "fee-reimbursement" in with_bondage


@pytest.mark.parametrize("kind", [OwedKind.WITHHELD_WAGES, OwedKind.ILLEGAL_DEDUCTIONS])
def test_wages_or_deductions_owed_get_back_pay(kind: OwedKind) -> None:
    actions = draft(facts(owed=frozenset({kind})))
    assert actions["back-pay"].category == "back_pay"
    assert "fee-reimbursement" not in actions
    assert "back-pay" not in draft(facts(IloIndicator.WITHHOLDING_OF_WAGES))


def test_a_debt_cancelled_gets_debt_cancellation() -> None:
    actions = draft(facts(owed=frozenset({OwedKind.DEBT_CANCELLED})))
    assert actions["debt-cancellation"].category == "debt_cancellation"
    assert "fee-reimbursement" not in actions


def test_compensation_owed_alone_draws_no_fee_wages_or_debt_action() -> None:
    actions = draft(facts(owed=frozenset({OwedKind.COMPENSATION})))
    assert {"fee-reimbursement", "back-pay", "debt-cancellation"}.isdisjoint(actions)


def test_owed_any_is_checked_like_the_other_conditions() -> None:
    assert Conditions(owed_any=("recruitment_fee",)).owed_any == (OwedKind.RECRUITMENT_FEE,)
    with pytest.raises(ValidationError, match="an empty list never matches"):
        Conditions(owed_any=())
    with pytest.raises(ValidationError, match="owed_any"):
        Conditions(owed_any=("recruitment_fees",))
    assert not Conditions(owed_any=("compensation",)).always


# Children: every child-specific measure of the guidelines, one per presumed minor.

CHILD_MEASURES = (
    "child-removal",
    "child-guardian",
    "child-information",
    "child-schooling",
    "child-family-tracing",
    "child-documents",
    "child-reintegration",
)


def test_two_children_get_family_tracing_and_reunification_each() -> None:
    adult = PersonFacts(pseudonym="P-03", is_minor=False, age_uncertain=False)
    actions = draft(facts(persons=(child("P-01"), child("P-02", uncertain=True), adult)))
    for pseudonym in ("P-01", "P-02"):
        tracing = actions[f"child-family-tracing-{pseudonym.lower()}"]
        assert tracing.person == pseudonym
        assert tracing.title.endswith(f" ({pseudonym})")
        assert "best-interests assessment" in tracing.title
        assert "reunif" in tracing.title
        assert "Best-interests assessment on file before any reunification" in (
            tracing.verification_method
        )
        for measure in CHILD_MEASURES:
            assert f"{measure}-{pseudonym.lower()}" in actions
    assert not [k for k in actions if k.startswith("child-") and k.endswith("-p-03")]


def test_the_child_measures_cover_information_documents_and_reintegration() -> None:
    actions = draft(facts(persons=(child("P-01"),)))
    information = actions["child-information-p-01"]
    assert "child-friendly" in information.title
    assert "age-appropriate" in information.title
    documents = actions["child-documents-p-01"]
    assert "birth" in documents.title
    reintegration = actions["child-reintegration-p-01"]
    assert (reintegration.category, reintegration.person) == ("return_reintegration", "P-01")
    assert "family and community" in reintegration.title
    # The guardian and the information come before the slower tracing and follow-up.
    assert information.due_on <= actions["child-family-tracing-p-01"].due_on
    assert actions["child-guardian-p-01"].due_on < actions["child-family-tracing-p-01"].due_on
