"""The approval page's work: read a signed link, show what it allows, and act on it once.

The web layer (flows/web/app.py) only parses requests and renders pages; everything else is
here, as plain functions over the case store and the Prefect API. Showing a link reads only, so a
link scanner that fetches it decides nothing. A refused link (tampered, expired, used, or for
someone who may not act on it) is audited and changes nothing else. Logs name case references and
link ids only: never the token (it grants the link's power) nor what a person typed.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import sqlalchemy as sa
from pydantic import BaseModel, ValidationError
from sqlmodel import col, select

from models.enums import (
    CaseState,
    DecisionKind,
    DecisionRequestStatus,
    LinkPurpose,
    MilestoneStatus,
    PlanStatus,
)
from models.settings import get_settings
from models.tables import (
    ActionPlan,
    ApprovalLink,
    DecisionRequest,
    PlanAction,
    RemediationCase,
    Stakeholder,
)
from tasks.case_state import CLOSED_MILESTONES
from tasks.decisions.fields import FieldSpec, fields_from_schema
from tasks.decisions.requests import describe_request
from tasks.decisions.resume import SubmitFailedError, load_request, submit_decision
from tasks.decisions.submissions import refusal_reason
from tasks.inputs import explain
from tasks.steps.implement import MilestoneResult, MilestoneUpdateError, update_milestone
from tasks.steps.table import spec_of
from tasks.store.audit import SYSTEM_CHAIN, append_audit
from tasks.store.db import read_only, unit_of_work
from tasks.store.links import LinkInvalidError, link_code, read_token

log = logging.getLogger("remedy.approval_page")

ACTOR = "system:approval-page"
CSRF_INFO = b"remedy approval page csrf v1"
# form fields of the page itself; no decision form may use these names
CSRF_FIELD, KEY_FIELD = "csrf", "stakeholder_key"
HIDDEN_FIELDS = ("approver", "approval_code")
MAX_EVIDENCE = 20
FormData = Mapping[str, Sequence[str]]


# --- refusals ------------------------------------------------------------------------------------


class LinkRefusedError(Exception):
    """A link may not be shown or used; the page says why with `status`, `title`, `message`."""

    def __init__(
        self, status: int, title: str, message: str, reason: str, hint: str | None = None
    ) -> None:
        super().__init__(f"{reason}: {title}")
        self.status, self.title, self.message = status, title, message
        self.reason, self.hint = reason, hint


class FormProblemsError(Exception):
    """A submission is incomplete or breaks a rule; nothing was used up or changed."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class SubmissionFailedError(Exception):
    """Prefect did not take the submission; the link was released and nothing changed."""


_TAMPERED = (
    400,
    "This link is not valid",
    "The address is incomplete or was changed on the way. Open the link from your message "
    "again; if it still fails, ask the case lead for a new one.",
)
_EXPIRED = (
    410,
    "This link has expired",
    "Links to the approval page work for a limited time. Ask the case lead for a new one, or "
    "decide in the Prefect UI with the code from your message.",
)
_USED = (
    410,
    "This link was used already",
    "Each link works once, and this one has been used. If that was not you, tell the case lead.",
)
_NOT_APPROVER = (
    403,
    "This link was sent to someone who may not take this decision",
    "The person this link was made for is no longer a designated approver of this decision "
    "(roles or the directory changed). Ask the case lead.",
)
_SOMEONE_ELSE = (
    403,
    "This link was sent to someone else",
    "The stakeholder key you typed is not the one this link was made for. Only its recipient "
    "may use it; nothing was changed and the link still works for them.",
)
_CSRF = (
    403,
    "This form could not be accepted",
    "The submission did not come from this page's own form. Open the link again and submit "
    "the form shown there; nothing was changed.",
)


def _refusal(spec: tuple[int, str, str], reason: str, hint: str | None = None) -> LinkRefusedError:
    status, title, message = spec
    return LinkRefusedError(status, title, message, reason, hint)


def audit_refusal(
    *,
    reason: str,
    now: datetime,
    case_ref: str | None = None,
    link_id: uuid.UUID | None = None,
    purpose: LinkPurpose | None = None,
) -> None:
    """Record a refused link on the case's chain (the system chain if no link is known)."""
    details: dict[str, Any] = {"reason": reason}
    if purpose is not None:
        details["purpose"] = purpose.value
    with unit_of_work() as session:
        append_audit(
            session,
            chain=case_ref or SYSTEM_CHAIN,
            actor=ACTOR,
            action="link.refused",
            at=now,
            subject_type="approval_link" if link_id else None,
            subject_id=str(link_id) if link_id else None,
            details=details,
        )
    log.info("link refused: case=%s link=%s reason=%s", case_ref or "-", link_id or "-", reason)


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
    due_at: datetime | None = None
    milestone: MilestoneView | None = None


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
        return _refusal(_EXPIRED, "expired")
    if link.used_at is not None:
        return _refusal(_USED, "replayed")
    if link.purpose == LinkPurpose.DECIDE:
        request = loaded.request
        if request is None:
            return _refusal(_TAMPERED, "no-request")
        if request.status != DecisionRequestStatus.WAITING:
            return _not_waiting(request, loaded.newer_round)
        if person is None or not person.active or str(person.id) not in request.approver_ids:
            return _refusal(_NOT_APPROVER, "wrong-recipient")
        return None
    action = loaded.action
    if action is None:
        return _refusal(_TAMPERED, "no-milestone")
    if person is None or not person.active or action.owner_id != person.id:
        return LinkRefusedError(
            403,
            "This link was sent to someone who may not report on this milestone",
            "The person this link was made for no longer owns this milestone. Ask the case lead.",
            "wrong-recipient",
        )
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
        title = "This decision is no longer needed"
        message = (
            "The case left the step that asked for it (it was put on hold, closed early or "
            "revised); nothing was changed. A new request reaches you if the step asks again."
        )
    else:
        title = "A newer request replaced this one"
        message = "The request this link was made for is no longer waiting; nothing was changed."
    return LinkRefusedError(409, title, message, f"not-waiting:{request.status.value}", hint)


def resolve_link(token: str, *, now: datetime) -> LinkView:
    """Return what a link allows, or raise LinkRefusedError (audited). Writes nothing otherwise."""
    try:
        link_id, token_expiry = read_token(token)
    except LinkInvalidError:
        audit_refusal(reason="tampered", now=now)
        raise _refusal(_TAMPERED, "tampered") from None
    loaded = _load(link_id)
    if loaded is None:
        audit_refusal(reason="unknown-link", now=now, link_id=link_id)
        raise _refusal(_TAMPERED, "unknown-link")
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
    )
    if loaded.request is not None:
        request = loaded.request
        view.request_id, view.kind, view.round = request.id, request.kind, request.round
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
    """Return the decision's description for the page (without the Prefect UI's code advice)."""
    assert view.request_id is not None
    text = describe_request(view.request_id).strip()
    head, sep, last = text.rpartition("\n\n")
    if sep and "one-time approval code" in last:
        # the page submits the code itself; the person only confirms who they are
        text = head
    return text


# --- CSRF and origin -----------------------------------------------------------------------------


def csrf_token(link_id: uuid.UUID) -> str:
    """Return the CSRF token of a link's form (a keyed hash: only this server can make it)."""
    from tasks.store.vault import get_vault

    key = get_vault().derive(CSRF_INFO)
    return hmac.new(key, f"{link_id}csrf".encode(), "sha256").hexdigest()


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:
        port = -1
    return scheme, (parts.hostname or "").lower(), port


def same_origin(origin: str | None, fetch_site: str | None) -> bool:
    """Tell whether a POST comes from the page itself, judged by the headers browsers send."""
    if fetch_site is not None and fetch_site.lower() not in ("same-origin", "none"):
        return False
    # Under `Referrer-Policy: no-referrer` browsers send `Origin: null` with a form's POST;
    # the CSRF token and Sec-Fetch-Site carry the check then.
    if origin is None or origin == "null":
        return True
    return _origin(origin) == _origin(get_settings().approval_base_url)


def check_post(
    view: LinkView, form: FormData, *, origin: str | None, fetch_site: str | None, now: datetime
) -> None:
    """Refuse (audited) a POST without the page's CSRF token, from elsewhere, or by another."""
    given = _first(form, CSRF_FIELD)
    token_ok = hmac.compare_digest(given.encode(), csrf_token(view.link_id).encode())
    if not token_ok or not same_origin(origin, fetch_site):
        audit_refusal(
            reason="csrf",
            now=now,
            case_ref=view.case_ref,
            link_id=view.link_id,
            purpose=view.purpose,
        )
        raise _refusal(_CSRF, "csrf")
    if _first(form, KEY_FIELD).strip().casefold() != view.stakeholder_key.casefold():
        audit_refusal(
            reason="wrong-recipient",
            now=now,
            case_ref=view.case_ref,
            link_id=view.link_id,
            purpose=view.purpose,
        )
        raise _refusal(_SOMEONE_ELSE, "wrong-recipient")


# --- the form, from the decision's JSON schema ---------------------------------------------------


def decision_fields(kind: DecisionKind) -> list[FieldSpec]:
    """Describe the inputs of a decision's form (who decides and the code are not asked)."""
    schema = spec_of(kind).form.model_json_schema()
    return fields_from_schema(schema, skip=(*HIDDEN_FIELDS, CSRF_FIELD, KEY_FIELD))


def progress_fields() -> list[FieldSpec]:
    """Describe the inputs of a milestone progress report."""
    return [
        FieldSpec(
            name="status",
            label="Status",
            help="In progress: work has started. Done: finished; the case lead verifies it.",
            widget="select",
            type="enum",
            required=True,
            options=[(MilestoneStatus.ACTIVE.value, "in progress"), ("done", "done")],
        ),
        FieldSpec(
            name="note",
            label="Note",
            help="What was done. Refer to people by pseudonym (P-01); no names or contacts.",
            widget="textarea",
            type="string",
            required=False,
            max_length=4000,
        ),
        FieldSpec(
            name="evidence",
            label="Evidence references (one per line)",
            help="References to where the evidence is kept, e.g. doc:receipt-17.",
            widget="lines",
            type="string_list",
            required=False,
            max_items=MAX_EVIDENCE,
        ),
    ]


def _first(form: FormData, name: str) -> str:
    values = form.get(name) or [""]
    return values[0]


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def submitted_values(fields: list[FieldSpec], form: FormData) -> dict[str, str | list[str]]:
    """Return what was typed into each field, to show the form again as it was."""
    return {
        f.name: list(form.get(f.name, [])) if f.widget == "checkboxes" else _first(form, f.name)
        for f in fields
    }


def parse_values(fields: list[FieldSpec], form: FormData) -> dict[str, Any]:
    """Turn the form's strings into values for the decision's model; empty fields are left out."""
    values: dict[str, Any] = {}
    for f in fields:
        if f.type == "enum_list":
            values[f.name] = [v for v in form.get(f.name, []) if v]
            continue
        text = _first(form, f.name).replace("\r\n", "\n")
        if f.type == "string_list":
            values[f.name] = _lines(text)
        elif f.type == "boolean":
            if text in ("yes", "no"):
                values[f.name] = text == "yes"
            elif text:
                values[f.name] = text  # the model explains what is wrong with it
        elif f.type in ("integer", "number", "enum"):
            if text.strip():
                values[f.name] = text.strip()
        else:
            values[f.name] = text.strip()
    return values


# --- acting on a link ----------------------------------------------------------------------------


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


def _audit_used(view: LinkView, now: datetime, details: dict[str, Any]) -> None:
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


def _claim(view: LinkView, now: datetime) -> None:
    if not claim_link(view.link_id, now=now):
        audit_refusal(
            reason="replayed",
            now=now,
            case_ref=view.case_ref,
            link_id=view.link_id,
            purpose=view.purpose,
        )
        raise _refusal(_USED, "replayed")


def decide_from_link(
    view: LinkView, form: FormData, *, now: datetime, submit_seconds: float = 30.0
) -> uuid.UUID:
    """Submit a decision through the Prefect API as the link's recipient; return the run id.

    The form is checked against the decision's model first (nothing is used up if it fails);
    the link is then claimed, and released again if Prefect does not take the submission.
    """
    assert view.kind is not None and view.request_id is not None
    values = parse_values(decision_fields(view.kind), form)
    with read_only() as session:
        link = session.get(ApprovalLink, view.link_id)
        code = link_code(link) if link is not None else None
    if code is None:
        raise _refusal(_TAMPERED, "no-code")
    submission = {**values, "approver": view.stakeholder_key, "approval_code": code}
    try:
        checked = spec_of(view.kind).form.model_validate(submission)
    except ValidationError as exc:
        raise FormProblemsError(explain(exc)) from None
    _claim(view, now)
    try:
        run_id = submit_decision(
            view.request_id, checked.model_dump(mode="json"), wait_seconds=submit_seconds
        )
    except SubmitFailedError as exc:
        release_link(view.link_id)
        log.warning("submission not accepted: case=%s link=%s", view.case_ref, view.link_id)
        raise SubmissionFailedError(str(exc)) from None
    _audit_used(view, now, {"request_id": str(view.request_id), "kind": view.kind.value})
    log.info("decision submitted: case=%s link=%s", view.case_ref, view.link_id)
    return run_id


Verdict = Literal["accepted", "refused", "checking"]


def decision_verdict(request_id: uuid.UUID, *, wait_seconds: float) -> tuple[Verdict, str | None]:
    """Wait a little for the resumed step to check a submission; say what it made of it."""
    deadline = time.monotonic() + wait_seconds
    while True:
        status = load_request(request_id).status
        if status == DecisionRequestStatus.DECIDED:
            return "accepted", None
        if status == DecisionRequestStatus.SUPERSEDED:
            return "refused", refusal_reason(request_id)
        if time.monotonic() >= deadline:
            return "checking", None
        time.sleep(0.5)


def progress_from_link(view: LinkView, form: FormData, *, now: datetime) -> MilestoneResult:
    """Record the owner's progress report on a milestone, once; start closure if it was the last."""
    assert view.milestone is not None
    problems = []
    status = _first(form, "status")
    if status not in (MilestoneStatus.ACTIVE.value, MilestoneStatus.DONE.value):
        problems.append("status: choose in progress or done")
    note = _first(form, "note").replace("\r\n", "\n").strip()
    if len(note) > 4000:
        problems.append(f"note: text is too long ({len(note)} characters; the limit is 4000)")
    evidence = _lines(_first(form, "evidence"))
    if len(evidence) > MAX_EVIDENCE:
        problems.append(f"evidence: has too many items (the limit is {MAX_EVIDENCE})")
    if any(len(e) > 200 for e in evidence):
        problems.append("evidence: a reference is too long (the limit is 200 characters)")
    if problems:
        raise FormProblemsError(problems)
    _claim(view, now)
    try:
        result = update_milestone(
            view.case_ref,
            view.milestone.key,
            status=MilestoneStatus(status),
            by=view.stakeholder_key,
            note=note,
            evidence=evidence,
            now=now,
            idempotency_key=str(view.link_id),
        )
    except MilestoneUpdateError as exc:
        release_link(view.link_id)
        raise FormProblemsError([str(exc)]) from None
    _audit_used(view, now, {"milestone": view.milestone.key, "status": status})
    log.info("progress recorded: case=%s link=%s", view.case_ref, view.link_id)
    if result.plan_completed and _prefect_configured():
        from tasks.orchestration.runs import hand_over

        try:
            hand_over(view.case_ref, now=now)
        except Exception:
            # the step's run starts later all the same: `remedy start` or the sweep hands over
            log.exception("could not start the next step: case=%s", view.case_ref)
    return result


def _prefect_configured() -> bool:
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)
