"""A scripted set of stakeholders who take every decision of the sample case (demo and tests).

Each one does what a person does: reads the one-time code from the message sent to them, and
submits the form through the Prefect API, exactly as the UI's Resume button does.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import select

from models.enums import CaseState, DecisionKind, MilestoneStatus, OwedKind
from models.iso4217 import format_amount
from models.tables import DecisionRequest
from tasks.context import utcnow
from tasks.decisions.requests import case_state_and_waiting
from tasks.decisions.resume import await_verdict, issued_code, submit_with_code
from tasks.orchestration.runs import hand_over
from tasks.store.cases import get_case

Script = dict[DecisionKind, tuple[str, dict[str, Any]]]

SAMPLE_SCRIPT: Script = {
    DecisionKind.SCREENING: ("lena.lead", {"outcome": "accepted"}),
    DecisionKind.SAFETY: (
        "grace.advocate",
        {
            "risk_level": "high",
            "risks": ["retaliation", "trafficker_contact"],
            "mitigation": "Interviews off-site, by Safe Passage staff, in Swahili; no supplier "
            "notice before the workers are safe.",
            "contact_cleared": True,
        },
    ),
    DecisionKind.VERIFICATION: (
        "amani.verifier",
        {
            "outcome": "substantiated",
            "reason": "Consistent off-site interviews with P-01 and P-03; recruiter's ledger.",
            "deception": "present",
            "retention_of_identity_documents": "present",
            "debt_bondage": "present",
            "withholding_of_wages": "present",
            "palermo_act": "present",
            "palermo_means": "present",
            "palermo_purpose": "present",
            "annex_ii": ["forced_labour", "worst_forms_child_labour"],
            "minors_involved": True,
        },
    ),
    DecisionKind.IMPACT_ASSESSMENT: (
        "lena.lead",
        {
            "involvement": "directly_linked",
            "involvement_evidence": "Tin from the site reaches our products through Kivu "
            "Smelting (RMAP conformant); no purchasing link to the site itself.",
            "scale": "high",
            "persons_affected": 12,
            "irremediability": "difficult",
            "minors_involved": True,
        },
    ),
    DecisionKind.RESPONSE: (
        "sofia.senior",
        {
            "accept_response_level": True,
            "relationship": "continue_with_mitigation",
            "victim_impact_note": "Disengaging would cost the workers their income; we keep "
            "buying through the smelter while it enforces corrective action.",
            "law_enforcement_referral": False,
            "referral_rationale": "The workers asked not to involve the local police; reviewed "
            "again once they are safe.",
        },
    ),
    DecisionKind.PLAN_AGREEMENT: (
        "grace.advocate",
        {
            "outcome": "agree",
            "consent_recorded": True,
            "consent_method": "verbal",
            "interpreter_used": True,
            "victim_priorities": "Documents back first; school for P-01; repayment of fees.",
        },
    ),
    DecisionKind.PLAN_BUDGET: (
        "marc.budget",
        {"approve": True, "budget_amount": 48000, "currency": "USD"},
    ),
    DecisionKind.CLOSURE: (
        "lena.lead",
        {
            "closure_type": "resolved_accepted",
            "victim_view_recorded": True,
            "victim_view": "P-01 and P-03 accept the outcome; P-02 asked for follow-up.",
            "unmet_needs": "Follow-up on schooling for P-01.",
            "follow_up_days": 90,
        },
    ),
    DecisionKind.CLOSURE_CONFIRMATION: ("sofia.senior", {"confirm": True}),
    DecisionKind.LESSONS: (
        "lena.lead",
        {
            "root_causes": ["recruitment_fees", "document_retention", "weak_age_verification"],
            "changes": [
                "Require smelters to verify age checks at ASM sites they buy from",
                "Employer-pays principle in supplier code of conduct",
            ],
            "summary": "Recruitment through fee-charging intermediaries and weak age checks.",
        },
    ),
}


@dataclass
class Step:
    """One thing the script did, for the demo's printout."""

    what: str
    who: str
    where: str


@dataclass
class ScriptedStakeholders:
    """Answers every waiting decision of a case from a script until the case is done."""

    script: Script = field(default_factory=lambda: dict(SAMPLE_SCRIPT))
    override_once: dict[DecisionKind, dict[str, Any]] = field(default_factory=dict)
    log: list[Step] = field(default_factory=list)
    on_step: Callable[[Step], None] | None = None

    def _note(self, what: str, who: str, where: str) -> None:
        step = Step(what, who, where)
        self.log.append(step)
        if self.on_step:
            self.on_step(step)

    def decide(self, request: DecisionRequest) -> str:
        """Submit the scripted form for one waiting request; return the outcome."""
        who, values = self.script[request.kind]
        code = issued_code(request.id, who)
        if code is None:
            raise RuntimeError(f"{who} received no code for {request.kind.value}")
        form = {**values, "approver": who, "approval_code": code}
        form.update(self.override_once.pop(request.kind, {}))
        # proven with the code to Remedy; Prefect sees only a single-use ticket
        run_id = submit_with_code(request.id, form, channel="script")
        status = _wait_decided(request.id, tries=request.tries)
        self._note(f"{request.kind.value} ({status})", who, f"flow run {run_id}")
        return status

    def finish_milestones(self, case_ref: str, lead: str) -> None:
        """Report every active milestone done by its owner and verified by the case lead; a
        financial one once each person's payment is recorded and confirmed (settle)."""
        from tasks.steps.implement import update_milestone

        for key, owner in _open_milestones(case_ref):
            for line in settle(case_ref, key, payer=lead, representative=REPRESENTATIVE):
                self._note(f"payment to {line} confirmed", REPRESENTATIVE, "remedy ledger")
            update_milestone(
                case_ref,
                key,
                status=MilestoneStatus.DONE,
                by=owner or lead,
                note="Delivered; see evidence.",
                evidence=[f"evidence:{key}"],
                now=utcnow(),
            )
            result = update_milestone(
                case_ref,
                key,
                status=MilestoneStatus.VERIFIED,
                by=lead,
                note="Checked against the evidence.",
                now=utcnow(),
            )
            self._note(f"milestone {key} verified", lead, "remedy milestone update")
            if result.plan_completed:
                hand_over(case_ref, now=utcnow())

    def drive(
        self,
        case_ref: str,
        *,
        until: CaseState = CaseState.LESSONS_CAPTURED,
        timeout: float = 600.0,
        lead: str = "lena.lead",
    ) -> None:
        """Take the case's decisions as they come, until it reaches `until`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state, waiting = case_state_and_waiting(case_ref)
            if state == until:
                return
            if waiting:
                self.decide(waiting[0])
                continue
            if state == CaseState.IMPLEMENTING and _open_milestones(case_ref):
                self.finish_milestones(case_ref, lead)
                continue
            time.sleep(0.5)
        raise TimeoutError(f"{case_ref} did not reach {until.value} in {timeout:.0f} s")


REPRESENTATIVE = "grace.advocate"  # the victims' representative in examples/stakeholders.yaml


def settle(
    case_ref: str, key: str, *, payer: str, representative: str, now: datetime | None = None
) -> list[str]:
    """Pay what a financial milestone still owes each of its persons and have the victims'
    representative confirm each payment (demo and tests); return "P-01: 150.00 USD" lines.

    Payments are keyed by milestone, person, kind and currency: a second call records nothing.
    `now` is the moment of the payment and of its confirmation (tests pass their clock's).
    """
    when = now or utcnow()
    from models.ledger import PaymentMethod
    from models.tables import PlanAction
    from tasks.store.db import read_only
    from tasks.store.ledger import confirm_payment, record_payment
    from tasks.store.ledger_view import by_action, ledger_summary

    with read_only() as session:
        action = session.exec(
            select(PlanAction).where(
                PlanAction.case_id == get_case(session, case_ref).id, PlanAction.key == key
            )
        ).first()
        lines = by_action(session, action) if action is not None else []
    done = []
    for line in lines:
        if line.settled:
            continue
        if line.remaining > 0:
            record_payment(
                case_ref,
                line.pseudonym,
                kind=line.kind,
                currency=line.currency,
                amount=line.remaining,
                paid_on=when.date(),
                # a debt is written off, not paid: its record says so
                method=(
                    PaymentMethod.OTHER
                    if line.kind == OwedKind.DEBT_CANCELLED
                    else PaymentMethod.MOBILE_MONEY
                ),
                reference=f"demo-transfer-{key}-{line.pseudonym}",
                evidence=[f"receipt:{key}:{line.pseudonym}"],
                by=payer,
                now=when,
                idempotency_key=f"{case_ref}:{key}:{line.pseudonym}:{line.kind}:{line.currency}",
            )
        with read_only() as session:
            summary = ledger_summary(session, get_case(session, case_ref).id)
        for payment in summary.payments:
            if (payment.pseudonym, payment.kind, payment.currency) == (
                line.pseudonym,
                line.kind,
                line.currency,
            ) and not payment.confirmed:
                confirm_payment(
                    case_ref, payment.id, given_by="representative", by=representative, now=when
                )
        done.append(f"{line.pseudonym}: {format_amount(line.owed, line.currency)}")
    return done


def _wait_decided(request_id: uuid.UUID, *, tries: int, timeout: float = 120.0) -> str:
    checked = await_verdict(request_id, wait_seconds=timeout, poll=0.3, tries=tries)
    if checked.status == "checking":
        raise TimeoutError(f"decision request {request_id} was not checked in {timeout:.0f} s")
    return checked.status


def _open_milestones(case_ref: str) -> list[tuple[str, str | None]]:
    from sqlmodel import col, select

    from models.enums import PlanStatus
    from models.tables import PlanAction, Stakeholder
    from tasks.case_state import current_plan
    from tasks.store.cases import get_case
    from tasks.store.db import read_only

    with read_only() as session:
        case = get_case(session, case_ref)
        plan = current_plan(session, case.id, PlanStatus.APPROVED)
        if plan is None:
            return []
        rows = session.exec(
            select(PlanAction.key, Stakeholder.key)
            .join(Stakeholder, col(Stakeholder.id) == col(PlanAction.owner_id), isouter=True)
            .where(
                PlanAction.plan_id == plan.id,
                col(PlanAction.status).in_([MilestoneStatus.ACTIVE, MilestoneStatus.DONE]),
            )
            .order_by(col(PlanAction.due_on), col(PlanAction.key))
        ).all()
        return [(k, o) for k, o in rows]
