"""IOM step 2, determine the type and level of response: involvement and severity, then the
response level that policy derives (accepted or overridden with a reason).
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from models.enums import (
    AnnexIICategory,
    CaseEvent,
    DecisionKind,
    RemedyRole,
    ResponseLevel,
    Role,
    Step,
)
from models.forms import ImpactAssessmentForm, ResponseForm
from models.policy import SeverityInput, assess_severity, remedy_role, response_level
from models.tables import DecisionRequest, RemediationCase
from tasks.markdown import md_text
from tasks.steps.base import (
    DecisionSpec,
    HandlerContext,
    RefusedError,
    Verdict,
    allegation_of,
    latest_finding,
    transition,
)


def handle_impact_assessment(ctx: HandlerContext) -> Verdict:
    form = ctx.form
    assert isinstance(form, ImpactAssessmentForm)
    finding = latest_finding(ctx.session, ctx.case)
    annex = tuple(AnnexIICategory(a) for a in (finding.annex_ii if finding else []))
    severity = assess_severity(
        SeverityInput(
            scale=form.scale,
            persons_affected=form.persons_affected,
            irremediability=form.irremediability,
            minors_involved=form.minors_involved,
            annex_ii=annex,
        ),
        ctx.policy,
    )
    level = response_level(form.involvement, severity, ctx.policy)
    case = ctx.case
    case.involvement, case.severity, case.severity_is_final = form.involvement, severity, True
    case.response_level, case.remedy_role = level, remedy_role(form.involvement)
    ctx.session.add(case)
    payload = form.decided()
    payload |= {"severity": severity.value, "derived_response_level": level.value}
    return Verdict(severity.value, payload=payload)


def handle_response(ctx: HandlerContext) -> Verdict:
    form = ctx.form
    assert isinstance(form, ResponseForm)
    case = ctx.case
    if case.response_level is None or case.involvement is None:
        raise RefusedError("involvement and severity must be assessed first")
    derived = case.response_level
    if form.accept_response_level:
        level = derived
    else:
        if form.override_level == "none" or not form.override_reason.strip():
            raise RefusedError("to override the derived level, choose a level and give a reason")
        level = ResponseLevel(form.override_level)
    case.response_level = level
    ctx.session.add(case)
    transition(ctx, CaseEvent.RESPONSE_APPROVED)
    payload = form.decided()
    payload |= {"derived_response_level": derived.value, "response_level": level.value}
    return Verdict(level.value, payload=payload)


def _describe_impact(session: Session, case: RemediationCase, _r: DecisionRequest) -> str:
    finding = latest_finding(session, case)
    present = [k for k, v in finding.ilo_indicators.items() if v == "present"] if finding else []
    annex_ii = finding.annex_ii if finding else []
    return (
        "How is the company involved (cause / contribute / directly linked, UNGP 19), and how "
        "severe is the harm (scale, scope, irremediable character)? Policy derives the response "
        "level from your answers.\n\n"
        f"- Indicators found present: {', '.join(map(md_text, present)) or 'none'}\n"
        f"- Annex II: {', '.join(map(md_text, annex_ii)) or 'none'}\n"
        f"- Trafficking indicated: {'yes' if finding and finding.trafficking_indicated else 'no'}"
    )


def _describe_response(session: Session, case: RemediationCase, _r: DecisionRequest) -> str:
    level = case.response_level.value if case.response_level else "?"
    role = {
        RemedyRole.PROVIDE: "provide remedy itself",
        RemedyRole.COOPERATE: "provide or cooperate in remedy",
        RemedyRole.USE_LEVERAGE: "use its leverage (it may take part in remedy)",
    }
    return (
        f"- Involvement: **{case.involvement.value if case.involvement else '?'}**, so the "
        f"company must {role[case.remedy_role] if case.remedy_role else '?'}\n"
        f"- Severity: **{case.severity.value if case.severity else '?'}**\n"
        f"- Response level derived by policy: **{level}** "
        "(level_1 is the most urgent). Accept it, or override it with a reason.\n\n"
        "Decide the business relationship (disengagement is a last resort: weigh its effect on "
        "the workers) and whether to refer to law enforcement (weigh victim safety and consent)."
    )


def _initial_impact(session: Session, case: RemediationCase) -> dict[str, Any]:
    finding = latest_finding(session, case)
    return {
        "persons_affected": max(allegation_of(session, case).persons_reported, 1),
        "minors_involved": bool(finding and finding.minors_involved),
    }


# The decisions this step asks for (the engine reads them through tasks/steps/table.py).
SPECS: dict[DecisionKind, DecisionSpec] = {
    DecisionKind.IMPACT_ASSESSMENT: DecisionSpec(
        kind=DecisionKind.IMPACT_ASSESSMENT,
        step=Step.RESPOND,
        form=ImpactAssessmentForm,
        roles=(Role.CASE_LEAD,),
        title="Assess involvement and severity",
        describe=_describe_impact,
        handle=handle_impact_assessment,
        initial=_initial_impact,
    ),
    DecisionKind.RESPONSE: DecisionSpec(
        kind=DecisionKind.RESPONSE,
        step=Step.RESPOND,
        form=ResponseForm,
        roles=(Role.SENIOR_APPROVER,),
        title="Decide the response",
        describe=_describe_response,
        handle=handle_response,
    ),
}
