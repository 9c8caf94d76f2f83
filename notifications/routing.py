"""The routing table: which roles hear of which event, on which channels (operator's data)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from models.enums import NotificationChannel, NotificationEvent, Role, Visibility
from models.tomlfile import load_toml

DEFAULT_ROUTING_PATH = Path(__file__).with_name("routing.toml")
APPROVERS, OWNER = "approvers", "owner"
# the reporter of a receipt (tasks/reporter/), addressed at their own contact, never a stakeholder
REPORTER = "reporter"
Recipient = Literal["approvers", "owner", "reporter"] | Role
VISIBILITY_ORDER = (Visibility.MINIMAL, Visibility.CASE, Visibility.NARRATIVE)


class RoutingError(Exception):
    """The routing file cannot be used; the message names the file and each problem."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path, self.problems = path, problems
        super().__init__(f"Routing file {path} cannot be used:\n  - " + "\n  - ".join(problems))


class Routing(BaseModel):
    """Validated routing: every event routed, every role's visibility known."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    visibility: dict[Role, Visibility]
    events: dict[NotificationEvent, dict[Recipient, tuple[NotificationChannel, ...]]]

    @field_validator("visibility")
    @classmethod
    def _every_role(cls, v: dict[Role, Visibility]) -> dict[Role, Visibility]:
        missing = [r.value for r in Role if r not in v]
        if missing:
            raise ValueError(f"no visibility for role(s): {', '.join(missing)}")
        return v

    @field_validator("events")
    @classmethod
    def _every_event(cls, v: dict[NotificationEvent, Any]) -> dict[NotificationEvent, Any]:
        missing = [e.value for e in NotificationEvent if e not in v]
        if missing:
            raise ValueError(f"no route for event(s): {', '.join(missing)}")
        for event, routes in v.items():
            if not routes:
                raise ValueError(f"{event.value}: nobody is told")
            for role, channels in routes.items():
                if not channels:
                    raise ValueError(f"{event.value}.{role}: no channel")
        return v

    def widest(self, roles: set[Role]) -> Visibility:
        """Return the widest visibility among a person's roles on a case (minimal if none)."""
        seen = [self.visibility[r] for r in roles]
        return max(seen, key=VISIBILITY_ORDER.index, default=Visibility.MINIMAL)


def load_routing(path: Path | None = None) -> Routing:
    """Read and validate a routing file (the shipped one if none is given)."""
    return load_toml(path or DEFAULT_ROUTING_PATH, Routing, RoutingError)
