"""IOM step 6, capture lessons learned: root causes and the changes that should keep the harm
from happening again.
"""

from __future__ import annotations

from sqlmodel import Session, select

from models.enums import CaseEvent, DecisionKind, NotificationEvent, Role, Step
from models.forms import LessonsForm
from models.tables import ClosureRecord, DecisionRequest, Lesson, RemediationCase
from notifications.outbox import notify
from tasks.context import current_routing
from tasks.steps.base import DecisionSpec, HandlerContext, Verdict, transition
from tasks.store.sealed import seal_text


def handle_lessons(ctx: HandlerContext) -> Verdict:
    form = ctx.form
    assert isinstance(form, LessonsForm)
    session, case = ctx.session, ctx.case
    lesson = session.exec(select(Lesson).where(Lesson.case_id == case.id)).first()
    if lesson is None:
        lesson = Lesson(case_id=case.id, recorded_at=ctx.now)
    lesson.root_causes = [r.value for r in form.root_causes]
    lesson.changes = [
        {
            "change": seal_text(session, case.id, c.strip()[:500]),
            "owner_role": form.change_owner_role.value,
        }
        for c in form.changes
        if c.strip()
    ]
    lesson.summary = seal_text(session, case.id, form.summary.strip())
    lesson.recorded_at = ctx.now
    session.add(lesson)
    transition(ctx, CaseEvent.LESSONS_RECORDED)
    notify(
        session,
        routing=current_routing(),
        event=NotificationEvent.LESSONS_READY,
        case=case,
        key=f"lessons-ready:{case.id}:{case.version}",
        now=ctx.now,
        context={"case_ref": case.reference, "step": 6, "root_causes": lesson.root_causes},
    )
    return Verdict("recorded")


def _describe_lessons(session: Session, case: RemediationCase, _r: DecisionRequest) -> str:
    closure = session.exec(select(ClosureRecord).where(ClosureRecord.case_id == case.id)).first()
    closed = f"{case.closed_at:%Y-%m-%d}" if case.closed_at else "not yet"
    return (
        "What made this harm possible, and what must change so it does not happen again? "
        "Include the company's own purchasing practices and management-system failures.\n\n"
        f"- Closed as: {closure.closure_type.value if closure else '?'}\n"
        f"- Opened {case.opened_at:%Y-%m-%d}, closed {closed}"
    )


# The decisions this step asks for (the engine reads them through tasks/steps/table.py).
SPECS: dict[DecisionKind, DecisionSpec] = {
    DecisionKind.LESSONS: DecisionSpec(
        kind=DecisionKind.LESSONS,
        step=Step.LESSONS,
        form=LessonsForm,
        roles=(Role.CASE_LEAD,),
        title="Record the lessons learned",
        describe=_describe_lessons,
        handle=handle_lessons,
    ),
}
