"""IOM step 6, capture lessons learned, on real stores: what a lesson keeps, and that only once.

The sample case's lessons on the happy path are checked by tests/integration/test_all_six_steps.py;
this file takes a case closed as screened out.
"""

from __future__ import annotations

from models.enums import CaseEvent, CaseState, CaseStatus, DecisionKind, Step
from models.tables import Decision, Lesson, Notification
from tests.conftest import Store
from tests.integration.factories import Clock, count, rows, script, stakeholder_id, to_closing
from tests.integration.steps_helpers import assert_state, transitions
from tests.integration.test_free_text_sealed import in_clear


def test_lessons_keep_the_causes_and_the_changes_given_once(store: Store) -> None:
    case = to_closing(Clock())
    proposal = case.decide(DecisionKind.CLOSURE, closure_type="no_basis")
    case.decide(
        DecisionKind.CLOSURE_CONFIRMATION,
        scope=case.confirmation_scope(proposal),
        exclude=[proposal.approver_id],
    )
    assert_state(case, CaseState.CLOSED, Step.LESSONS, CaseStatus.CLOSED)
    case.enter(Step.LESSONS)
    assert "- Closed as: no_basis" in case.prepare(DecisionKind.LESSONS).description

    who, values = script(DecisionKind.LESSONS)
    lessons = case.decide(
        DecisionKind.LESSONS,
        changes=["  Screen intermediaries for recruitment fees  ", "   "],
        change_owner_role="senior_approver",
        summary="   ",
    )
    assert lessons.outcome == "recorded" and lessons.approver == who
    assert_state(case, CaseState.LESSONS_CAPTURED, Step.LESSONS, CaseStatus.CLOSED)
    assert transitions(case)[-1] == (CaseEvent.LESSONS_RECORDED, "closed", "lessons_captured")
    # blank changes are dropped, the rest trimmed; a blank summary is no summary
    [lesson] = rows(Lesson, Lesson.case_id == case.case().id)
    assert lesson.root_causes == values["root_causes"]
    assert [{**c, "change": in_clear(lesson.case_id, c["change"])} for c in lesson.changes] == [
        {"change": "Screen intermediaries for recruitment fees", "owner_role": "senior_approver"}
    ]
    assert lesson.summary is None
    told = rows(Notification, Notification.event == "lessons_ready")
    assert stakeholder_id(who) in {n.recipient_id for n in told}
    assert all(n.context["root_causes"] == values["root_causes"] for n in told)

    # a resumed or repeated step 6 finds the lessons decided and writes nothing new
    before, events = store.row_counts(), len(case.audit())
    again = case.prepare(DecisionKind.LESSONS)
    assert again.decision is not None and again.decision.id == lessons.id
    assert store.row_counts() == before and len(case.audit()) == events
    assert count(Decision, Decision.kind == DecisionKind.LESSONS) == 1
    assert case.chain().ok
