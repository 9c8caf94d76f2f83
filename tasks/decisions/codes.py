"""One-time approval codes and approval-page links for a waiting decision, and what every message
about a waiting decision says. A code is stored only as a keyed hash; it travels encrypted to the
delivery task, which alone can read it.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from models.enums import LinkPurpose, NotificationEvent
from models.policy import Policy
from models.tables import ApprovalCode, ApprovalLink, DecisionRequest, RemediationCase, Stakeholder
from notifications.outbox import notify
from tasks.context import current_policy, current_routing
from tasks.store.links import create_link
from tasks.store.vault import Vault, get_vault
from tasks.web.no_passkey import tell_case_lead_without_passkey

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I to misread


CODE_LENGTH = 8


def new_code() -> str:
    """Return a fresh one-time approval code."""
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def code_hash(vault: Vault, stakeholder_id: uuid.UUID, code: str) -> str:
    """Hash a code for one stakeholder (keyed: a copied table does not reveal codes)."""
    normalised = code.strip().upper().replace("-", "").replace(" ", "")
    return vault.keyed_hash(f"approval:{stakeholder_id}:{normalised}".encode())


def issue_codes(
    session: Session,
    *,
    case: RemediationCase,
    request: DecisionRequest,
    approvers: list[Stakeholder],
    policy: Policy,
    vault: Vault,
    now: datetime,
    carry_from: DecisionRequest | None = None,
) -> dict[uuid.UUID, uuid.UUID]:
    """Give each approver a code and an approval-page link for this request.

    An unused, unexpired code carries over from the round this one replaces (with a new link
    for the new round); a fresh code is sent in a decision_requested message. Returns the
    approvers' link ids.
    """
    previous: dict[uuid.UUID, ApprovalCode] = {}
    old_links: dict[uuid.UUID, ApprovalLink] = {}
    if carry_from is not None:
        for code_row in session.exec(
            select(ApprovalCode).where(ApprovalCode.request_id == carry_from.id)
        ).all():
            previous[code_row.stakeholder_id] = code_row
        for link in session.exec(
            select(ApprovalLink).where(ApprovalLink.request_id == carry_from.id)
        ).all():
            old_links[link.stakeholder_id] = link
    ttl = timedelta(hours=policy.approvals.code_ttl_hours)
    # a link is a bearer credential (it may be forwarded): it lives no longer than the policy says
    link_until = now + timedelta(hours=policy.approvals.link_ttl_hours)
    links: dict[uuid.UUID, uuid.UUID] = {}
    fresh: list[Stakeholder] = []
    private: dict[uuid.UUID, dict[str, Any]] = {}
    for person in approvers:
        old = previous.get(person.id)
        if old is not None and old.used_at is None and old.expires_at > now:
            session.add(
                ApprovalCode(
                    request_id=request.id,
                    stakeholder_id=person.id,
                    code_hash=old.code_hash,
                    expires_at=old.expires_at,
                )
            )
            old_link = old_links.get(person.id)
            if old_link is not None and old_link.code_ciphertext:
                link = _decide_link(
                    session,
                    request,
                    person,
                    now=now,
                    expires_at=min(old.expires_at, link_until),
                    code_ciphertext=old_link.code_ciphertext,
                )
                links[person.id] = link.id
            continue
        link, private[person.id] = _fresh_code(
            session,
            request,
            person,
            vault=vault,
            now=now,
            until=now + ttl,
            link_until=link_until,
        )
        links[person.id] = link.id
        fresh.append(person)
    if fresh:
        notify(
            session,
            routing=current_routing(),
            event=NotificationEvent.DECISION_REQUESTED,
            case=case,
            key=f"decision-requested:{request.id}",
            now=now,
            approvers=fresh,
            private=private,
            context=request_context(case, request),
        )
    # an approver the page will ask for a passkey they do not have: the case lead hears of it now
    tell_case_lead_without_passkey(session, case, request, approvers, now, policy=policy)
    return links


def _decide_link(
    session: Session,
    request: DecisionRequest,
    person: Stakeholder,
    *,
    now: datetime,
    expires_at: datetime,
    code_ciphertext: str,
) -> ApprovalLink:
    """Add an approver's approval-page link for a request, carrying their code (encrypted)."""
    link = create_link(
        session,
        purpose=LinkPurpose.DECIDE,
        case_id=request.case_id,
        stakeholder_id=person.id,
        request_id=request.id,
        now=now,
        expires_at=expires_at,
    )
    link.code_ciphertext = code_ciphertext
    session.add(link)
    return link


def _fresh_code(
    session: Session,
    request: DecisionRequest,
    person: Stakeholder,
    *,
    vault: Vault,
    now: datetime,
    until: datetime,
    link_until: datetime,
) -> tuple[ApprovalLink, dict[str, Any]]:
    """Give one approver a new code and link; return the link and the message's private part."""
    code = new_code()
    hashed = code_hash(vault, person.id, code)
    row = session.exec(
        select(ApprovalCode).where(
            ApprovalCode.request_id == request.id, ApprovalCode.stakeholder_id == person.id
        )
    ).first() or ApprovalCode(
        request_id=request.id, stakeholder_id=person.id, code_hash=hashed, expires_at=until
    )
    row.code_hash = hashed
    row.expires_at = until
    row.used_at = None
    session.add(row)
    link = _decide_link(
        session,
        request,
        person,
        now=now,
        expires_at=min(until, link_until),
        code_ciphertext=vault.encrypt({"code": code}),
    )
    # the code travels encrypted and is readable only by the delivery task
    private = {
        "link_id": str(link.id),
        "code_ciphertext": vault.encrypt({"code": code}),
        "code_expires_at": until.isoformat(),
    }
    return link, private


def live_link(
    session: Session,
    *,
    request: DecisionRequest,
    person: Stakeholder,
    now: datetime,
) -> ApprovalLink | None:
    """Return a working decision link for an approver, making a new one if theirs ran out.

    Links live `approvals.link_ttl_hours`, less than a decision may wait; a reminder carries a
    fresh link to the same code while the code itself is unused and valid. None once the code is
    used or expired (the person asks the case lead for a new one).
    """
    links = session.exec(
        select(ApprovalLink)
        .where(
            ApprovalLink.request_id == request.id,
            ApprovalLink.stakeholder_id == person.id,
            ApprovalLink.purpose == LinkPurpose.DECIDE,
            col(ApprovalLink.used_at).is_(None),
        )
        .order_by(col(ApprovalLink.created_at).desc())
    ).all()
    live = [link for link in links if link.expires_at > now]
    if live:
        return live[0]
    code = session.exec(
        select(ApprovalCode).where(
            ApprovalCode.request_id == request.id, ApprovalCode.stakeholder_id == person.id
        )
    ).first()
    carried = next((link.code_ciphertext for link in links if link.code_ciphertext), None)
    if code is None or code.used_at is not None or code.expires_at <= now or carried is None:
        return None
    hours = current_policy().approvals.link_ttl_hours
    until = min(code.expires_at, now + timedelta(hours=hours))
    return _decide_link(
        session, request, person, now=now, expires_at=until, code_ciphertext=carried
    )


def reissue_code(
    session: Session,
    *,
    case: RemediationCase,
    request: DecisionRequest,
    person: Stakeholder,
    now: datetime,
) -> None:
    """Send one approver a new code and link for a waiting request (their old ones stop working).

    For a person locked out after failed attempts, or whose code was lost or used.
    """
    policy, vault = current_policy(), get_vault()
    for old in session.exec(
        select(ApprovalLink).where(
            ApprovalLink.request_id == request.id, ApprovalLink.stakeholder_id == person.id
        )
    ).all():
        old.expires_at = min(old.expires_at, now)
        session.add(old)
    link, private = _fresh_code(
        session,
        request,
        person,
        vault=vault,
        now=now,
        until=now + timedelta(hours=policy.approvals.code_ttl_hours),
        link_until=now + timedelta(hours=policy.approvals.link_ttl_hours),
    )
    notify(
        session,
        routing=current_routing(),
        event=NotificationEvent.DECISION_REQUESTED,
        case=case,
        key=f"decision-requested:{request.id}:{link.id}",
        now=now,
        approvers=[person],
        private={person.id: private},
        context=request_context(case, request),
    )


def request_context(case: RemediationCase, request: DecisionRequest) -> dict[str, Any]:
    """What every message about a waiting decision says (references only)."""
    return {
        "case_ref": case.reference,
        "step": request.step,
        "kind": request.kind.value,
        "round": request.round,
        "due_at": request.due_at.isoformat() if request.due_at else None,
        "flow_run_id": str(request.flow_run_id) if request.flow_run_id else None,
        "request_id": str(request.id),
    }
