"""Consent is each person's own: when consent lets a case work, and each person's outcome."""

from __future__ import annotations

import pytest

from models.policy import (
    ConsentRules,
    PersonOutcome,
    case_handling_active,
    load_policy,
    person_outcome,
)

EACH_OWN = ConsentRules()
WHOLE_CASE = ConsentRules(hold_whole_case_on_withdrawal=True)


@pytest.mark.parametrize(
    ("persons", "withdrawn", "each_own", "whole_case"),
    [
        (2, 0, True, True),
        (2, 1, True, False),  # one withdrew: the case goes on for the other, unless the policy
        (2, 2, False, False),  # nobody's consent stands: the whole case holds
        (1, 1, False, False),
        (0, 0, True, True),  # no person on file: consent holds nothing
    ],
)
def test_the_whole_case_holds_only_when_nobody_with_consent_remains_or_the_policy_says_so(
    persons: int, withdrawn: int, each_own: bool, whole_case: bool
) -> None:
    assert case_handling_active(persons, withdrawn, EACH_OWN) is each_own
    assert case_handling_active(persons, withdrawn, WHOLE_CASE) is whole_case


def test_the_shipped_policy_lets_the_case_go_on_for_the_others() -> None:
    assert load_policy().consent == EACH_OWN


@pytest.mark.parametrize(
    ("withdrawn", "verified", "waived", "unsettled", "outcome"),
    [
        (True, 3, 0, 0, PersonOutcome.WITHDREW_CONSENT),
        (False, 0, 0, 0, PersonOutcome.NO_PERSONAL_ACTIONS),
        (False, 0, 2, 1, PersonOutcome.NOT_REMEDIED),
        (False, 2, 1, 0, PersonOutcome.PARTLY_REMEDIED),
        (False, 2, 0, 1, PersonOutcome.PARTLY_REMEDIED),
        (False, 3, 0, 0, PersonOutcome.REMEDIED),
    ],
)
def test_each_persons_outcome(
    withdrawn: bool, verified: int, waived: int, unsettled: int, outcome: PersonOutcome
) -> None:
    assert (
        person_outcome(withdrawn=withdrawn, verified=verified, waived=waived, unsettled=unsettled)
        is outcome
    )
