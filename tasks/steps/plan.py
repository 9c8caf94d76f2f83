"""IOM step 3, design the remediation action plan: the draft (from the plan templates), the
affected persons' agreement through their representative, and the budget approval.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, func, select

from models.enums import (
    AnnexIICategory,
    CaseEvent,
    CaseState,
    ConsentMethod,
    ConsentPurpose,
    DecisionKind,
    IloIndicator,
    Involvement,
    MilestoneStatus,
    NotificationEvent,
    PlanStatus,
    Role,
    Severity,
    Step,
)
from models.forms import PlanAgreementForm, PlanBudgetForm
from models.plan import ActionDraft, PersonFacts, PlanFacts, draft_actions, revise_actions
from models.tables import (
    ActionPlan,
    ConsentRecord,
    Decision,
    DecisionRequest,
    PlanAction,
    RemediationCase,
    Stakeholder,
)
from notifications.outbox import notify
from tasks.case_state import CLOSED_MILESTONES, SYSTEM, current_plan
from tasks.context import current_plan_templates, current_policy, current_routing
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
from tasks.store.cases import get_case
from tasks.store.db import unit_of_work
from tasks.store.directory import members_of
from tasks.store.ledger_view import (
    action_amount,
    by_action,
    ledger_markdown,
    ledger_summary,
    owed_kinds,
    totals_text,
)
from tasks.store.sealed import seal_text


def _plan_facts(session: Session, case: RemediationCase) -> PlanFacts:
    allegation = allegation_of(session, case)
    finding = latest_finding(session, case)
    if finding is not None:
        indicators = {IloIndicator(k) for k, v in finding.ilo_indicators.items() if v == "present"}
        annex = {AnnexIICategory(a) for a in finding.annex_ii}
    else:
        indicators = {IloIndicator(i) for i in allegation.reported_indicators}
        annex = set()
    return PlanFacts(
        country=allegation.country,
        indicators=frozenset(indicators),
        persons=tuple(
            PersonFacts(
                pseudonym=p.pseudonym,
                is_minor=p.is_minor,
                age_uncertain=p.age_uncertain,
                nationality=p.nationality,
            )
            for p in persons_of(session, case)
        ),
        involvement=case.involvement or Involvement.UNKNOWN,
        severity=case.severity or Severity.HIGH,
        annex_ii=frozenset(annex),
        owed=owed_kinds(session, case.id),
    )


def _draft_of(action: PlanAction, role: Role) -> ActionDraft:
    return ActionDraft(
        key=action.key,
        kind=action.kind,
        category=action.category,
        title=action.title,
        owner_role=role,
        due_on=action.due_on,
        verification_method=action.verification_method,
        consequence_if_missed=action.consequence_if_missed,
        person=None,
    )


def _owner_for(session: Session, case: RemediationCase, role: Role) -> Stakeholder | None:
    for candidate in (role, Role.CASE_LEAD):
        people = members_of(session, case.id, candidate)
        if people:
            return people[0]
    return None


def _store_plan(
    session: Session,
    case: RemediationCase,
    drafts: list[ActionDraft],
    *,
    version: int,
    now: datetime,
    carried: dict[str, PlanAction] | None = None,
) -> ActionPlan:
    plan = ActionPlan(case_id=case.id, version=version, status=PlanStatus.DRAFT, created_at=now)
    session.add(plan)
    session.flush()
    persons = {p.pseudonym: p.id for p in persons_of(session, case)}
    for d in drafts:
        old = (carried or {}).get(d.key)
        owner = _owner_for(session, case, d.owner_role)
        session.add(
            PlanAction(
                plan_id=plan.id,
                case_id=case.id,
                key=d.key,
                kind=d.kind,
                category=d.category,
                title=d.title,
                person_id=old.person_id if old else persons.get(d.person or ""),
                owner_id=old.owner_id if old else (owner.id if owner else None),
                due_on=d.due_on,
                verification_method=d.verification_method,
                consequence_if_missed=d.consequence_if_missed,
                status=MilestoneStatus.PLANNED,
                status_changed_at=now,
                evidence_refs=list(old.evidence_refs) if old else [],
            )
        )
    session.flush()
    return plan


def draft_plan(case_ref: str, *, now: datetime) -> int:
    """Draft the plan for a case entering step 3 (a revision starts from the approved plan)."""
    with unit_of_work() as session:
        case = get_case(session, case_ref, lock=True)
        draft = current_plan(session, case.id, PlanStatus.DRAFT)
        if draft is not None or case.state != CaseState.DESIGNING_PLAN:
            return draft.version if draft else 0
        last = session.exec(
            select(func.max(ActionPlan.version)).where(ActionPlan.case_id == case.id)
        ).one()
        drafts = draft_actions(
            _plan_facts(session, case),
            current_plan_templates(),
            today=now.date(),
            policy=current_policy(),
        )
        carried: dict[str, PlanAction] = {}
        approved = current_plan(session, case.id, PlanStatus.APPROVED)
        if approved is not None:
            # a revision keeps the open actions as they are and adds what the facts now call for;
            # what was verified or waived stays settled in the plan it was settled in
            actions = session.exec(
                select(PlanAction).where(PlanAction.plan_id == approved.id)
            ).all()
            open_actions = [a for a in actions if a.status not in CLOSED_MILESTONES]
            settled = {a.key for a in actions if a.status != MilestoneStatus.CANCELLED} - {
                a.key for a in open_actions
            }
            carried = {a.key: a for a in open_actions}
            kept = [_draft_of(a, Role.CASE_LEAD) for a in open_actions]
            drafts = kept + [d for d in drafts if d.key not in carried and d.key not in settled]
        plan = _store_plan(session, case, drafts, version=(last or 0) + 1, now=now, carried=carried)
        append_audit(
            session,
            chain=case.reference,
            actor=SYSTEM,
            action="plan.drafted",
            at=now,
            subject_type="action_plan",
            subject_id=str(plan.id),
            details={"version": plan.version, "actions": [d.key for d in drafts]},
        )
        return plan.version


def handle_plan_agreement(ctx: HandlerContext) -> Verdict:
    form = ctx.form
    assert isinstance(form, PlanAgreementForm)
    session, case = ctx.session, ctx.case
    draft = current_plan(session, case.id, PlanStatus.DRAFT)
    if draft is None:
        raise RefusedError("there is no draft plan to agree to")
    if form.outcome == "refuse":
        if not form.comments.strip():
            raise RefusedError("say what has to change (comments) when refusing the plan")
        return Verdict("refused", final=False)
    if not form.consent_recorded:
        raise RefusedError("the affected persons' informed consent to the plan must be recorded")
    if form.outcome == "agree" and form.remove_actions:
        raise RefusedError("to remove actions, choose 'agree_with_changes'")
    if form.outcome == "agree_with_changes":
        actions = session.exec(select(PlanAction).where(PlanAction.plan_id == draft.id)).all()
        by_key = {a.key: a for a in actions}
        try:
            kept = revise_actions(
                [_draft_of(a, Role.CASE_LEAD) for a in actions], remove=form.remove_actions, add=[]
            )
        except ValueError as exc:
            raise RefusedError(str(exc)) from None
        draft.status = PlanStatus.SUPERSEDED
        session.add(draft)
        session.flush()
        draft = _store_plan(
            session, case, kept, version=draft.version + 1, now=ctx.now, carried=by_key
        )
    draft.victim_priorities = seal_text(session, case.id, form.victim_priorities.strip())
    session.add(draft)
    for person in persons_of(session, case):
        for purpose in (ConsentPurpose.CASE_HANDLING, ConsentPurpose.SHARE_WITH_SERVICE_PROVIDER):
            session.add(
                ConsentRecord(
                    case_id=case.id,
                    person_id=person.id,
                    purpose=purpose,
                    recipients=[Role.SERVICE_PROVIDER.value, Role.CASE_LEAD.value],
                    method=ConsentMethod(form.consent_method),
                    interpreter_used=form.interpreter_used,
                    given_at=ctx.now,
                    recorded_by_id=ctx.approver.id,
                )
            )
    payload = form.decided()
    payload["plan_version"] = draft.version
    return Verdict(form.outcome, payload=payload)


def _agreed_in_scope(session: Session, case: RemediationCase, scope: str) -> bool:
    row = session.exec(
        select(Decision.outcome)
        .join(DecisionRequest, col(DecisionRequest.id) == col(Decision.request_id))
        .where(
            Decision.case_id == case.id,
            Decision.kind == DecisionKind.PLAN_AGREEMENT,
            DecisionRequest.scope == scope,
        )
        .order_by(col(Decision.decided_at).desc())
    ).first()
    return row in ("agree", "agree_with_changes")


def handle_plan_budget(ctx: HandlerContext) -> Verdict:
    form = ctx.form
    assert isinstance(form, PlanBudgetForm)
    session, case = ctx.session, ctx.case
    if not form.approve:
        if not form.reason.strip():
            raise RefusedError("give a reason when refusing the budget")
        return Verdict("rejected", final=False)
    draft = current_plan(session, case.id, PlanStatus.DRAFT)
    if draft is None:
        raise RefusedError("there is no draft plan to fund")
    transition(
        ctx,
        CaseEvent.PLAN_APPROVED,
        victim_agreement_recorded=_agreed_in_scope(session, case, ctx.request.scope),
        budget_approved=True,
    )
    previous = current_plan(session, case.id, PlanStatus.APPROVED)
    if previous is not None:
        previous.status = PlanStatus.SUPERSEDED
        session.add(previous)
        for action in session.exec(
            select(PlanAction).where(
                PlanAction.plan_id == previous.id,
                col(PlanAction.status).not_in(CLOSED_MILESTONES),
            )
        ).all():
            action.status, action.status_changed_at = MilestoneStatus.CANCELLED, ctx.now
            session.add(action)
    draft.status, draft.approved_at = PlanStatus.APPROVED, ctx.now
    session.add(draft)
    notify(
        session,
        routing=current_routing(),
        event=NotificationEvent.PLAN_APPROVED,
        case=case,
        key=f"plan-approved:{draft.id}",
        now=ctx.now,
        context={"case_ref": case.reference, "step": 3, "plan_version": draft.version},
    )
    payload = form.decided()
    payload["plan_version"] = draft.version
    # the totals owed per currency that this approval funds, as exact decimal text
    totals = ledger_summary(session, case.id).totals
    payload["approved_owed"] = {c: str(t.owed) for c, t in totals.items() if t.owed > 0}
    return Verdict("approved", payload=payload)


def _plan_md(session: Session, case: RemediationCase) -> str:
    draft = current_plan(session, case.id, PlanStatus.DRAFT)
    if draft is None:
        return "No draft plan."
    rows = session.exec(
        select(PlanAction, Stakeholder.key)
        .join(Stakeholder, col(Stakeholder.id) == col(PlanAction.owner_id), isouter=True)
        .where(PlanAction.plan_id == draft.id)
        .order_by(col(PlanAction.due_on), col(PlanAction.key))
    ).all()
    lines = [
        f"Draft plan, version {draft.version}:",
        "",
        "| key | action | owner | due | verified by |",
        "|---|---|---|---|---|",
    ]
    for action, owner in rows:
        amount = action_amount(by_action(session, action))
        title = f"{action.title} ({amount})" if amount else action.title
        lines.append(
            f"| {md_text(action.key)} | {md_text(title)} | {md_text(owner or '-')} "
            f"| {action.due_on} | {md_text(action.verification_method)} |"
        )
    return "\n".join(lines)


def _ledger_md(session: Session, case: RemediationCase) -> str:
    """The amounts each person is owed and their total (docs/domain.md, The remedy ledger)."""
    table = ledger_markdown(ledger_summary(session, case.id))
    if not table:
        return "No amounts are recorded as owed to the affected persons (`remedy ledger owe`)."
    return "What each person is owed (the remedy ledger, by pseudonym):\n\n" + table


def _describe_agreement(session: Session, case: RemediationCase, _r: DecisionRequest) -> str:
    return (
        "Does the plan reflect the affected persons' own priorities? Record their informed "
        "consent (in their language, with the method used). You may remove actions they do not "
        "want (agree with changes), or refuse and say what must change.\n\n"
        + _plan_md(session, case)
        + "\n\n"
        + _ledger_md(session, case)
    )


def _describe_budget(session: Session, case: RemediationCase, _r: DecisionRequest) -> str:
    return (
        "Approve the funding of this plan. Who pays follows the company's involvement: "
        f"**{case.involvement.value if case.involvement else '?'}**. Approving it approves "
        "the amounts owed to the affected persons, per currency: "
        f"**{totals_text(ledger_summary(session, case.id))}**.\n\n"
        + _plan_md(session, case)
        + "\n\n"
        + _ledger_md(session, case)
    )


# The decisions this step asks for (the engine reads them through tasks/steps/table.py).
SPECS: dict[DecisionKind, DecisionSpec] = {
    DecisionKind.PLAN_AGREEMENT: DecisionSpec(
        kind=DecisionKind.PLAN_AGREEMENT,
        step=Step.PLAN,
        form=PlanAgreementForm,
        roles=(Role.VICTIM_REPRESENTATIVE,),
        title="Agree to the remediation action plan",
        describe=_describe_agreement,
        handle=handle_plan_agreement,
    ),
    DecisionKind.PLAN_BUDGET: DecisionSpec(
        kind=DecisionKind.PLAN_BUDGET,
        step=Step.PLAN,
        form=PlanBudgetForm,
        roles=(Role.BUDGET_OWNER,),
        title="Approve the plan's budget",
        describe=_describe_budget,
        handle=handle_plan_budget,
    ),
}
