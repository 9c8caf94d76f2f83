"""A decision that waits for an approver without a passkey: the case lead is told, once.

Under the policy's `without_passkey = "tell_case_lead"` (the default) the approval page takes no
decision that needs a passkey from someone who has none; the decision waits. So that it does not
wait unseen, the case lead hears of it when the request is issued: this is called in the unit of
work that issues a request's links (tasks/decisions/codes.py `issue_codes`). It imports nothing of
the decision engine or the page, which import it.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from models.enums import NotificationEvent
from models.policy import Policy
from models.tables import DecisionRequest, RemediationCase, Stakeholder
from notifications.outbox import notify
from tasks.context import current_policy, current_routing
from tasks.store.audit import append_audit
from tasks.web.passkeys import active_credentials


def tell_case_lead_without_passkey(
    session: Session,
    case: RemediationCase,
    request: DecisionRequest,
    approvers: list[Stakeholder],
    now: datetime,
    *,
    policy: Policy | None = None,
) -> list[str]:
    """Tell the case lead, once per decision and person, that the decision waits for approvers
    who have no passkey yet (policy without_passkey = "tell_case_lead"); return their keys.

    Called in the unit of work that issues the request's links (tasks/decisions/codes.py), so a
    repeated issue enqueues nothing new (the outbox key names the request and the person).
    """
    rules = (policy or current_policy()).approvals
    if not rules.needs_passkey(request.kind) or rules.without_passkey != "tell_case_lead":
        return []
    told = []
    for person in approvers:
        if active_credentials(session, person.id):
            continue
        rows = notify(
            session,
            routing=current_routing(),
            event=NotificationEvent.PASSKEY_MISSING,
            case=case,
            # once per decision and person: a refused submission's next round tells nobody again
            key=f"passkey-missing:{case.id}:{request.kind.value}:{request.scope}:{person.id}",
            now=now,
            context={
                "case_ref": case.reference,
                "step": request.step,
                "kind": request.kind.value,
                "round": request.round,
                "request_id": str(request.id),
                "approver": person.key,
            },
        )
        if rows:
            told.append(person.key)
    if told:
        # one event for everyone the case lead was told of: the request is the subject
        append_audit(
            session,
            chain=case.reference,
            actor="system:approval-page",
            action="passkey.missing",
            at=now,
            subject_type="decision_request",
            subject_id=str(request.id),
            details={"approvers": told, "kind": request.kind.value},
        )
    return told
