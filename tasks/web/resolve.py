"""What a signed approval-page link allows, or why it is refused; using a link up once.

Showing a link reads only, so a link scanner that fetches it decides nothing. A refused link
(expired, used, or for someone who may not act on it) is audited on its case's chain
(tasks/web/refusals.py) and changes nothing else; a token we never issued is junk, counted for its
client address and audited in bulk (tasks/web/ratelimit.py). The token is never logged or stored:
it grants the link's power.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import col, select

from models.enums import (
    CaseState,
    DecisionKind,
    DecisionRequestStatus,
    LinkPurpose,
    Locale,
    MilestoneStatus,
    PlanStatus,
)
from models.tables import (
    ActionPlan,
    ApprovalLink,
    DecisionRequest,
    PlanAction,
    RemediationCase,
    Stakeholder,
)
from tasks.case_state import CLOSED_MILESTONES
from tasks.decisions.requests import describe_request
from tasks.steps.close import closure_words
from tasks.steps.table import spec_of
from tasks.store.audit import append_audit
from tasks.store.db import read_only, unit_of_work
from tasks.store.links import LinkInvalidError, read_token
from tasks.web.ratelimit import count_junk
from tasks.web.refusals import (
    EXPIRED,
    NO_LONGER_NEEDED,
    NOT_APPROVER,
    NOT_OWNER,
    TAMPERED,
    USED,
    LinkRefusedError,
    Refusal,
    audit_refusal,
)

# --- what a link shows ---------------------------------------------------------------------------


class MilestoneView(BaseModel):
    """A milestone as its owner sees it on the page (no personal data)."""

    key: str
    title: str
    due_on: date
    verification_method: str
    status: MilestoneStatus
    evidence: int


class LinkView(BaseModel):
    """What a valid link allows, and for whom (references only)."""

    link_id: uuid.UUID
    purpose: LinkPurpose
    case_ref: str
    stakeholder_key: str
    expires_at: datetime
    title: str
    request_id: uuid.UUID | None = None
    kind: DecisionKind | None = None
    round: int | None = None
    # failed attempts on the request when the link was shown: one more means "not proven"
    tries: int = 0
    due_at: datetime | None = None
    milestone: MilestoneView | None = None
    locale: Locale = Locale.EN  # the recipient's: the page speaks it (flows/web/app.py)

    def refused(self, refusal: Refusal, reason: str, *, now: datetime) -> LinkRefusedError:
        """Audit that this link was refused for a reason; return the error that says so."""
        audit_refusal(
            reason=reason,
            now=now,
            case_ref=self.case_ref,
            link_id=self.link_id,
            purpose=self.purpose,
        )
        return refusal.error(reason)


@dataclass
class _Loaded:
    """A link row and what it points to, read in one read-only session."""

    link: ApprovalLink
    case: RemediationCase
    person: Stakeholder | None
    request: DecisionRequest | None = None
    newer_round: int | None = None
    action: PlanAction | None = None
    plan: ActionPlan | None = None


def _load(link_id: uuid.UUID) -> _Loaded | None:
    with read_only() as session:
        link = session.get(ApprovalLink, link_id)
        if link is None:
            return None
        case = session.get(RemediationCase, link.case_id)
        assert case is not None
        loaded = _Loaded(link, case, session.get(Stakeholder, link.stakeholder_id))
        if link.request_id is not None:
            loaded.request = session.get(DecisionRequest, link.request_id)
        if loaded.request is not None and loaded.request.status != DecisionRequestStatus.WAITING:
            loaded.newer_round = session.exec(
                select(DecisionRequest.round)
                .join(ApprovalLink, col(ApprovalLink.request_id) == col(DecisionRequest.id))
                .where(
                    DecisionRequest.case_id == case.id,
                    DecisionRequest.kind == loaded.request.kind,
                    DecisionRequest.status == DecisionRequestStatus.WAITING,
                    DecisionRequest.round > loaded.request.round,
                    ApprovalLink.stakeholder_id == link.stakeholder_id,
                    col(ApprovalLink.used_at).is_(None),
                )
                .order_by(col(DecisionRequest.round).desc())
            ).first()
        if link.action_id is not None:
            loaded.action = session.get(PlanAction, link.action_id)
            if loaded.action is not None:
                loaded.plan = session.get(ActionPlan, loaded.action.plan_id)
        return loaded


def _check(loaded: _Loaded, token_expiry: datetime, now: datetime) -> LinkRefusedError | None:
    """Return why a stored link may not be used now, or None."""
    link, person = loaded.link, loaded.person
    if link.expires_at <= now or token_expiry <= now:
        return EXPIRED.error("expired")
    if link.used_at is not None:
        return USED.error("replayed")
    if link.purpose == LinkPurpose.DECIDE:
        request = loaded.request
        if request is None:
            return TAMPERED.error("no-request")
        if request.status != DecisionRequestStatus.WAITING:
            return _not_waiting(request, loaded.newer_round)
        if person is None or not person.active or str(person.id) not in request.approver_ids:
            return NOT_APPROVER.error("wrong-recipient")
        return None
    action = loaded.action
    if action is None:
        return TAMPERED.error("no-milestone")
    if person is None or not person.active or action.owner_id != person.id:
        return NOT_OWNER.error("wrong-recipient")
    plan_open = loaded.plan is not None and loaded.plan.status == PlanStatus.APPROVED
    if (
        action.status in CLOSED_MILESTONES
        or not plan_open
        or loaded.case.state != CaseState.IMPLEMENTING
    ):
        return LinkRefusedError(
            409,
            "This milestone is not open for progress reports",
            f"Milestone {action.key} is {action.status.value} and the case is "
            f"{loaded.case.state.value.replace('_', ' ')}; there is nothing to report here.",
            "milestone-closed",
        )
    return None


def _not_waiting(request: DecisionRequest, newer_round: int | None) -> LinkRefusedError:
    hint = None
    if newer_round is not None:
        hint = (
            f"A newer request for this decision (round {newer_round}) is waiting for you. "
            "Use the link in the latest message about it."
        )
    if request.status == DecisionRequestStatus.DECIDED:
        title = "This decision was taken already"
        message = "The decision this link was made for has been taken; nothing is left to do."
    elif request.status == DecisionRequestStatus.CANCELLED:
        title, message = NO_LONGER_NEEDED.title, NO_LONGER_NEEDED.message
    else:
        title = "A newer request replaced this one"
        message = "The request this link was made for is no longer waiting; nothing was changed."
    return LinkRefusedError(409, title, message, f"not-waiting:{request.status.value}", hint)


def _read(token: str) -> tuple[uuid.UUID, datetime] | None:
    """Return the link id and expiry a token carries, or None if it is not one we issued."""
    if not token.isascii():
        # ours are base64url; hmac.compare_digest raises TypeError on non-ASCII text
        return None
    try:
        return read_token(token)
    except LinkInvalidError:
        return None


def resolve_link(token: str, *, now: datetime) -> LinkView:
    """Return what a link allows, or raise LinkRefusedError (audited). Writes nothing otherwise.

    A token we never issued is only counted here (tasks/web/ratelimit.py writes the counts in
    bulk): junk takes no write lock, however much of it comes.
    """
    read = _read(token)
    if read is None:
        count_junk("tampered", now=now)
        raise TAMPERED.error("tampered")
    link_id, token_expiry = read
    loaded = _load(link_id)
    if loaded is None:
        count_junk("unknown-link", now=now)
        raise TAMPERED.error("unknown-link")
    link = loaded.link
    refused = _check(loaded, token_expiry, now)
    if refused is not None:
        audit_refusal(
            reason=refused.reason,
            now=now,
            case_ref=loaded.case.reference,
            link_id=link.id,
            purpose=link.purpose,
        )
        raise refused
    assert loaded.person is not None
    view = LinkView(
        link_id=link.id,
        purpose=link.purpose,
        case_ref=loaded.case.reference,
        stakeholder_key=loaded.person.key,
        expires_at=link.expires_at,
        title="",
        locale=loaded.person.locale,
    )
    if loaded.request is not None:
        request = loaded.request
        view.request_id, view.kind, view.round = request.id, request.kind, request.round
        view.tries = request.tries
        view.due_at = request.due_at
        view.title = spec_of(request.kind).title
    elif loaded.action is not None:
        action = loaded.action
        view.title = f"Report progress on milestone {action.key}"
        view.milestone = MilestoneView(
            key=action.key,
            title=action.title,
            due_on=action.due_on,
            verification_method=action.verification_method,
            status=action.status,
            evidence=len(action.evidence_refs),
        )
    return view


def decision_markdown(view: LinkView) -> str:
    """Return the decision's description for the page: no approvers' keys, no code advice.

    A closure's signers also see, on this page only, what staff typed that they weigh: the
    verifier's reasons and the victims' view (tasks.steps.close.closure_words), quoted as text.
    """
    assert view.request_id is not None
    text = describe_request(view.request_id, for_page=True).strip()
    if view.kind in (DecisionKind.CLOSURE, DecisionKind.CLOSURE_CONFIRMATION):
        words = closure_words(view.request_id)
        if words:
            text = f"{text}\n\n{words}"
    return text


# --- using a link up -----------------------------------------------------------------------------


def claim_link(link_id: uuid.UUID, *, now: datetime) -> bool:
    """Use a link up, atomically; False if someone used it first."""
    with unit_of_work() as session:
        result = session.connection().execute(
            sa.update(ApprovalLink)
            .where(col(ApprovalLink.id) == link_id, col(ApprovalLink.used_at).is_(None))
            .values(used_at=now)
        )
        return result.rowcount == 1


def release_link(link_id: uuid.UUID) -> None:
    """Give a claimed link back after the action it was claimed for did not happen."""
    with unit_of_work() as session:
        session.connection().execute(
            sa.update(ApprovalLink).where(col(ApprovalLink.id) == link_id).values(used_at=None)
        )


def claim(view: LinkView, *, now: datetime) -> None:
    """Use a shown link up, or refuse it (audited) if someone used it first."""
    if not claim_link(view.link_id, now=now):
        raise view.refused(USED, "replayed", now=now)


def audit_used(view: LinkView, *, now: datetime, details: dict[str, Any]) -> None:
    """Record on the case's chain that the link's recipient used it, and for what."""
    with unit_of_work() as session:
        append_audit(
            session,
            chain=view.case_ref,
            actor=f"stakeholder:{view.stakeholder_key}",
            action="link.used",
            at=now,
            subject_type="approval_link",
            subject_id=str(view.link_id),
            details={"purpose": view.purpose.value, **details},
        )
