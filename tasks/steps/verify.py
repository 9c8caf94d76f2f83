"""IOM step 1, verify the allegation: screening, the safety assessment before any contact, and
the findings that substantiate it or not (docs/domain.md, 1. Verify the allegation).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlmodel import Session, col, select

from models.enums import (
    CaseEvent,
    ClosureType,
    DecisionKind,
    IloIndicator,
    IndicatorStatus,
    Role,
    Step,
)
from models.forms import SafetyForm, ScreeningForm, VerificationForm
from models.tables import DecisionRequest, RemediationCase, SafetyAssessment, VerificationFinding
from tasks.markdown import md_text
from tasks.steps.base import (
    DecisionSpec,
    HandlerContext,
    RefusedError,
    Verdict,
    allegation_of,
    persons_of,
    transition,
)
from tasks.store.sealed import seal_text


def handle_screening(ctx: HandlerContext) -> Verdict:
    form = ctx.form
    assert isinstance(form, ScreeningForm)
    allegation = allegation_of(ctx.session, ctx.case)
    reason = form.reason.strip()
    if form.outcome != "accepted" and not reason:
        raise RefusedError("a reason is required to reject an allegation or mark it a duplicate")
    if form.outcome == "duplicate":
        if not form.duplicate_of or form.duplicate_of == ctx.case.reference:
            raise RefusedError("name the case this allegation duplicates (duplicate_of)")
        other = ctx.session.exec(
            select(RemediationCase).where(RemediationCase.reference == form.duplicate_of)
        ).first()
        if other is None:
            raise RefusedError(f"there is no case {form.duplicate_of}")
        allegation.duplicate_of_case_id = other.id
    allegation.screening_outcome = form.outcome  # type: ignore[assignment]
    allegation.screening_reason = seal_text(ctx.session, ctx.case.id, reason)
    ctx.session.add(allegation)
    if form.outcome != "accepted":
        ctx.case.closure_type = (
            ClosureType.DUPLICATE if form.outcome == "duplicate" else ClosureType.NO_BASIS
        )
        transition(ctx, CaseEvent.SCREENED_OUT, screening_reason=reason)
    return Verdict(form.outcome)


def handle_safety(ctx: HandlerContext) -> Verdict:
    form = ctx.form
    assert isinstance(form, SafetyForm)
    ctx.session.add(
        SafetyAssessment(
            case_id=ctx.case.id,
            assessor_id=ctx.approver.id,
            assessed_at=ctx.now,
            risk_level=form.risk_level,
            risks=[r.value for r in form.risks],
            mitigation=seal_text(ctx.session, ctx.case.id, form.mitigation.strip()),
            contact_cleared=form.contact_cleared,
            valid_until=ctx.now + timedelta(days=form.valid_days),
        )
    )
    return Verdict(form.risk_level.value)


INDICATOR_FIELDS = [i.value for i in IloIndicator]


def handle_verification(ctx: HandlerContext) -> Verdict:
    form = ctx.form
    assert isinstance(form, VerificationForm)
    indicators = {name: getattr(form, name).value for name in INDICATOR_FIELDS}
    present = IndicatorStatus.PRESENT
    act, means, purpose = form.palermo_act, form.palermo_means, form.palermo_purpose
    ctx.session.add(
        VerificationFinding(
            case_id=ctx.case.id,
            assessed_by_id=ctx.approver.id,
            assessed_at=ctx.now,
            ilo_indicators=indicators,
            palermo_act=act,
            palermo_means=means,
            palermo_purpose=purpose,
            annex_ii=[a.value for a in form.annex_ii],
            minors_involved=form.minors_involved,
            # for children no means is needed (Palermo Protocol, art. 3(c))
            trafficking_indicated=act == present
            and purpose == present
            and (means == present or form.minors_involved),
            forced_labour_indicated=any(v == present.value for v in indicators.values()),
        )
    )
    ctx.session.flush()
    event = {
        "substantiated": CaseEvent.SUBSTANTIATED,
        "unsubstantiated": CaseEvent.UNSUBSTANTIATED,
        "inconclusive": CaseEvent.INCONCLUSIVE,
    }[form.outcome]
    if event == CaseEvent.UNSUBSTANTIATED:
        ctx.case.closure_type = ClosureType.NO_BASIS
    transition(ctx, event, decision_reason=form.reason)
    return Verdict(form.outcome, final=form.outcome != "inconclusive")


def _facts_md(session: Session, case: RemediationCase) -> str:
    a = allegation_of(session, case)
    persons = persons_of(session, case)
    people = ", ".join(
        f"{md_text(p.pseudonym)} ({p.age_band.value}{', minor' if p.is_minor else ''}"
        f"{', age uncertain' if p.age_uncertain else ''})"
        for p in persons
    )
    lines = [
        f"- Reported by: {a.source_type.value} via {a.channel.value}"
        f"{' (anonymous)' if a.anonymous else ''}, received {a.received_at:%Y-%m-%d}",
        f"- Where: {md_text(a.country)}{' / ' + md_text(a.site) if a.site else ''}; "
        f"mineral: {a.mineral.value}",
        f"- Persons reported: {a.persons_reported}; recorded: {people or 'none'}",
        f"- Preliminary severity: {case.severity.value if case.severity else 'unknown'}",
    ]
    if a.reported_indicators:
        lines.append("- ILO indicators reported: " + ", ".join(map(md_text, a.reported_indicators)))
    return "\n".join(lines)


def _describe_screening(session: Session, case: RemediationCase, _r: DecisionRequest) -> str:
    return (
        "Is this allegation plausible and new? Accept it for verification, mark it a duplicate "
        "of another case, or reject it with a reason (it stays appealable).\n\n"
        + _facts_md(session, case)
    )


def _describe_safety(session: Session, case: RemediationCase, _r: DecisionRequest) -> str:
    return (
        "Before anyone contacts the affected persons or notifies the supplier, assess the risks "
        "to them (retaliation, contact by traffickers, immigration status, family). Assume the "
        "risk is high until evidence shows otherwise.\n\n" + _facts_md(session, case)
    )


def _describe_verification(session: Session, case: RemediationCase, _r: DecisionRequest) -> str:
    safety = session.exec(
        select(SafetyAssessment)
        .where(SafetyAssessment.case_id == case.id)
        .order_by(col(SafetyAssessment.assessed_at).desc())
    ).first()
    note = (
        f"- Safety: risk {safety.risk_level.value}; contact "
        f"{'cleared' if safety.contact_cleared else 'NOT cleared'}"
        if safety
        else "- Safety: not assessed"
    )
    return (
        "Record the findings against the 11 ILO indicators and the Palermo test (act, means, "
        "purpose; no means is needed for children), and decide: substantiated, unsubstantiated "
        "(the case closes with your reasons) or inconclusive (more inquiry; asked again).\n\n"
        + _facts_md(session, case)
        + "\n"
        + note
    )


def _initial_verification(session: Session, case: RemediationCase) -> dict[str, Any]:
    persons = persons_of(session, case)
    return {"minors_involved": any(p.is_minor or p.age_uncertain for p in persons)}


# The decisions this step asks for (the engine reads them through tasks/steps/table.py).
SPECS: dict[DecisionKind, DecisionSpec] = {
    DecisionKind.SCREENING: DecisionSpec(
        kind=DecisionKind.SCREENING,
        step=Step.VERIFY,
        form=ScreeningForm,
        roles=(Role.CASE_LEAD,),
        title="Screen the allegation",
        describe=_describe_screening,
        handle=handle_screening,
    ),
    DecisionKind.SAFETY: DecisionSpec(
        kind=DecisionKind.SAFETY,
        step=Step.VERIFY,
        form=SafetyForm,
        roles=(Role.CASE_LEAD, Role.SERVICE_PROVIDER),
        title="Assess safety before any contact",
        describe=_describe_safety,
        handle=handle_safety,
    ),
    DecisionKind.VERIFICATION: DecisionSpec(
        kind=DecisionKind.VERIFICATION,
        step=Step.VERIFY,
        form=VerificationForm,
        roles=(Role.VERIFIER,),
        title="Decide whether the allegation is substantiated",
        describe=_describe_verification,
        handle=handle_verification,
        initial=_initial_verification,
    ),
}
