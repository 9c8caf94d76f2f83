"""Decision forms: one Prefect `RunInput` per decision kind.

The Prefect server validates a submission only against the form's JSON schema (docs/architecture.md,
Prefect behaviour this design relies on), so every constraint here is schema-expressible (enums,
lengths, ranges) and there are no validators: code, role, distinct approvers and the rules of each
decision are checked in our code after the run resumes, and a refused submission is asked again
instead of failing the run.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect.input import RunInput
from pydantic import Field

from models.enums import (
    AnnexIICategory,
    ClosureType,
    ConsentMethod,
    IndicatorStatus,
    Involvement,
    Irremediability,
    RelationshipDecision,
    RiskLevel,
    Role,
    RootCause,
    SafetyRisk,
    Scale,
)

NO_PERSONAL_DATA = "No names or contact details: refer to people by pseudonym (P-01)."


def _reason(title: str, *, required: bool = False, limit: int = 2000) -> Any:
    return Field(
        default=... if required else "",
        title=title,
        description=NO_PERSONAL_DATA,
        max_length=limit,
        min_length=1 if required else 0,
    )


# Who submits and their code: checked by the engine, never part of what was decided
SUBMITTER_FIELDS: frozenset[str] = frozenset({"approver", "approval_code"})


class ApprovalForm(RunInput):
    """What every decision carries: who decides, and the code only that person received."""

    approver: str = Field(
        title="Your stakeholder key",
        description="As in your notification, e.g. amani.verifier",
        min_length=1,
        max_length=64,
    )
    approval_code: str = Field(
        title="One-time approval code",
        description="The code from your notification; it works once.",
        min_length=4,
        max_length=32,
    )

    def decided(self) -> dict[str, Any]:
        """Return what was decided, as JSON values: the form without who submitted it."""
        return self.model_dump(mode="json", exclude=set(SUBMITTER_FIELDS))


class ScreeningForm(ApprovalForm):
    """Step 1: accept the allegation for verification, mark it a duplicate, or reject it."""

    outcome: Literal["accepted", "duplicate", "rejected"] = Field(title="Screening outcome")
    reason: str = _reason("Reason (required to reject or mark duplicate)")
    duplicate_of: str = Field(
        default="",
        title="Duplicate of case",
        description="Reference of the case this duplicates, e.g. RC-2026-0003",
        max_length=20,
        pattern=r"^(RC-\d{4}-\d{4,})?$",
    )


class SafetyForm(ApprovalForm):
    """Step 1: the safety assessment that must precede any contact or supplier notice."""

    risk_level: RiskLevel = Field(title="Overall risk level")
    risks: list[SafetyRisk] = Field(default_factory=list, title="Risks identified", max_length=7)
    mitigation: str = _reason("Mitigation measures")
    contact_cleared: bool = Field(
        title="Contact with affected persons is safe to proceed",
        description="Only trained staff, voluntary, confidential, in the person's language.",
    )
    valid_days: int = Field(default=90, ge=1, le=365, title="Valid for (days)")


class VerificationForm(ApprovalForm):
    """Step 1: the verifier's findings (ILO indicators, Palermo test) and decision."""

    outcome: Literal["substantiated", "unsubstantiated", "inconclusive"] = Field(title="Decision")
    reason: str = _reason("Reasons for the decision", required=True)
    abuse_of_vulnerability: IndicatorStatus = IndicatorStatus.UNKNOWN
    deception: IndicatorStatus = IndicatorStatus.UNKNOWN
    restriction_of_movement: IndicatorStatus = IndicatorStatus.UNKNOWN
    isolation: IndicatorStatus = IndicatorStatus.UNKNOWN
    physical_sexual_violence: IndicatorStatus = IndicatorStatus.UNKNOWN
    intimidation_threats: IndicatorStatus = IndicatorStatus.UNKNOWN
    retention_of_identity_documents: IndicatorStatus = IndicatorStatus.UNKNOWN
    withholding_of_wages: IndicatorStatus = IndicatorStatus.UNKNOWN
    debt_bondage: IndicatorStatus = IndicatorStatus.UNKNOWN
    abusive_working_and_living_conditions: IndicatorStatus = IndicatorStatus.UNKNOWN
    excessive_overtime: IndicatorStatus = IndicatorStatus.UNKNOWN
    palermo_act: IndicatorStatus = Field(
        default=IndicatorStatus.UNKNOWN, title="Palermo: act (recruitment, transport, harbouring…)"
    )
    palermo_means: IndicatorStatus = Field(
        default=IndicatorStatus.UNKNOWN,
        title="Palermo: means (force, coercion, deception…; not needed for minors)",
    )
    palermo_purpose: IndicatorStatus = Field(
        default=IndicatorStatus.UNKNOWN, title="Palermo: purpose (exploitation)"
    )
    annex_ii: list[AnnexIICategory] = Field(
        default_factory=list, title="OECD Annex II categories", max_length=10
    )
    minors_involved: bool = Field(default=False, title="Minors (or persons of uncertain age)")


class ImpactAssessmentForm(ApprovalForm):
    """Step 2: how the company is involved, and how severe the harm is."""

    involvement: Involvement = Field(title="Company involvement (UNGP 19)")
    involvement_evidence: str = _reason("Evidence for the involvement", required=True)
    scale: Scale = Field(title="Scale: how grave is the harm")
    persons_affected: int = Field(ge=1, le=1_000_000, title="Scope: persons affected")
    irremediability: Irremediability = Field(title="How hard is the harm to reverse")
    minors_involved: bool = Field(default=False, title="Minors involved")


class ResponseForm(ApprovalForm):
    """Step 2: the senior approver's response decision."""

    accept_response_level: bool = Field(
        title="Accept the response level derived by policy",
        description="If not, choose the level below and give a reason.",
    )
    override_level: Literal["none", "level_1", "level_2", "level_3"] = Field(
        default="none", title="Response level instead (level_1 is the most urgent)"
    )
    override_reason: str = _reason("Reason for overriding")
    relationship: RelationshipDecision = Field(title="Business relationship")
    victim_impact_note: str = _reason(
        "Effect of this relationship decision on the workers", required=True
    )
    law_enforcement_referral: bool = Field(title="Refer to law enforcement")
    referral_rationale: str = _reason("Why (victim safety and consent weighed)", required=True)


class PlanAgreementForm(ApprovalForm):
    """Step 3: the victim's (or representative's) informed agreement to the plan."""

    outcome: Literal["agree", "agree_with_changes", "refuse"] = Field(title="Agreement")
    consent_recorded: bool = Field(
        title="The affected persons gave informed consent to this plan",
        description="In their language; they may withdraw it at any time.",
    )
    consent_method: ConsentMethod = Field(title="How consent was given")
    interpreter_used: bool = Field(default=False, title="An interpreter was used")
    victim_priorities: str = _reason("The victims' priorities, in their own terms")
    remove_actions: list[str] = Field(
        default_factory=list,
        title="Actions to remove (their keys)",
        max_length=50,
    )
    comments: str = _reason("Comments")


class PlanBudgetForm(ApprovalForm):
    """Step 3: the budget owner's approval of the plan's funding."""

    approve: bool = Field(title="Approve the funding of this plan")
    budget_amount: float = Field(default=0.0, ge=0, le=1e12, title="Budget approved")
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$", title="Currency (ISO 4217)")
    reason: str = _reason("Reason (required to refuse)")


class ClosureForm(ApprovalForm):
    """Step 5: propose the closure (a second, different approver confirms it)."""

    closure_type: ClosureType = Field(title="Closure type")
    victim_view_recorded: bool = Field(title="The victims' view of the outcome is recorded")
    victim_view: str = _reason("The victims' view, in their own terms")
    unmet_needs: str = _reason("Unmet needs and outstanding referrals")
    unresolved_authorised: bool = Field(
        default=False, title="Closing unresolved is authorised by management"
    )
    follow_up_days: int = Field(
        default=0, ge=0, le=730, title="Follow-up contact in (days; 0: none)"
    )


class ClosureConfirmationForm(ApprovalForm):
    """Step 5: the second approver confirms or rejects the proposed closure (four eyes)."""

    confirm: bool = Field(title="Confirm the closure as proposed")
    reason: str = _reason("Reason (required to reject)")


class LessonsForm(ApprovalForm):
    """Step 6: root causes and the changes they call for."""

    root_causes: list[RootCause] = Field(min_length=1, max_length=12, title="Root causes")
    changes: list[str] = Field(
        default_factory=list,
        max_length=20,
        title="Changes to make (one per item)",
        description="Due diligence, supplier requirements, audits, purchasing practices…",
    )
    change_owner_role: Role = Field(default=Role.CASE_LEAD, title="Who owns the changes")
    summary: str = _reason("Summary", limit=4000)
