"""What a reporter may know of a case: its state in plain words, and why it closed.

Pure mapping over the case's state, the state a held case was in, its closure type and the
allegation's screening outcome: no reference, no pseudonym, no decision's content.
"""

from __future__ import annotations

from models.enums import CaseState, ClosedReason, ClosureType, ReporterStatus, ScreeningOutcome

_STATUS = {
    CaseState.INTAKE: ReporterStatus.RECEIVED,
    CaseState.VERIFYING: ReporterStatus.BEING_VERIFIED,
    CaseState.DETERMINING_RESPONSE: ReporterStatus.PLANNING,
    CaseState.DESIGNING_PLAN: ReporterStatus.PLANNING,
    CaseState.IMPLEMENTING: ReporterStatus.UNDER_WAY,
    CaseState.CLOSED: ReporterStatus.CLOSED,
    CaseState.LESSONS_CAPTURED: ReporterStatus.CLOSED,
}

_REASON = {
    ClosureType.RESOLVED_ACCEPTED: ClosedReason.REMEDY_DELIVERED,
    ClosureType.RESOLVED_REJECTED: ClosedReason.OTHER,
    ClosureType.UNRESOLVED_AUTHORISED: ClosedReason.OTHER,
    ClosureType.INCONCLUSIVE_NO_CONTACT: ClosedReason.NO_CONTACT,
    ClosureType.NO_BASIS: ClosedReason.NOT_SUBSTANTIATED,
    ClosureType.DUPLICATE: ClosedReason.DUPLICATE,
    ClosureType.REFERRED_EXTERNAL: ClosedReason.REFERRED_ELSEWHERE,
    ClosureType.CONSENT_WITHDRAWN: ClosedReason.OTHER,
}


def reporter_status(
    state: CaseState, *, held_from: CaseState | None, closure_type: ClosureType | None
) -> ReporterStatus:
    """Say where a case stands in the reporter's words.

    A held case shows the state it was held in (the reporter is not told why work paused). A
    closing case with a closure type (screened out, unsubstantiated, or closure proposed) is
    closed for the reporter; one without (a completed plan being reviewed) is still under way.
    """
    if state == CaseState.ON_HOLD:
        if held_from is None or held_from == CaseState.ON_HOLD:
            return ReporterStatus.BEING_VERIFIED
        return reporter_status(held_from, held_from=None, closure_type=closure_type)
    if state == CaseState.CLOSING:
        return ReporterStatus.CLOSED if closure_type is not None else ReporterStatus.UNDER_WAY
    return _STATUS[state]


def closed_reason(
    status: ReporterStatus,
    *,
    closure_type: ClosureType | None,
    screening: ScreeningOutcome | None,
) -> ClosedReason | None:
    """Say why a closed case closed, as far as the reporter may know (None while open)."""
    if status != ReporterStatus.CLOSED:
        return None
    if closure_type is not None:
        return _REASON[closure_type]
    if screening == ScreeningOutcome.DUPLICATE:
        return ClosedReason.DUPLICATE
    if screening == ScreeningOutcome.REJECTED:
        return ClosedReason.NOT_SUBSTANTIATED
    return ClosedReason.OTHER


# Feedback: the status a reporter sees shows them a result once it leaves verification.
FEEDBACK_STATUSES = frozenset(
    {ReporterStatus.PLANNING, ReporterStatus.UNDER_WAY, ReporterStatus.CLOSED}
)


def is_news(told: ReporterStatus | None, now: ReporterStatus) -> bool:
    """Tell whether the status a reporter sees changed since they were last told (None: filing).

    Received -> being verified is where every report starts, not news: the reporter is told
    when a verdict moves it on (planning, or closed), when the plan gets under way, and so on.
    """
    before = told or ReporterStatus.RECEIVED
    if now == before:
        return False
    return not (before == ReporterStatus.RECEIVED and now == ReporterStatus.BEING_VERIFIED)
