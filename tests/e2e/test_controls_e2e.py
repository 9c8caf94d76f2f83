"""Case controls against the session's real server and runner: a hold cancels the run waiting in
the held step, and renewed consent starts the step again, whose decisions are asked afresh.

The command line acts as the account running the tests, mapped to the case lead for this test
only (the sample directory maps nobody to it): unmapped, it is refused and changes nothing.
"""

from __future__ import annotations

import os
import pwd
import uuid
from pathlib import Path

import pytest
import yaml

from demo.scripted import ScriptedStakeholders
from models.enums import CaseState
from tests.e2e.conftest import E2E
from tests.e2e.helpers import latest_artifact, open_case, wait_for
from tests.e2e.test_robustness import wait_final, waiting_kind
from tests.integration.test_intake import run_cli

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

LEAD = "lena.lead"


def me() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def load_directory_mapping_me(examples: Path, tmp_path: Path, key: str | None) -> None:
    """Load the sample directory, with this account in `key`'s os_users (nobody's if None)."""
    data = yaml.safe_load((examples / "stakeholders.yaml").read_text())
    for person in data["stakeholders"]:
        if person["key"] == key:
            person["os_users"] = [me()]
    path = tmp_path / f"directory-{key}.yaml"
    path.write_text(yaml.safe_dump(data))
    assert run_cli("directory", "load", str(path)) == 0


def test_a_hold_cancels_the_waiting_run_and_renewal_starts_the_step_again(
    live: E2E, examples: Path, tmp_path: Path
) -> None:
    from tasks.decisions.requests import waiting_requests

    ref = open_case(examples, tmp_path)
    wait_for(lambda: waiting_kind(ref) == "screening", what="screening to wait")
    [request] = waiting_requests(ref)
    held_run = request.flow_run_id
    assert held_run is not None

    # an account the directory does not map speaks for nobody: nothing happens
    assert run_cli("consent", "withdraw", ref, "P-02", "--by", LEAD) == 1
    assert [r.id for r in waiting_requests(ref)] == [request.id]

    load_directory_mapping_me(examples, tmp_path, LEAD)
    try:
        hold_and_renew(ref, held_run)
    finally:
        load_directory_mapping_me(examples, tmp_path, None)
    ScriptedStakeholders().drive(ref, until=CaseState.DETERMINING_RESPONSE, timeout=180)


def hold_and_renew(ref: str, held_run: uuid.UUID) -> None:
    """As the case lead: hold the case, then record the representative's renewal for them."""
    from sqlmodel import col, select

    from models.tables import AuditEvent
    from tasks.decisions.requests import waiting_requests
    from tasks.store.db import read_only

    # consent is each person's own: the case holds when nobody's stands any more
    for first in ("P-01", "P-03"):
        assert run_cli("consent", "withdraw", ref, first) == 0
        assert [r.flow_run_id for r in waiting_requests(ref)] == [held_run]
    assert run_cli("consent", "withdraw", ref, "P-02") == 0  # in the account's own name
    assert waiting_requests(ref) == []
    assert wait_final(held_run) == "Cancelled"  # nobody can resume a decision no longer needed
    view = latest_artifact(f"case-{ref.lower()}") or ""
    assert "State: `on_hold`" in view and "## Waiting decisions\n\nNone." in view

    # the case lead records the representative's renewal in their name (the sample directory
    # lets lena.lead act for grace.advocate); nobody renews a consent that stands
    assert run_cli("consent", "renew", ref, "P-02", "--by", "grace.advocate") == 0
    assert run_cli("consent", "renew", ref, "P-02", "--by", "grace.advocate") == 1
    wait_for(lambda: waiting_kind(ref) == "screening", what="screening to be asked afresh")
    [again] = waiting_requests(ref)
    assert again.scope == "entry-2" and again.flow_run_id not in (None, held_run)
    with read_only() as session:
        audited = session.exec(
            select(AuditEvent).where(
                AuditEvent.chain == ref,
                col(AuditEvent.action).in_(["consent.withdrawn", "consent.renewed"]),
            )
        ).all()
    assert sorted((e.action, e.actor, e.details["os_user"]) for e in audited) == [
        ("consent.renewed", "stakeholder:grace.advocate", me()),
        *[("consent.withdrawn", f"stakeholder:{LEAD}", me())] * 3,
    ]
