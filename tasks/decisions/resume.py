"""Submitting a decision the way the Prefect UI does: resume the suspended run with the form.

Used by `remedy decide`, the approval page and scripted stakeholders, always with a single-use
submission ticket in place of the person's code (tasks/decisions/tickets.py). The server checks the
form against its JSON schema only; the step checks ticket, role and rules after it resumes. Any
failure to reach Prefect or to be heard by it is a `SubmitFailedError` whose message names neither
the API's address nor a credential (an address may carry one).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.responses import SetStateStatus
from prefect.exceptions import ObjectNotFound
from pydantic import ValidationError
from sqlmodel import col, select

from models.enums import DecisionRequestStatus, LinkPurpose
from models.tables import ApprovalLink, DecisionRequest, Stakeholder
from tasks.context import utcnow
from tasks.decisions.submissions import refusal_reason
from tasks.decisions.tickets import AttemptFailedError, redeem_code, withdraw_ticket
from tasks.monitoring.doctor import form_saved
from tasks.store.db import read_only
from tasks.store.vault import get_vault


class SubmitFailedError(RuntimeError):
    """The submission could not be delivered to the waiting run; the message says why."""


def waiting_run_ready(request: DecisionRequest) -> bool:
    """Tell whether the request's run is suspended on the request's key with its form saved."""
    if request.flow_run_id is None:
        return False
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(request.flow_run_id)
        except ObjectNotFound:
            return False
        state = run.state
        suspended = bool(
            state is not None
            and state.type == StateType.PAUSED
            and state.state_details.pause_key == request.suspend_key
        )
        # Prefect saves the form just after suspending; a run killed in between never has it
        return suspended and form_saved(client, run)


def load_request(request_id: uuid.UUID) -> DecisionRequest:
    """Read a decision request from the store."""
    with read_only() as session:
        request = session.get(DecisionRequest, request_id)
        if request is None:
            raise SubmitFailedError(f"no decision request {request_id}")
        return request


def submit_decision(
    request_id: uuid.UUID,
    values: dict[str, Any],
    *,
    wait_seconds: float = 60.0,
) -> uuid.UUID:
    """Resume the run waiting for a request with the form values; return the run's id.

    Waits (up to wait_seconds) for the run to be suspended on this request with its form saved,
    and retries a REJECT that arrives in the moment between suspension and the form being saved.
    Raises SubmitFailedError when it cannot, Prefect being unreachable or failing included.
    """
    # `from None` throughout: the client's errors quote the API's URL, credential and all
    try:
        return _resume(request_id, values, wait_seconds=wait_seconds)
    except ObjectNotFound:
        raise SubmitFailedError(
            "the run waiting for this decision is gone; `remedy doctor` lists runs that were lost"
        ) from None
    except httpx.HTTPStatusError as exc:  # PrefectHTTPStatusError too
        raise SubmitFailedError(
            f"the Prefect API answered HTTP {exc.response.status_code}; nothing was submitted"
        ) from None
    except (httpx.TimeoutException, TimeoutError):
        raise SubmitFailedError("the Prefect API did not answer in time; try again") from None
    except (httpx.HTTPError, OSError) as exc:  # connection refused or reset, DNS, TLS, ...
        raise SubmitFailedError(
            f"the Prefect API could not be reached ({type(exc).__name__}); nothing was submitted"
        ) from None
    except (json.JSONDecodeError, ValidationError):  # e.g. a proxy's sign-in page
        raise SubmitFailedError(
            "the Prefect API's answer could not be read (is it Prefect?); nothing was submitted"
        ) from None


def _resume(request_id: uuid.UUID, values: dict[str, Any], *, wait_seconds: float) -> uuid.UUID:
    deadline = time.monotonic() + wait_seconds
    while True:
        request = load_request(request_id)
        if request.status != DecisionRequestStatus.WAITING:
            raise SubmitFailedError("this decision is not waiting any more (taken or superseded)")
        if waiting_run_ready(request):
            break
        if time.monotonic() > deadline:
            raise SubmitFailedError(
                "the run waiting for this decision is not suspended on it; "
                "`remedy doctor` lists runs that were lost"
            )
        time.sleep(0.5)
    assert request.flow_run_id is not None
    with get_client(sync_client=True) as client:
        while True:
            result = client.resume_flow_run(request.flow_run_id, run_input=values)
            if result.status == SetStateStatus.ACCEPT:
                return request.flow_run_id
            reason = getattr(result.details, "reason", None)
            retry = result.status in (SetStateStatus.REJECT, SetStateStatus.WAIT)
            if not retry or time.monotonic() > deadline:
                raise SubmitFailedError(f"Prefect did not accept the submission: {reason}")
            time.sleep(1.0)


def submit_with_code(
    request_id: uuid.UUID,
    values: dict[str, Any],
    *,
    channel: str,
    os_user: str | None = None,
    wait_seconds: float = 60.0,
) -> uuid.UUID:
    """Prove the form's approver to Remedy with their code, then resume the run with a ticket.

    The code stays in the case store; Prefect sees only the single-use ticket. A wrong code is
    counted (tasks/decisions/tickets.py) and raises SubmitFailedError before Prefect is asked.
    """
    try:
        reference = redeem_code(
            request_id,
            str(values.get("approver", "")),
            str(values.get("approval_code", "")),
            channel=channel,
            now=utcnow(),
            os_user=os_user,
        )
    except AttemptFailedError as exc:
        raise SubmitFailedError(f"nothing was submitted: {exc.reason}") from None
    submission = {**values, "approval_code": reference}
    try:
        return submit_decision(request_id, submission, wait_seconds=wait_seconds)
    except BaseException:
        withdraw_ticket(reference)  # never used: nothing of the attempt stays behind
        raise


def issued_code(request_id: uuid.UUID, stakeholder_key: str) -> str | None:
    """Return the code issued to one approver for a request (scripts and the demo).

    A real approver reads it in their message; a scripted one reads what the same message was
    made from: the approver's approval-page link, which keeps the code encrypted until used.
    """
    with read_only() as session:
        link = session.exec(
            select(ApprovalLink)
            .join(Stakeholder, col(Stakeholder.id) == col(ApprovalLink.stakeholder_id))
            .where(
                ApprovalLink.request_id == request_id,
                ApprovalLink.purpose == LinkPurpose.DECIDE,
                Stakeholder.key == stakeholder_key,
            )
            .order_by(col(ApprovalLink.created_at).desc())  # the newest, after a reissue
        ).first()
    if link is None or link.code_ciphertext is None:
        return None
    code: str = get_vault().decrypt(link.code_ciphertext)["code"]
    return code


VerdictStatus = Literal["accepted", "refused", "cancelled", "checking"]


@dataclass(frozen=True)
class Checked:
    """What the resumed step made of a submission: accepted, refused (with the reason), the
    request cancelled (the case left the step), or still checking when the wait ran out."""

    status: VerdictStatus
    reason: str | None = None


NOT_PROVEN = (
    "the submission proved nothing (its reference was used, expired or not yours); nothing was "
    "recorded and the decision still waits"
)


def await_verdict(
    request_id: uuid.UUID, *, wait_seconds: float, poll: float = 0.5, tries: int | None = None
) -> Checked:
    """Wait up to wait_seconds for the resumed step to check a submission; say what it made of it.

    One answer for every place that submits a decision: the approval page, `remedy decide` and the
    scripted stakeholders of the demo and the tests. Given the request's failed attempts before
    the submission (`tries`), one more is a refusal too: the same round waits again.
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        request = load_request(request_id)
        status = request.status
        if tries is not None and request.tries > tries:
            return Checked("refused", NOT_PROVEN)
        if status == DecisionRequestStatus.DECIDED:
            return Checked("accepted")
        if status == DecisionRequestStatus.SUPERSEDED:
            return Checked("refused", refusal_reason(request_id))
        if status == DecisionRequestStatus.CANCELLED:
            return Checked("cancelled")
        if time.monotonic() >= deadline:
            return Checked("checking")
        time.sleep(poll)
