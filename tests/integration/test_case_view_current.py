"""The case view follows every change below Prefect: what it shows of milestones and extensions,
and a change that cannot republish it (no server, or one that is down) is kept all the same.

That the view is republished as soon as a change returns, on a real server:
tests/e2e/test_case_view_current_e2e.py.
"""

from __future__ import annotations

import logging
import socket
from datetime import date

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from models.enums import MilestoneStatus
from tasks.reports.case_view import case_view, refresh_case_view
from tasks.steps.implement import (
    activate_plan,
    decide_extension,
    request_extension,
    update_milestone,
)
from tests.conftest import Store
from tests.integration.factories import LEAD, Clock, milestones, to_implementing
from tests.integration.steps_helpers import plan_keys


def _line(view: str, key: str) -> str:
    [line] = [x for x in view.splitlines() if x.startswith(f"| {key} |")]
    return line


def test_the_view_shows_progress_and_extensions(store: Store) -> None:
    case = to_implementing(Clock())
    activate_plan(case.ref, now=case.clock.tick())
    key, owner = next((k, o) for k, o in milestones(case.ref) if o)
    assert owner is not None

    def shown() -> str:
        return _line(case_view(case.ref, now=case.clock.now, link=lambda _: None), key)

    assert "| active" in shown()
    request_extension(
        case.ref,
        key,
        to=date(2027, 6, 30),
        reason="Term starts later.",
        by=owner,
        now=case.clock.tick(),
    )
    assert "(extension to 2027-06-30 asked)" in shown()
    decide_extension(case.ref, key, approve=True, by=LEAD, now=case.clock.tick())
    assert "| 2027-06-30 | active |" in shown() and "asked" not in shown()
    update_milestone(
        case.ref,
        key,
        status=MilestoneStatus.DONE,
        by=owner,
        evidence=["doc:a"],
        now=case.clock.tick(),
    )
    assert "| 2027-06-30 | done |" in shown()


def test_a_change_is_kept_when_the_view_cannot_be_republished(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    case = to_implementing(Clock())
    activate_plan(case.ref, now=case.clock.tick())
    key, owner = next((k, o) for k, o in milestones(case.ref) if o)
    assert owner is not None
    assert refresh_case_view(case.ref) is False  # no server configured: nothing to publish

    with socket.socket() as sock:  # a port nothing listens on: the server is down
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    caplog.set_level(logging.WARNING, logger="remedy.case_view")
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{port}/api"}):
        update_milestone(
            case.ref,
            key,
            status=MilestoneStatus.DONE,
            by=owner,
            evidence=["doc:a"],
            now=case.clock.tick(),
        )
    assert plan_keys(case, 1)[key].status == MilestoneStatus.DONE
    [warned] = [r for r in caplog.records if r.name == "remedy.case_view"]
    assert warned.getMessage() == f"case view not republished: case={case.ref} (ConnectError)"
