"""IOM step 5, close the incident, on real stores: which closures a case allows."""

from __future__ import annotations

from models.enums import CaseState, DecisionKind, Step
from tests.conftest import Store
from tests.integration.factories import Clock, implement, script, to_implementing


def test_a_remedied_case_cannot_be_closed_as_no_basis(store: Store) -> None:
    case = to_implementing(Clock())
    implement(case)
    assert case.case().state == CaseState.CLOSING
    case.enter(Step.CLOSE)
    pending = case.prepare(DecisionKind.CLOSURE)
    who, values = script(DecisionKind.CLOSURE, closure_type="no_basis")
    result = case.submit(pending.request_id, who, values)
    assert not result.accepted
    assert "screened out or unsubstantiated" in (result.reason or "")
