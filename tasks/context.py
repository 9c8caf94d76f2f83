"""Process-wide context for tasks: the operator's policy and the clock."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from models.plan import PlanTemplates, load_plan_templates
from models.policy import Policy, load_policy
from models.settings import get_settings
from notifications.routing import Routing, load_routing


@lru_cache(maxsize=4)
def _policy_at(path: Path | None) -> Policy:
    return load_policy(path)


def current_policy() -> Policy:
    """Return the policy named by the settings (the shipped default if none), loaded once."""
    return _policy_at(get_settings().policy_file)


@lru_cache(maxsize=4)
def _templates_at(path: Path | None) -> PlanTemplates:
    return load_plan_templates(path)


def current_plan_templates() -> PlanTemplates:
    """Return the plan templates named by the settings (the shipped ones if none)."""
    return _templates_at(get_settings().plan_templates_file)


@lru_cache(maxsize=4)
def _routing_at(path: Path | None) -> Routing:
    return load_routing(path)


def current_routing() -> Routing:
    """Return the routing table named by the settings (the shipped one if none)."""
    return _routing_at(get_settings().routing_file)


def utcnow() -> datetime:
    """Return the current time, timezone-aware UTC."""
    return datetime.now(UTC)
