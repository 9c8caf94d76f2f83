"""Case lifecycle: the states, events, guards and transition table of a remediation case.

The machine is kept apart from the case data (python-statemachine style): callers pass the current
state and the facts the guards need, and get back the transition to store or TransitionNotAllowed.
Pure module: standard library and pydantic only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Final, Literal

from pydantic import BaseModel, Field

from models.enums import CaseEvent, CaseState, CaseStatus, Step


class CaseFacts(BaseModel, frozen=True):
    """What the guards look at; every default is the safe one (nothing recorded or approved)."""

    safety_assessed: bool = False
    findings_recorded: bool = False
    decision_reason: str = ""
    screening_reason: str = ""
    involvement_assessed: bool = False
    severity_assessed: bool = False
    has_plan_actions: bool = False
    victim_agreement_recorded: bool = False
    budget_approved: bool = False
    # consent lets the case work: someone's case-handling consent stands (the policy may ask
    # that nobody's stands withdrawn); one person's withdrawal holds only their own actions
    consent_active: bool = True
    revision_agreed: bool = False
    milestones_total: int = Field(default=0, ge=0)
    milestones_open: int = Field(default=0, ge=0)
    unresolved_authorised: bool = False
    closure_approvers: tuple[str, ...] = ()
    # Four-eyes is never optional, so a caller cannot ask for fewer than two people.
    required_closure_approvers: int = Field(default=2, ge=2)
    closure_criteria_met: bool = False
    held_from: CaseState | None = None
    has_approved_plan: bool = False
    reopen_reason: str = ""


class Transition(BaseModel, frozen=True):
    """A move the lifecycle allows; when the target is on_hold, store the source as held_from."""

    source: CaseState
    event: CaseEvent
    target: CaseState
    step: Step
    status: CaseStatus


class TransitionNotAllowed(Exception):
    """The event cannot happen in this state, or a guard refuses it; `reason` says why."""

    def __init__(self, state: CaseState, event: CaseEvent, reason: str) -> None:
        super().__init__(reason)
        self.state = state
        self.event = event
        self.reason = reason

    def __str__(self) -> str:
        return self.reason

    def __reduce__(self) -> tuple[type[TransitionNotAllowed], tuple[CaseState, CaseEvent, str]]:
        # Prefect pickles a task's exception; the default would call __init__ with the reason only.
        return (type(self), (self.state, self.event, self.reason))


class History(Enum):
    """Sentinel target: back to the state the case was put on hold from (a UML history state)."""

    HELD_FROM = "held_from"


HISTORY: Final = History.HELD_FROM
Target = CaseState | Literal[History.HELD_FROM]
Guard = Callable[[CaseFacts], str | None]


def _unguarded(facts: CaseFacts) -> str | None:
    """Allow the transition whatever the facts."""
    return None


@dataclass(frozen=True)
class TransitionRule:
    """Where an event leads from a state, and the guard that may refuse it."""

    target: Target
    guard: Guard = _unguarded


INITIAL_STATE: Final = CaseState.INTAKE
# Closed cases can still be reopened, so "final" here means "the case is closed", not "no way out".
FINAL_STATES: Final = frozenset({CaseState.CLOSED, CaseState.LESSONS_CAPTURED})
# The states a case works in; consent can be withdrawn (and later renewed) only in these.
RESUMABLE_STATES: Final = frozenset(
    {
        CaseState.VERIFYING,
        CaseState.DETERMINING_RESPONSE,
        CaseState.DESIGNING_PLAN,
        CaseState.IMPLEMENTING,
    }
)

# Completes "while the case is ..." in messages.
STATE_NAMES: Final[Mapping[CaseState, str]] = MappingProxyType(
    {
        CaseState.INTAKE: "at intake",
        CaseState.VERIFYING: "being verified",
        CaseState.DETERMINING_RESPONSE: "awaiting a response decision",
        CaseState.DESIGNING_PLAN: "in plan design",
        CaseState.IMPLEMENTING: "in implementation",
        CaseState.ON_HOLD: "on hold",
        CaseState.CLOSING: "closing",
        CaseState.CLOSED: "closed",
        CaseState.LESSONS_CAPTURED: "closed with lessons captured",
    }
)

# What a person does when they send the event, as a noun phrase.
EVENT_NAMES: Final[Mapping[CaseEvent, str]] = MappingProxyType(
    {
        CaseEvent.START_VERIFICATION: "starting verification",
        CaseEvent.SCREENED_OUT: "screening the allegation out",
        CaseEvent.SUBSTANTIATED: "substantiating the allegation",
        CaseEvent.UNSUBSTANTIATED: "finding the allegation unsubstantiated",
        CaseEvent.INCONCLUSIVE: "recording the verification as inconclusive",
        CaseEvent.RESPONSE_APPROVED: "approving the response",
        CaseEvent.PLAN_APPROVED: "approving the plan",
        CaseEvent.PLAN_REVISION_REQUESTED: "revising the plan",
        CaseEvent.PLAN_COMPLETED: "completing the plan",
        CaseEvent.CLOSE_UNRESOLVED: "closing the case unresolved",
        CaseEvent.CONSENT_WITHDRAWN: "recording that consent was withdrawn",
        CaseEvent.CONSENT_RENEWED: "resuming the case after consent was renewed",
        CaseEvent.CLOSE_ON_WITHDRAWAL: "closing the case after consent was withdrawn",
        CaseEvent.CASE_CLOSED: "closing the case",
        CaseEvent.LESSONS_RECORDED: "recording lessons learned",
        CaseEvent.REOPEN_FOR_VERIFICATION: "reopening the case for verification",
        CaseEvent.REOPEN_FOR_REMEDY: "reopening the case for remedy",
    }
)


# Guards. Messages name what is missing, never the free text itself: reasons and approver ids may
# hold personal data, and a refusal can end up in a log or a chat message.


def _refuse(refusal: str, *checks: tuple[bool, str]) -> str | None:
    """Return `refusal` followed by every unmet condition, or None when all are met."""
    unmet = [missing for ok, missing in checks if not ok]
    return f"{refusal}: {'; '.join(unmet)}." if unmet else None


def _has_text(value: str) -> bool:
    # A reason of blanks is no reason.
    return bool(value.strip())


def _screened_out(f: CaseFacts) -> str | None:
    return _refuse(
        "The allegation cannot be screened out",
        (_has_text(f.screening_reason), "no screening reason is recorded"),
    )


def _substantiated(f: CaseFacts) -> str | None:
    return _refuse(
        "The allegation cannot be substantiated yet",
        (f.safety_assessed, "no safety assessment is recorded"),
        (f.findings_recorded, "the verification findings are not recorded"),
    )


def _unsubstantiated(f: CaseFacts) -> str | None:
    return _refuse(
        "The allegation cannot be found unsubstantiated",
        (_has_text(f.decision_reason), "no reason for the decision is recorded"),
    )


def _inconclusive(f: CaseFacts) -> str | None:
    return _refuse(
        "The verification cannot be recorded as inconclusive",
        (_has_text(f.decision_reason), "no reason for the decision is recorded"),
    )


def _response_approved(f: CaseFacts) -> str | None:
    return _refuse(
        "The response cannot be approved yet",
        (f.involvement_assessed, "the company's involvement is not assessed"),
        (f.severity_assessed, "the severity is not assessed"),
    )


def _plan_approved(f: CaseFacts) -> str | None:
    return _refuse(
        "The plan cannot be approved yet",
        (f.has_plan_actions, "the plan has no actions"),
        (f.consent_active, "consent for case handling is not active"),
        (f.victim_agreement_recorded, "the victim representative's agreement is not recorded"),
        (f.budget_approved, "the budget is not approved"),
    )


def _plan_revision_requested(f: CaseFacts) -> str | None:
    return _refuse(
        "The plan cannot be revised",
        (f.revision_agreed, "the victim representative and the case lead have not agreed to it"),
    )


def _plan_completed(f: CaseFacts) -> str | None:
    return _refuse(
        "The plan cannot be completed yet",
        (f.milestones_total > 0, "the plan has no milestones"),
        (f.milestones_open == 0, f"{f.milestones_open} milestone(s) are still open"),
    )


def _close_unresolved(f: CaseFacts) -> str | None:
    return _refuse(
        "The case cannot be closed unresolved",
        (f.unresolved_authorised, "closing it unresolved is not authorised"),
    )


def _consent_renewed(f: CaseFacts) -> str | None:
    held = f.held_from
    where = (
        "the state it was put on hold from is not recorded"
        if held is None
        else f"it was put on hold from '{held}', which cannot be resumed"
    )
    return _refuse(
        "The case cannot resume",
        (f.consent_active, "consent is not active again"),
        (held in RESUMABLE_STATES, where),
    )


def _case_closed(f: CaseFacts) -> str | None:
    # Four-eyes means distinct people: the same approver twice counts once, a blank id not at all.
    signed = len({a.strip() for a in f.closure_approvers if a.strip()})
    needed = f.required_closure_approvers
    return _refuse(
        "The case cannot be closed yet",
        (signed >= needed, f"{signed} of the {needed} distinct approvers needed have signed"),
        (f.closure_criteria_met, "the closure criteria are not met"),
    )


def _reopen_for_verification(f: CaseFacts) -> str | None:
    return _refuse(
        "The case cannot be reopened",
        (_has_text(f.reopen_reason), "no reason for reopening is recorded"),
    )


def _reopen_for_remedy(f: CaseFacts) -> str | None:
    return _refuse(
        "The case cannot be reopened for remedy",
        (f.has_approved_plan, "it never had an approved plan"),
        (_has_text(f.reopen_reason), "no reason for reopening is recorded"),
    )


def _build_table() -> dict[tuple[CaseState, CaseEvent], TransitionRule]:
    """Expand the rows (sources, event, target, guard) into one rule per (state, event)."""
    S, E = CaseState, CaseEvent
    working = (S.VERIFYING, S.DETERMINING_RESPONSE, S.DESIGNING_PLAN, S.IMPLEMENTING)
    closed = (S.CLOSED, S.LESSONS_CAPTURED)
    rows: list[tuple[tuple[CaseState, ...], CaseEvent, Target, Guard]] = [
        ((S.INTAKE,), E.START_VERIFICATION, S.VERIFYING, _unguarded),
        ((S.INTAKE, S.VERIFYING), E.SCREENED_OUT, S.CLOSING, _screened_out),
        ((S.VERIFYING,), E.SUBSTANTIATED, S.DETERMINING_RESPONSE, _substantiated),
        ((S.VERIFYING,), E.UNSUBSTANTIATED, S.CLOSING, _unsubstantiated),
        # Inconclusive keeps the case in verification: more inquiry, not closure.
        ((S.VERIFYING,), E.INCONCLUSIVE, S.VERIFYING, _inconclusive),
        ((S.DETERMINING_RESPONSE,), E.RESPONSE_APPROVED, S.DESIGNING_PLAN, _response_approved),
        ((S.DESIGNING_PLAN,), E.PLAN_APPROVED, S.IMPLEMENTING, _plan_approved),
        ((S.IMPLEMENTING,), E.PLAN_REVISION_REQUESTED, S.DESIGNING_PLAN, _plan_revision_requested),
        ((S.IMPLEMENTING,), E.PLAN_COMPLETED, S.CLOSING, _plan_completed),
        (working, E.CLOSE_UNRESOLVED, S.CLOSING, _close_unresolved),
        # Withdrawal is the victim's right: nothing may stand in its way.
        (working, E.CONSENT_WITHDRAWN, S.ON_HOLD, _unguarded),
        ((S.ON_HOLD,), E.CONSENT_RENEWED, HISTORY, _consent_renewed),
        ((S.ON_HOLD,), E.CLOSE_ON_WITHDRAWAL, S.CLOSING, _unguarded),
        ((S.CLOSING,), E.CASE_CLOSED, S.CLOSED, _case_closed),
        ((S.CLOSED,), E.LESSONS_RECORDED, S.LESSONS_CAPTURED, _unguarded),
        (closed, E.REOPEN_FOR_VERIFICATION, S.VERIFYING, _reopen_for_verification),
        (closed, E.REOPEN_FOR_REMEDY, S.DESIGNING_PLAN, _reopen_for_remedy),
    ]
    return {
        (source, event): TransitionRule(target, guard)
        for sources, event, target, guard in rows
        for source in sources
    }


TRANSITIONS: Final[Mapping[tuple[CaseState, CaseEvent], TransitionRule]] = MappingProxyType(
    _build_table()
)

_STEPS: Final[Mapping[CaseState, Step]] = MappingProxyType(
    {
        CaseState.INTAKE: Step.VERIFY,
        CaseState.VERIFYING: Step.VERIFY,
        CaseState.DETERMINING_RESPONSE: Step.RESPOND,
        CaseState.DESIGNING_PLAN: Step.PLAN,
        CaseState.IMPLEMENTING: Step.IMPLEMENT,
        CaseState.CLOSING: Step.CLOSE,
        CaseState.CLOSED: Step.LESSONS,
        CaseState.LESSONS_CAPTURED: Step.LESSONS,
    }
)


# The states in which a step's flow has work to do: every state of a step but intake (no step has
# started yet) and lessons_captured (the case is done).
WORKING: Final[frozenset[CaseState]] = frozenset(_STEPS) - {
    CaseState.INTAKE,
    CaseState.LESSONS_CAPTURED,
}
WORK_STATES: Final[Mapping[Step, frozenset[CaseState]]] = MappingProxyType(
    {step: frozenset(s for s in WORKING if _STEPS[s] is step) for step in Step}
)


def step_of(state: CaseState, held_from: CaseState | None = None) -> Step:
    """Return the IOM step a case in `state` is at; a held case stays at the step it was held in."""
    if state is CaseState.ON_HOLD:
        # Without a (valid) history the case cannot have passed verification.
        return _STEPS.get(held_from, Step.VERIFY) if held_from is not None else Step.VERIFY
    return _STEPS[state]


def status_of(state: CaseState) -> CaseStatus:
    """Return the coarse status shown in lists and reports for `state`."""
    if state in FINAL_STATES:
        return CaseStatus.CLOSED
    if state is CaseState.ON_HOLD:
        return CaseStatus.ON_HOLD
    return CaseStatus.ACTIVE


def possible_events(state: CaseState) -> list[CaseEvent]:
    """Return the events the table has for `state`, whatever the guards would say."""
    return [event for event in CaseEvent if (state, event) in TRANSITIONS]


def allowed_events(state: CaseState, facts: CaseFacts) -> list[CaseEvent]:
    """Return the events that `apply` would accept now."""
    return [e for e in possible_events(state) if TRANSITIONS[state, e].guard(facts) is None]


def apply(state: CaseState, event: CaseEvent, facts: CaseFacts) -> Transition:
    """Return the transition `event` makes from `state`, or raise TransitionNotAllowed."""
    rule = TRANSITIONS.get((state, event))
    if rule is None:
        raise TransitionNotAllowed(state, event, _not_possible(state, event))
    reason = rule.guard(facts)
    if reason is not None:
        raise TransitionNotAllowed(state, event, reason)
    if rule.target is History.HELD_FROM:
        # The consent_renewed guard has already checked held_from is a resumable state.
        assert facts.held_from is not None
        target = facts.held_from
    else:
        target = rule.target
    held_from = state if target is CaseState.ON_HOLD else None
    return Transition(
        source=state,
        event=event,
        target=target,
        step=step_of(target, held_from),
        status=status_of(target),
    )


def _not_possible(state: CaseState, event: CaseEvent) -> str:
    """Explain that the table has no such move and list the ones it has."""
    doing = EVENT_NAMES[event]
    possible = ", ".join(possible_events(state)) or "nothing"
    return (
        f"{doing[0].upper()}{doing[1:]} ('{event}') is not possible while the case is "
        f"{STATE_NAMES[state]}; possible now: {possible}."
    )


def reachable_states(start: CaseState = INITIAL_STATE) -> frozenset[CaseState]:
    """Return the states the table can lead to from `start` (including it), guards permitting."""
    seen = {start}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        for event in possible_events(state):
            target = TRANSITIONS[state, event].target
            # A history target can resume any state that can be put on hold.
            targets = RESUMABLE_STATES if target is History.HELD_FROM else {target}
            for nxt in targets - seen:
                seen.add(nxt)
                queue.append(nxt)
    return frozenset(seen)
