"""The case view in the Prefect UI is current: a milestone reported from its owner's link or from
the command line, an extension asked or decided, shows in the view read back from the session's
Prefect server as soon as the change returns (the republish is part of the change: no sweep, no
waiting; the seconds it took are printed, well under one on a quiet machine), and the commands
that publish it warn of nothing.

The case lives in a case store of this test's own (the session's runner never sees it, so no run
or sweep publishes its view): only the change itself can have published what is read back. Its
reference is numbered far from the session's cases, whose views stay theirs.
"""

from __future__ import annotations

import re
import sqlite3
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Store, _clear_caches
from tests.e2e.conftest import E2E
from tests.e2e.helpers import latest_artifact
from tests.integration.factories import LEAD, SAMPLE_REPORT, SUPPLIER, Clock, milestones
from tests.integration.test_cli_actor import map_me
from tests.integration.test_intake import run_cli

pytestmark = [pytest.mark.prefect]


@pytest.fixture
def own_store(
    live: E2E, sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Store]:
    """A migrated SQLite case store of this test's own, on the session's Prefect server."""
    from models.tables import CaseSequence
    from tasks.intake import read_report
    from tasks.store.db import unit_of_work

    path = tmp_path / "own.db"
    with sqlite3.connect(sqlite_template) as src, sqlite3.connect(path) as dst:
        src.backup(dst)
    monkeypatch.setenv("REMEDY_DATABASE_URL", f"sqlite:///{path}")
    _clear_caches()
    year = read_report(SAMPLE_REPORT, now=Clock().now).received_at.year
    with unit_of_work() as session:  # RC-<year>-9xxx: no case of the session's store
        session.add(CaseSequence(year=year, last=9000 + uuid.uuid4().int % 900))
    store = Store("sqlite", f"sqlite:///{path}", None, path)
    yield store
    store.engine().dispose()


def shown_at_once(ref: str, pattern: str, change: Callable[[], object]) -> float:
    """Make the change, then read the case view back once: it shows the change as soon as the
    change returns (the republish is part of it, no sweep or poll). Return the seconds the change
    took, republish included (a figure, not a limit: timed assertions flake on shared hosts)."""
    from tasks.reports.case_view import case_artifact_key

    started = time.monotonic()
    change()
    took = time.monotonic() - started
    shown = latest_artifact(case_artifact_key(ref)) or ""
    assert re.search(pattern, shown), f"the case view did not show {pattern!r} once it returned"
    print(f"shown {took:.2f} s after the change began: {pattern}")
    return took


DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


def deprecations(call: Callable[[], object]) -> list[str]:
    """Run a call; return the deprecation warnings it gave, each time they were given."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [str(w.message) for w in caught if issubclass(w.category, DEPRECATIONS)]


def quietly(call: Callable[[], int]) -> Callable[[], int]:
    """Run a command; fail if it does not succeed or gives a deprecation warning."""

    def run() -> int:
        codes: list[int] = []
        assert deprecations(lambda: codes.append(call())) == []
        assert codes == [0]
        return codes[0]

    return run


def test_prefects_deprecation_outside_a_run_is_seen(live: E2E) -> None:
    """What `quietly` looks for: Prefect's own helper, outside a run, warns (so the commands'
    silence below means they publish another way)."""
    from prefect.artifacts import create_markdown_artifact

    said = deprecations(
        lambda: create_markdown_artifact(markdown="probe", key="remedy-test-deprecation-probe")
    )
    assert any("outside of a flow or task run is deprecated" in s for s in said)


def row(key: str, owner: str, state: str) -> str:
    return rf"\| {re.escape(key)} \| {re.escape(owner)} \| [0-9-]+ \| {state}"


def test_the_case_view_shows_each_change_as_soon_as_it_is_made(
    own_store: Store, tmp_path: Path
) -> None:
    from models.enums import MilestoneStatus
    from tasks.web.actions import progress_from_link
    from tasks.web.resolve import resolve_link
    from tests.integration.test_web_links import owned_milestone, token_of

    clock = Clock()
    case, action, link = owned_milestone(clock)  # activates the plan: the view says active
    assert case.ref.split("-")[-1].startswith("9")
    view = resolve_link(token_of(link), now=clock.now)
    form = {"status": ["done"], "evidence": ["doc:receipt-17"]}

    # the owner reports it done from their link: the page's process republishes the view
    shown_at_once(
        case.ref,
        row(action.key, SUPPLIER, "done"),
        lambda: progress_from_link(view, form, now=clock.tick()),
    )

    # the command line: the case lead verifies it, and reports another milestone done
    map_me(tmp_path, LEAD, acts_for=["*"])
    cli = quietly(
        lambda: run_cli("milestone", "update", case.ref, action.key, "--status", "verified")
    )
    shown_at_once(case.ref, row(action.key, SUPPLIER, "verified"), cli)
    other, owner = next((k, o) for k, o in milestones(case.ref) if k != action.key and o)
    assert owner is not None
    argv = ["milestone", "update", case.ref, other, "--status", "done", "--by", owner]
    cli = quietly(lambda: run_cli(*argv, "--evidence", "doc:x"))
    shown_at_once(case.ref, row(other, owner, "done"), cli)

    # an extension asked by the owner (through the lead, who may act for anyone), then granted
    third, third_owner = next(
        (k, o) for k, o in milestones(case.ref) if k not in (action.key, other) and o
    )
    assert third_owner is not None
    asked = quietly(
        lambda: run_cli(
            "milestone", "extend", case.ref, third, "--to", "2027-06-30",
            "--reason", "The school term starts later.", "--by", third_owner,
        )
    )  # fmt: skip
    shown_at_once(case.ref, r"\(extension to 2027-06-30 asked\)", asked)
    granted = quietly(lambda: run_cli("milestone", "extension", case.ref, third, "--approve"))
    due = rf"\| {re.escape(third)} \| {re.escape(third_owner)} \| 2027-06-30 \| "
    shown_at_once(case.ref, due, granted)
    assert MilestoneStatus.DONE.value in (latest_artifact(f"case-{case.ref.lower()}") or "")
