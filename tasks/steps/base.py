"""The contract every step's decisions fulfil, and the reads of a case that several steps share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from models.enums import CaseEvent, DecisionKind, Role, Step
from models.forms import ApprovalForm
from models.lifecycle import Transition, TransitionNotAllowed
from models.policy import Policy
from models.tables import (
    AffectedPerson,
    Allegation,
    DecisionRequest,
    RemediationCase,
    Stakeholder,
    VerificationFinding,
)
from tasks.case_state import move


class RefusedError(Exception):
    """A submission breaks a rule of its decision; `reason` tells the approver what to change."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Verdict:
    """What a handler made of an accepted submission."""

    outcome: str
    final: bool = True  # False: recorded, and the same decision is asked again (new round)
    payload: dict[str, Any] | None = None


@dataclass
class HandlerContext:
    """What a decision's handler works with: one unit of work, the case locked."""

    session: Session
    case: RemediationCase
    request: DecisionRequest
    form: ApprovalForm
    approver: Stakeholder
    now: datetime
    policy: Policy


Handler = Callable[[HandlerContext], Verdict]
Describer = Callable[[Session, RemediationCase, DecisionRequest], str]
InitialData = Callable[[Session, RemediationCase], dict[str, Any]]


def no_initial_data(_session: Session, _case: RemediationCase) -> dict[str, Any]:
    """Start the form from its own defaults."""
    return {}


@dataclass(frozen=True)
class DecisionSpec:
    """Everything about one kind of decision, in one place (see docs/architecture.md).

    `form` is what the approver fills in, `roles` who may take it, `title` what messages and
    pages call it, `describe` what the approver is shown, `initial` what the form starts with,
    and `handle` what an accepted submission changes in the store (it raises RefusedError to
    refuse the submission, which the engine audits before asking again).
    """

    kind: DecisionKind
    step: Step
    form: type[ApprovalForm]
    roles: tuple[Role, ...]
    title: str
    describe: Describer
    handle: Handler
    initial: InitialData = no_initial_data


def transition(ctx: HandlerContext, event: CaseEvent, **overrides: Any) -> Transition:
    """Move the case for a decision; a transition the lifecycle refuses refuses the submission."""
    try:
        return move(
            ctx.session,
            ctx.case,
            event,
            now=ctx.now,
            actor=f"stakeholder:{ctx.approver.key}",
            **overrides,
        )
    except TransitionNotAllowed as exc:
        raise RefusedError(exc.reason) from None


def allegation_of(session: Session, case: RemediationCase) -> Allegation:
    allegation = session.exec(
        select(Allegation)
        .where(Allegation.case_id == case.id)
        .order_by(col(Allegation.received_at))
    ).first()
    assert allegation is not None, "every case is opened from an allegation"
    return allegation


def persons_of(session: Session, case: RemediationCase) -> list[AffectedPerson]:
    return list(
        session.exec(
            select(AffectedPerson)
            .where(AffectedPerson.case_id == case.id)
            .order_by(col(AffectedPerson.pseudonym))
        ).all()
    )


def latest_finding(session: Session, case: RemediationCase) -> VerificationFinding | None:
    return session.exec(
        select(VerificationFinding)
        .where(VerificationFinding.case_id == case.id)
        .order_by(col(VerificationFinding.assessed_at).desc())
    ).first()
