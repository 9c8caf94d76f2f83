"""Every decision Remedy asks for, in the order of the six steps: the one table the engine reads.

A decision's form, who may take it, its title, what its approver is shown, what its form starts
with and what it changes are written in its step's module; this table only gathers them, so the
engine (tasks/decisions/) finds them by an explicit import, never by registration.
"""

from __future__ import annotations

from models.enums import DecisionKind
from tasks.steps import close, lessons, plan, respond, verify
from tasks.steps.base import DecisionSpec

DECISIONS: dict[DecisionKind, DecisionSpec] = {
    **verify.SPECS,
    **respond.SPECS,
    **plan.SPECS,
    **close.SPECS,
    **lessons.SPECS,
}


def spec_of(kind: DecisionKind) -> DecisionSpec:
    """Return the spec of a decision kind; a kind no step asks for is a programming error."""
    try:
        return DECISIONS[kind]
    except KeyError:
        raise LookupError(f"no step asks for a {kind.value} decision") from None
