"""Every message the routing promises is sent: each event with a route and a template is queued
somewhere in the code, and a verified milestone tells its owner (once).

The scan parses the code, never imports it: a place that queues a message is a call to the outbox
(`notify`, `milestone_notice`, or a `Notification` row written directly) whose `event=` names a
`NotificationEvent` member, directly, through a `.value`, or through a name assigned in the same
function or module (a table of events by threshold).
"""

from __future__ import annotations

import ast
from pathlib import Path

from models.enums import MilestoneStatus, NotificationChannel, NotificationEvent
from models.tables import Notification, PlanAction
from notifications.routing import load_routing
from tasks.steps.implement import activate_plan, update_milestone
from tests.conftest import ROOT, Store
from tests.integration.factories import (
    LEAD,
    SUPPLIER,
    Clock,
    milestones,
    rows,
    stakeholder_id,
    to_implementing,
)

QUEUEING_CALLS = frozenset({"notify", "milestone_notice", "Notification"})
TEMPLATES = ROOT / "notifications" / "templates" / "messages"


def _members(node: ast.AST) -> set[str]:
    """The NotificationEvent members an expression names (`NotificationEvent.X`, `.X.value`)."""
    found = set()
    for sub in ast.walk(node):
        if (
            isinstance(sub, ast.Attribute)
            and isinstance(sub.value, ast.Name)
            and sub.value.id == "NotificationEvent"
        ):
            found.add(sub.attr)
    return found


def _assigned(scope: ast.AST, name: str) -> set[str]:
    """The members named by assignments to `name` directly in a function or module body."""
    found: set[str] = set()
    for node in ast.walk(scope):
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
        ) or (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == name
            and node.value is not None
        ):
            found |= _members(node.value)
    return found


def _callee(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def emitted_events(root: Path = ROOT) -> dict[str, list[str]]:
    """Return, for each NotificationEvent member queued somewhere, where (file:line)."""
    emitted: dict[str, list[str]] = {}
    for layer in ("tasks", "flows", "notifications"):
        for path in sorted((root / layer).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            functions = [
                f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
            ]
            for call in ast.walk(tree):
                if not isinstance(call, ast.Call) or _callee(call) not in QUEUEING_CALLS:
                    continue
                for keyword in call.keywords:
                    if keyword.arg != "event":
                        continue
                    members = _members(keyword.value)
                    for name in {
                        n.id for n in ast.walk(keyword.value) if isinstance(n, ast.Name)
                    } - {"NotificationEvent"}:
                        enclosing = [
                            f
                            for f in functions
                            if f.lineno <= call.lineno <= (f.end_lineno or f.lineno)
                        ]
                        for scope in [*enclosing, tree]:
                            members |= _assigned(scope, name)
                    where = f"{path.relative_to(root)}:{call.lineno}"
                    for member in members:
                        emitted.setdefault(member, []).append(where)
    return emitted


def test_the_scan_finds_the_known_senders() -> None:
    """The scan sees direct names, `.value`, a local table and a module table of events."""
    emitted = emitted_events()
    assert "MILESTONE_ASSIGNED" in emitted  # implement.py, directly
    assert "REPORTER_NEWS" in emitted  # a Notification row, by .value
    assert "MILESTONE_OVERDUE" in emitted  # the sweep's table by threshold, in the function
    assert "REPORTER_ACK_MISSED" in emitted  # the module's EVENTS table


def test_every_routed_and_templated_event_has_a_sender() -> None:
    routing = load_routing()
    promised = [
        e
        for e in NotificationEvent
        if e in routing.events and (TEMPLATES / f"{e.value}.j2").is_file()
    ]
    assert promised, "the routing and the templates promise messages"
    emitted = emitted_events()
    silent = [e.value for e in promised if e.name not in emitted]
    assert silent == [], f"routed and templated, but nothing queues: {silent}"


def test_verifying_a_milestone_tells_its_owner_once(store: Store) -> None:
    case = to_implementing(Clock())
    activate_plan(case.ref, now=case.clock.tick())
    key = "document-return"
    assert dict(milestones(case.ref))[key] == SUPPLIER

    def verified() -> list[Notification]:
        return rows(Notification, Notification.event == NotificationEvent.MILESTONE_VERIFIED.value)

    update_milestone(
        case.ref,
        key,
        status=MilestoneStatus.DONE,
        by=SUPPLIER,
        evidence=["doc:receipts"],
        now=case.clock.tick(),
    )
    assert verified() == []  # done is not verified
    replay = {"idempotency_key": "verify-1"}
    update_milestone(
        case.ref, key, status=MilestoneStatus.VERIFIED, by=LEAD, now=case.clock.tick(), **replay
    )
    [message] = verified()
    assert message.recipient_id == stakeholder_id(SUPPLIER)
    assert message.channel == NotificationChannel.EMAIL  # the routing: owner = ["email"]
    [action] = rows(PlanAction, PlanAction.key == key)
    assert (message.context["milestone"], message.context["title"]) == (key, action.title)
    # no link to report progress on a milestone that is settled
    assert "link_id" not in message.context
    # the same verification replayed (same key) queues nothing more
    before = store.row_counts()
    update_milestone(
        case.ref, key, status=MilestoneStatus.VERIFIED, by=LEAD, now=case.clock.tick(), **replay
    )
    assert store.row_counts() == before and len(verified()) == 1
    # another milestone verified tells its own owner; the first owner is not told again
    other, owner = next((k, o) for k, o in milestones(case.ref) if k != key and o)
    assert owner is not None
    update_milestone(
        case.ref,
        other,
        status=MilestoneStatus.VERIFIED,
        by=LEAD,
        evidence=["doc:x"],
        now=case.clock.tick(),
    )
    assert sorted(str(n.recipient_id) for n in verified()) == sorted(
        str(stakeholder_id(k)) for k in (SUPPLIER, owner)
    )
