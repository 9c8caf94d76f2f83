"""Acting on a shown link, once: take the decision through the Prefect API, or record the owner's
milestone progress report (and start closure if it settled the plan's last milestone).

The form is checked first, so a form with problems uses nothing up; the link is then claimed, and
given back if the action did not happen, whatever stopped it. Logs name case references and link
ids only: never the token nor what a person typed.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Literal

from tasks.decisions.resume import SubmitFailedError, await_verdict, submit_decision
from tasks.decisions.tickets import (
    TICKET_PREFIX,
    AttemptFailedError,
    issue_ticket,
    withdraw_ticket,
)
from tasks.orchestration.runs import close_completed_plan, prefect_configured
from tasks.steps.implement import MilestoneResult, MilestoneUpdateError, update_milestone
from tasks.web.forms import FormData, FormProblemsError, checked_decision, parse_progress
from tasks.web.refusals import NO_LONGER_NEEDED
from tasks.web.resolve import LinkView, audit_used, claim, release_link

log = logging.getLogger("remedy.approval_page")


class SubmissionFailedError(Exception):
    """Prefect did not take the submission; the link was released and nothing changed."""


def decide_from_link(
    view: LinkView,
    form: FormData,
    *,
    now: datetime,
    channel: str = "approval-page",
    submit_seconds: float = 30.0,
) -> uuid.UUID:
    """Submit a decision through the Prefect API as the link's recipient; return the run id.

    The form is checked against the decision's model first (nothing is used up if it fails);
    the link is then claimed, and released again if the submission fails in any way (Prefect
    unreachable, failing or refusing it: SubmissionFailedError). The run is resumed with a
    single-use submission ticket, never the person's code (tasks/decisions/tickets.py); the
    caller says how the person proved themselves (`channel`: the link, or link and passkey).
    """
    assert view.kind is not None and view.request_id is not None
    # checked with a stand-in for the ticket first, so a form with problems uses up nothing
    stand_in = TICKET_PREFIX + "x" * 24
    checked = checked_decision(view.kind, form, approver=view.stakeholder_key, code=stand_in)
    claim(view, now=now)
    reference = None
    try:
        reference = issue_ticket(view.request_id, view.stakeholder_key, channel=channel, now=now)
        values = {**checked.model_dump(mode="json"), "approval_code": reference}
        run_id = submit_decision(view.request_id, values, wait_seconds=submit_seconds)
    except AttemptFailedError as exc:
        release_link(view.link_id)
        raise SubmissionFailedError(exc.reason) from None
    except SubmitFailedError as exc:
        withdraw_ticket(reference or "")
        release_link(view.link_id)
        log.warning("submission not accepted: case=%s link=%s", view.case_ref, view.link_id)
        raise SubmissionFailedError(str(exc)) from None
    except Exception:
        # whatever failed, the link must not stay used up: sent again, a decision that did get
        # through is refused, its request no longer waiting
        if reference is not None:
            withdraw_ticket(reference)
        release_link(view.link_id)
        raise
    audit_used(view, now=now, details={"request_id": str(view.request_id), "kind": view.kind.value})
    log.info("decision submitted: case=%s link=%s", view.case_ref, view.link_id)
    return run_id


Verdict = Literal["accepted", "refused", "cancelled", "checking"]


def decision_verdict(
    request_id: uuid.UUID, *, wait_seconds: float, tries: int | None = None
) -> tuple[Verdict, str | None]:
    """Wait a little for the resumed step to check a submission; say what it made of it.

    Refused comes with the step's reason; cancelled (the case left the step) with what the page
    says of a link to a decision that is no longer needed.
    """
    checked = await_verdict(request_id, wait_seconds=wait_seconds, poll=0.5, tries=tries)
    if checked.status == "cancelled":
        return "cancelled", f"{NO_LONGER_NEEDED.title}. {NO_LONGER_NEEDED.message}"
    return checked.status, checked.reason


def progress_from_link(view: LinkView, form: FormData, *, now: datetime) -> MilestoneResult:
    """Record the owner's progress report on a milestone, once; start closure if it was the last."""
    assert view.milestone is not None
    report = parse_progress(form)
    claim(view, now=now)
    try:
        result = update_milestone(
            view.case_ref,
            view.milestone.key,
            status=report.status,
            by=view.stakeholder_key,
            note=report.note,
            evidence=report.evidence,
            now=now,
            idempotency_key=str(view.link_id),
        )
    except MilestoneUpdateError as exc:
        release_link(view.link_id)
        raise FormProblemsError([str(exc)]) from None
    audit_used(
        view, now=now, details={"milestone": view.milestone.key, "status": report.status.value}
    )
    log.info("progress recorded: case=%s link=%s", view.case_ref, view.link_id)
    if result.plan_completed and prefect_configured():
        try:
            close_completed_plan(
                view.case_ref, now=now, actor=f"stakeholder:{view.stakeholder_key}"
            )
        except Exception:
            # the step's run starts later all the same: `remedy start` or the sweep hands over
            log.exception("could not start the next step: case=%s", view.case_ref)
    return result
