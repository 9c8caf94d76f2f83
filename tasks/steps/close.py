"""IOM step 5, incident closure: a proposal checked against the closure criteria, confirmed by a
second, different approver (four eyes).

What the signers see (`closure_brief`): the verdict, each affected person's consent, actions and
outcome, who recorded their view of the remedy and when, and what is left undone, in coded facts
and pseudonyms (this text is also the Prefect form's description); the approval page adds what
staff typed (the verifier's reasons, the victims' shared view, each person's own view) through
`closure_words`, shown there only. The confirmed closure records each person's outcome
(`closure.person_outcomes` on the case's audit chain), "withdrew consent" included.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session, col, select

from models.enums import (
    CaseEvent,
    ClosureType,
    ConsentPurpose,
    DecisionKind,
    DecisionRequestStatus,
    MilestoneStatus,
    NotificationEvent,
    PlanStatus,
    Role,
    Step,
)
from models.forms import ClosureConfirmationForm, ClosureForm
from models.policy import PersonOutcome, closure_check, person_outcome
from models.tables import (
    ClosureRecord,
    Decision,
    DecisionRequest,
    PlanAction,
    RemediationCase,
    Stakeholder,
)
from notifications.outbox import notify
from tasks.case_state import current_plan, milestone_summary
from tasks.context import current_routing
from tasks.markdown import md_text
from tasks.steps.base import (
    DecisionSpec,
    HandlerContext,
    RefusedError,
    Verdict,
    allegation_of,
    latest_finding,
    persons_of,
    transition,
)
from tasks.store.audit import append_audit
from tasks.store.checkpoints import checkpoint_after_commit
from tasks.store.consent import withdrawn_people
from tasks.store.db import read_only
from tasks.store.person_views import PersonView, latest_views
from tasks.store.sealed import open_payload, open_text, seal_text


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
        {
            **open_payload(session, case.id, proposal.payload),
            "approver": "x",
            "approval_code": "xxxx",
        }
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
            victim_view=seal_text(session, case.id, proposed.victim_view.strip()),
            unmet_needs=seal_text(session, case.id, proposed.unmet_needs.strip()),
            approver_ids=list(approvers),
            closed_at=ctx.now,
            follow_up_on=(ctx.now + timedelta(days=proposed.follow_up_days)).date()
            if proposed.follow_up_days
            else None,
        )
    )
    append_audit(
        session,
        chain=case.reference,
        actor=f"stakeholder:{ctx.approver.key}",
        action="closure.person_outcomes",
        at=ctx.now,
        subject_type="case",
        subject_id=str(case.id),
        details={"persons": {o.pseudonym: o.recorded() for o in person_outcomes(session, case)}},
    )
    # the closed chain, signed outside the store and sent to the case's observers to keep
    checkpoint_after_commit(session, ctx.now, case_ref=case.reference)
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
        f"\n\n{closure_brief(session, case)}"
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
        f"\n\n{closure_brief(session, case)}"
    )


# --- what the signers see ------------------------------------------------------------------------

_SETTLED = (MilestoneStatus.VERIFIED, MilestoneStatus.WAIVED)
_OUTCOME_WORDS = {
    PersonOutcome.WITHDREW_CONSENT: "withdrew consent",
    PersonOutcome.REMEDIED: "remedied",
    PersonOutcome.PARTLY_REMEDIED: "partly remedied",
    PersonOutcome.NOT_REMEDIED: "not remedied",
    PersonOutcome.NO_PERSONAL_ACTIONS: "no actions of their own",
}


class PersonClosure(BaseModel):
    """One affected person at closure: consent, their own actions, outcome (pseudonym only)."""

    pseudonym: str
    consent_withdrawn: bool
    verified: int
    waived: int
    undone: int
    held: int
    outcome: PersonOutcome

    def recorded(self) -> dict[str, object]:
        """What the closure's audit event keeps of them: coded facts and counts."""
        return self.model_dump(mode="json", exclude={"pseudonym"})


def _plan_actions(session: Session, case: RemediationCase) -> list[PlanAction]:
    """The actions of the plan in force that count (cancelled ones left out), in due order."""
    plan = current_plan(session, case.id, PlanStatus.APPROVED)
    if plan is None:
        return []
    return list(
        session.exec(
            select(PlanAction)
            .where(PlanAction.plan_id == plan.id, PlanAction.status != MilestoneStatus.CANCELLED)
            .order_by(col(PlanAction.due_on), col(PlanAction.key))
        ).all()
    )


def _settled(action: PlanAction) -> bool:
    return action.status == MilestoneStatus.VERIFIED or (
        action.status == MilestoneStatus.WAIVED and bool((action.waived_reason or "").strip())
    )


def person_outcomes(session: Session, case: RemediationCase) -> list[PersonClosure]:
    """Return each affected person's outcome: consent, and their own actions in the plan."""
    withdrawn = withdrawn_people(session, case.id, [ConsentPurpose.CASE_HANDLING])
    actions = _plan_actions(session, case)
    found = []
    for person in persons_of(session, case):
        mine = [a for a in actions if a.person_id == person.id]
        verified = sum(1 for a in mine if a.status == MilestoneStatus.VERIFIED)
        waived = sum(1 for a in mine if a.status == MilestoneStatus.WAIVED and _settled(a))
        undone = len(mine) - verified - waived
        gone = person.pseudonym in withdrawn
        found.append(
            PersonClosure(
                pseudonym=person.pseudonym,
                consent_withdrawn=gone,
                verified=verified,
                waived=waived,
                undone=undone,
                held=sum(1 for a in mine if a.status == MilestoneStatus.HELD),
                outcome=person_outcome(
                    withdrawn=gone, verified=verified, waived=waived, unsettled=undone
                ),
            )
        )
    return found


def _verdict_md(session: Session, case: RemediationCase) -> list[str]:
    allegation = allegation_of(session, case)
    lines = [f"- Screening: {allegation.screening_outcome.value}"]
    verification = _latest_decision(session, case, DecisionKind.VERIFICATION)
    if verification is not None:
        who = session.get(Stakeholder, verification.approver_id)
        lines.append(
            f"- Verification: **{md_text(verification.outcome)}**, decided "
            f"{verification.decided_at:%Y-%m-%d} by {md_text(who.key if who else '?')}"
        )
    else:
        lines.append("- Verification: none (the case closes without one)")
    finding = latest_finding(session, case)
    if finding is not None:
        present = sorted(k for k, v in finding.ilo_indicators.items() if v == "present")
        lines.append(
            f"- Findings: trafficking indicated {'yes' if finding.trafficking_indicated else 'no'}"
            f"; forced labour indicated {'yes' if finding.forced_labour_indicated else 'no'}"
            f"; minors {'yes' if finding.minors_involved else 'no'}"
            f"; ILO indicators present: {md_text(', '.join(present)) if present else 'none'}"
        )
    return lines


def _latest_decision(
    session: Session, case: RemediationCase, kind: DecisionKind
) -> Decision | None:
    return session.exec(
        select(Decision)
        .where(Decision.case_id == case.id, Decision.kind == kind)
        .order_by(col(Decision.decided_at).desc())
    ).first()


def _view_source(view: PersonView) -> str:
    """Who recorded a person's view, when, and whose words they are (no words of the view)."""
    giver = "the person" if view.given_by == "person" else "their representative"
    return (
        f"recorded by {md_text(view.recorded_by)} on {view.recorded_at:%Y-%m-%d}, given by {giver}"
    )


def closure_brief(session: Session, case: RemediationCase) -> str:
    """Return what every signer of a closure sees, wherever they sign: the verdict, the persons
    (consent, their actions, outcome; who recorded their view of the remedy, and when) and what
    is left undone. Coded facts, keys and pseudonyms only: this text is also the Prefect form's
    description."""
    lines = ["### The verdict", "", *_verdict_md(session, case), "", "### The affected persons", ""]
    outcomes = person_outcomes(session, case)
    if outcomes:
        lines += [
            "| person | case-handling consent | their actions: verified / waived / undone "
            "| outcome |",
            "|---|---|---|---|",
        ]
        for o in outcomes:
            consent = "withdrawn" if o.consent_withdrawn else "given"
            held = f" ({o.held} held)" if o.held else ""
            lines.append(
                f"| {md_text(o.pseudonym)} | {consent} | {o.verified} / {o.waived} / "
                f"{o.undone}{held} | {_OUTCOME_WORDS[o.outcome]} |"
            )
    else:
        lines.append("None recorded.")
    lines += ["", "### Each person's view of the remedy", ""]
    views = latest_views(session, case.id)  # sealed: the words are for the approval page
    for o in outcomes:
        view = views.get(o.pseudonym)
        said = f"{_view_source(view)} (their words on the approval page only)" if view else None
        lines.append(f"- {md_text(o.pseudonym)}: {said or 'no view recorded'}")
    if not outcomes:
        lines.append("None recorded.")
    lines += ["", "### Left undone", ""]
    names = {p.id: p.pseudonym for p in persons_of(session, case)}
    undone = [a for a in _plan_actions(session, case) if not _settled(a)]
    if undone:
        lines += ["| milestone | for | state | due |", "|---|---|---|---|"]
        for a in undone:
            whom = names.get(a.person_id, "-") if a.person_id else "the case"
            state = a.status.value + (
                " (waived without a reason)" if a.status == MilestoneStatus.WAIVED else ""
            )
            lines.append(
                f"| {md_text(a.key)}: {md_text(a.title)} | {md_text(whom)} | {state} | {a.due_on} |"
            )
    elif current_plan(session, case.id, PlanStatus.APPROVED) is None:
        lines.append("No plan was approved: nothing was undertaken.")
    else:
        lines.append("Nothing: every milestone is verified or waived with a reason.")
    return "\n".join(lines)


def closure_words(request_id: uuid.UUID) -> str:
    """Return what staff typed that the closure's signers weigh, for the approval page only:
    the screening and verification reasons, the victims' view and priorities as their
    representative recorded them, each person's latest view of the remedy (in their words or
    their representative's), and the proposal's view and unmet needs. Each is quoted as
    text (never markup); forms ask for pseudonyms, and these words reach no message, no log and
    no Prefect object."""
    with read_only() as session:
        request = session.get(DecisionRequest, request_id)
        if request is None or request.kind not in SPECS:
            return ""
        case = session.get(RemediationCase, request.case_id)
        assert case is not None
        quotes: list[tuple[str, str | None]] = []
        allegation = allegation_of(session, case)
        quotes.append(
            ("The screening's reason", open_text(session, case.id, allegation.screening_reason))
        )
        verification = _latest_decision(session, case, DecisionKind.VERIFICATION)
        if verification is not None:
            quotes.append(
                ("The verifier's reasons", open_text(session, case.id, verification.reason))
            )
        agreement = _latest_decision(session, case, DecisionKind.PLAN_AGREEMENT)
        if agreement is not None:
            who = session.get(Stakeholder, agreement.approver_id)
            by = f" (recorded by {md_text(who.key)})" if who else ""
            quotes.append(
                (
                    f"The victims' priorities{by}",
                    open_payload(session, case.id, agreement.payload).get("victim_priorities"),
                )
            )
            quotes.append(
                (
                    f"Their comments on the plan{by}",
                    open_payload(session, case.id, agreement.payload).get("comments"),
                )
            )
        for pseudonym, view in sorted(latest_views(session, case.id, with_text=True).items()):
            quotes.append(
                (f"{md_text(pseudonym)}'s view of the remedy ({_view_source(view)})", view.text)
            )
        if request.kind == DecisionKind.CLOSURE_CONFIRMATION:
            proposal = closure_proposal(session, case)
            if proposal is not None:
                who = session.get(Stakeholder, proposal.approver_id)
                by = f" (recorded by {md_text(who.key)})" if who else ""
                quotes.append(
                    (
                        f"The victims' view of the outcome{by}",
                        open_payload(session, case.id, proposal.payload).get("victim_view"),
                    )
                )
                quotes.append(
                    (
                        "Unmet needs and outstanding referrals",
                        open_payload(session, case.id, proposal.payload).get("unmet_needs"),
                    )
                )
        lines = ["### In their words", ""]
        for label, text in quotes:
            if text and str(text).strip():
                lines.append(f"- {label}: {md_text(text)}")
        if len(lines) == 2:
            return ""
        return "\n".join(lines)


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
