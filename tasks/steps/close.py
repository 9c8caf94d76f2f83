"""IOM step 5, incident closure: a proposal checked against the closure criteria, confirmed by a
second, different approver (four eyes).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlmodel import Session, col, select

from models.enums import (
    CaseEvent,
    ClosureType,
    DecisionKind,
    DecisionRequestStatus,
    NotificationEvent,
    Role,
    Step,
)
from models.forms import ClosureConfirmationForm, ClosureForm
from models.policy import closure_check
from models.tables import ClosureRecord, Decision, DecisionRequest, RemediationCase, Stakeholder
from notifications.outbox import notify
from tasks.case_state import milestone_summary
from tasks.context import current_routing
from tasks.markdown import md_text
from tasks.steps.base import DecisionSpec, HandlerContext, RefusedError, Verdict, transition


def handle_closure(ctx: HandlerContext) -> Verdict:
    form = ctx.form
    assert isinstance(form, ClosureForm)
    problems = closure_check(
        form.closure_type,
        milestone_summary(ctx.session, ctx.case.id),
        form.victim_view_recorded,
        form.unresolved_authorised,
    )
    no_case = (ClosureType.NO_BASIS, ClosureType.DUPLICATE)
    if form.closure_type in no_case and ctx.case.closure_type not in no_case:
        # only screening or verification can find there is no case; a remedied case is not one
        problems.append(
            f"'{form.closure_type.value}' is for allegations screened out or unsubstantiated."
        )
    if problems:
        raise RefusedError("the closure criteria are not met: " + " ".join(problems))
    return Verdict(form.closure_type.value)


def closure_proposal(session: Session, case: RemediationCase) -> Decision | None:
    """Return the closure proposal that is waiting for its second approver, if any."""
    return session.exec(
        select(Decision)
        .join(DecisionRequest, col(DecisionRequest.id) == col(Decision.request_id))
        .where(
            Decision.case_id == case.id,
            Decision.kind == DecisionKind.CLOSURE,
            DecisionRequest.status == DecisionRequestStatus.DECIDED,
        )
        .order_by(col(Decision.decided_at).desc())
    ).first()


def handle_closure_confirmation(ctx: HandlerContext) -> Verdict:
    form = ctx.form
    assert isinstance(form, ClosureConfirmationForm)
    session, case = ctx.session, ctx.case
    proposal = closure_proposal(session, case)
    if proposal is None:
        raise RefusedError("there is no closure proposal to confirm")
    if proposal.approver_id == ctx.approver.id:
        raise RefusedError("the closure must be confirmed by a second, different approver")
    if not form.confirm:
        if not form.reason.strip():
            raise RefusedError("give a reason when rejecting the closure")
        proposal_request = session.get(DecisionRequest, proposal.request_id)
        assert proposal_request is not None
        proposal_request.status = DecisionRequestStatus.SUPERSEDED
        session.add(proposal_request)
        return Verdict("rejected")
    proposed = ClosureForm.model_validate(
        {**proposal.payload, "approver": "x", "approval_code": "xxxx"}
    )
    problems = closure_check(
        proposed.closure_type,
        milestone_summary(session, case.id),
        proposed.victim_view_recorded,
        proposed.unresolved_authorised,
    )
    approvers = (str(proposal.approver_id), str(ctx.approver.id))
    transition(
        ctx,
        CaseEvent.CASE_CLOSED,
        closure_approvers=approvers,
        closure_criteria_met=not problems,
    )
    case.closure_type = proposed.closure_type
    session.add(case)
    session.add(
        ClosureRecord(
            case_id=case.id,
            closure_type=proposed.closure_type,
            victim_view_recorded=proposed.victim_view_recorded,
            victim_view=proposed.victim_view.strip() or None,
            unmet_needs=proposed.unmet_needs.strip() or None,
            approver_ids=list(approvers),
            closed_at=ctx.now,
            follow_up_on=(ctx.now + timedelta(days=proposed.follow_up_days)).date()
            if proposed.follow_up_days
            else None,
        )
    )
    notify(
        session,
        routing=current_routing(),
        event=NotificationEvent.CASE_CLOSED,
        case=case,
        key=f"case-closed:{case.id}:{case.version}",
        now=ctx.now,
        context={
            "case_ref": case.reference,
            "step": 5,
            "closure_type": proposed.closure_type.value,
        },
    )
    return Verdict("confirmed")


def _describe_closure(session: Session, case: RemediationCase, _r: DecisionRequest) -> str:
    s = milestone_summary(session, case.id)
    return (
        "Propose the closure. Resolved closures need every milestone verified (or waived with a "
        "reason) and the victims' view recorded; an unresolved closure needs management's "
        "authorisation. A second, different approver confirms.\n\n"
        f"- Milestones: {s.total} in all, {s.verified} verified, {s.waived_with_reason} waived, "
        f"{s.open} open\n"
        f"- Closure type so far: {case.closure_type.value if case.closure_type else 'not set'}"
    )


def _describe_confirmation(session: Session, case: RemediationCase, _r: DecisionRequest) -> str:
    proposal = closure_proposal(session, case)
    if proposal is None:
        return "No closure proposal."
    who = session.get(Stakeholder, proposal.approver_id)
    p = proposal.payload
    return (
        f"{md_text(who.key if who else '?')} proposes to close the case as "
        f"**{md_text(p.get('closure_type'))}**.\n\n"
        f"- Victims' view recorded: {'yes' if p.get('victim_view_recorded') else 'no'}\n"
        f"- Unresolved closure authorised: {'yes' if p.get('unresolved_authorised') else 'no'}\n"
        f"- Follow-up in {md_text(p.get('follow_up_days', 0))} days\n\n"
        "Confirm it, or reject it with a reason (the proposal is then made again)."
    )


def _initial_closure(session: Session, case: RemediationCase) -> dict[str, Any]:
    return {"closure_type": (case.closure_type or ClosureType.RESOLVED_ACCEPTED).value}


# The decisions this step asks for (the engine reads them through tasks/steps/table.py).
SPECS: dict[DecisionKind, DecisionSpec] = {
    DecisionKind.CLOSURE: DecisionSpec(
        kind=DecisionKind.CLOSURE,
        step=Step.CLOSE,
        form=ClosureForm,
        roles=(Role.CASE_LEAD, Role.SENIOR_APPROVER),
        title="Propose the case's closure",
        describe=_describe_closure,
        handle=handle_closure,
        initial=_initial_closure,
    ),
    DecisionKind.CLOSURE_CONFIRMATION: DecisionSpec(
        kind=DecisionKind.CLOSURE_CONFIRMATION,
        step=Step.CLOSE,
        form=ClosureConfirmationForm,
        roles=(Role.CASE_LEAD, Role.SENIOR_APPROVER),
        title="Confirm the case's closure (second approver)",
        describe=_describe_confirmation,
        handle=handle_closure_confirmation,
    ),
}
