"""Who runs the command line: the operating-system account, mapped to a stakeholder.

The commands that speak in a person's name (`--by`, `--agreed-by`) take that person from the
account running them, as the directory maps it (`os_users`); naming someone else needs the
directory's leave (`acts_for`). Every such event names the account in its audit details.

These tests run the real command line as the real account running pytest (root in CI): the sample
directory maps nobody to it, so a test that wants a mapped user loads one that does. The lower
layer takes the account as an argument, so an unmapped one is simply another name.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Any

import pytest
import yaml

from models.enums import CaseState, ConsentPurpose, MilestoneStatus
from models.intake import DirectoryIn
from models.tables import AuditEvent, ConsentRecord, Stakeholder
from tasks.controls import withdraw_consent
from tasks.steps.implement import activate_plan
from tasks.store.directory import load_directory
from tests.conftest import Store
from tests.integration.factories import (
    ADVOCATE,
    EXAMPLES,
    LEAD,
    SENIOR,
    Clock,
    SampleCase,
    count,
    milestones,
    rows,
    start_sample_case,
    to_implementing,
)
from tests.integration.test_intake import run_cli


def me() -> str:
    """The account running the tests, read the way the command line must read it (not $USER)."""
    return pwd.getpwuid(os.getuid()).pw_name


def sample_directory(**entries: dict[str, Any]) -> dict[str, Any]:
    """The sample directory, with some stakeholders' entries changed (key -> fields)."""
    data = yaml.safe_load((EXAMPLES / "stakeholders.yaml").read_text())
    for person in data["stakeholders"]:
        person.update(entries.get(person["key"], {}))
    return data


def map_me(tmp_path: Path, key: str = LEAD, acts_for: list[str] | None = None) -> None:
    """Load the sample directory with this account mapped to `key` (through the command line)."""
    data = sample_directory(**{key: {"os_users": [me()], "acts_for": acts_for or []}})
    path = tmp_path / "directory.yaml"
    path.write_text(yaml.safe_dump(data))
    assert run_cli("directory", "load", str(path)) == 0


def events(case: SampleCase, action: str) -> list[AuditEvent]:
    return [e for e in case.audit() if e.action == action]


def withdraw_cli(case: SampleCase, *by: str) -> int:
    return run_cli("consent", "withdraw", case.ref, "P-02", *by)


# --- the command line ----------------------------------------------------------------------------


def test_an_unmapped_account_cannot_speak_for_anyone_and_nothing_is_recorded(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    case = start_sample_case(Clock())  # the sample directory maps lena.lead to "lena" only
    assert me() not in {u for s in rows(Stakeholder) for u in s.os_users}
    before = store.row_counts()
    capsys.readouterr()

    assert withdraw_cli(case, "--by", LEAD) == 1
    said = capsys.readouterr().err
    assert "is not a stakeholder" in said and "os_users" in said  # and how to map it
    assert withdraw_cli(case) == 1  # naming nobody does not help
    assert store.row_counts() == before
    assert case.case().state == CaseState.VERIFYING


def test_a_spoofed_user_name_in_the_environment_changes_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = start_sample_case(Clock())
    for name in ("USER", "LOGNAME", "LNAME", "USERNAME"):
        monkeypatch.setenv(name, "lena")  # the account the sample directory maps to lena.lead
    before = store.row_counts()
    assert withdraw_cli(case, "--by", LEAD) == 1
    assert store.row_counts() == before


def test_the_audit_names_the_account_and_the_stakeholder_it_is(
    store: Store, tmp_path: Path
) -> None:
    case = start_sample_case(Clock())
    map_me(tmp_path)

    assert withdraw_cli(case) == 0  # no --by: the account's own stakeholder
    [event] = events(case, "consent.withdrawn")
    assert event.actor == f"stakeholder:{LEAD}"
    assert event.details["os_user"] == me()
    assert event.details["operator"] == f"stakeholder:{LEAD}"
    # P-02's own actions hold; the case goes on for P-01 and P-03
    assert case.case().state == CaseState.VERIFYING and case.chain().ok


def test_naming_oneself_is_allowed_and_someone_else_only_with_acts_for(
    store: Store, tmp_path: Path
) -> None:
    case = start_sample_case(Clock())
    map_me(tmp_path)
    assert withdraw_cli(case, "--by", LEAD) == 0

    renew = ("consent", "renew", case.ref, "P-02", "--by", ADVOCATE)
    before = count(ConsentRecord)
    assert run_cli(*renew) == 1  # lena.lead may not speak for grace.advocate
    assert count(ConsentRecord) == before and events(case, "consent.renewed") == []

    map_me(tmp_path, acts_for=[ADVOCATE])  # e.g. she records what grace said on the phone
    assert run_cli(*renew) == 0
    [event] = events(case, "consent.renewed")
    assert event.actor == f"stakeholder:{ADVOCATE}"
    assert event.details["os_user"] == me()
    assert event.details["operator"] == f"stakeholder:{LEAD}"
    assert case.case().state == CaseState.VERIFYING


def test_agreed_by_speaks_for_the_representative_only_with_acts_for(
    store: Store, tmp_path: Path
) -> None:
    case = to_implementing(Clock())
    revise = ("plan", "revise", case.ref, "--reason", "The family moved.")
    map_me(tmp_path)

    assert run_cli(*revise, "--agreed-by", ADVOCATE) == 1
    assert run_cli(*revise, "--by", SENIOR, "--agreed-by", ADVOCATE) == 1
    assert run_cli(*revise) == 1  # lena.lead cannot agree with herself either
    assert events(case, "plan.revision_requested") == []
    assert case.case().state == CaseState.IMPLEMENTING

    map_me(tmp_path, acts_for=["*"])  # anyone
    assert run_cli(*revise, "--agreed-by", ADVOCATE) == 0
    [event] = events(case, "plan.revision_requested")
    assert event.actor == f"stakeholder:{LEAD}"
    assert event.details["agreed_by"] == ADVOCATE
    assert event.details["os_user"] == me()
    assert case.case().state == CaseState.DESIGNING_PLAN


def test_milestone_updates_come_from_the_account_too(store: Store, tmp_path: Path) -> None:
    case = to_implementing(Clock())
    activate_plan(case.ref, now=case.clock.tick())
    [(key, owner), *_] = milestones(case.ref)
    assert owner not in (None, LEAD)
    update = ("milestone", "update", case.ref, key, "--status", "done")

    assert run_cli(*update, "--by", owner or "") == 1  # root is nobody in the sample directory
    map_me(tmp_path)
    assert run_cli(*update, "--by", owner or "") == 1  # lena.lead does not speak for the owner
    assert events(case, "milestone.updated") == []
    assert run_cli(*update, "--evidence", "doc:receipt") == 0  # the case lead reports it herself
    [event] = events(case, "milestone.updated")
    assert event.actor == f"stakeholder:{LEAD}" and event.details["os_user"] == me()
    assert event.details["status"] == MilestoneStatus.DONE.value


def test_system_commands_need_no_mapping(store: Store, examples: Path) -> None:
    assert run_cli("directory", "load", str(examples / "stakeholders.yaml")) == 0
    [event] = [e for e in rows(AuditEvent) if e.action == "directory.loaded"]
    assert event.actor == f"cli:{me()}"


# --- the lower layer, with the account named -----------------------------------------------------


def load(data: dict[str, Any]) -> None:
    load_directory(DirectoryIn.model_validate(data), now=Clock().now, actor="test")


def test_an_account_is_resolved_to_its_stakeholder(store: Store) -> None:
    from tasks.actors import ActorNotAllowed, resolve_operator

    load(sample_directory(**{LEAD: {"os_users": ["lena", "lh"], "acts_for": [ADVOCATE]}}))
    lena = resolve_operator("lh")
    assert (lena.key, lena.os_user) == (LEAD, "lh")
    assert lena.speaks_for(None) == LEAD and lena.speaks_for(LEAD) == LEAD
    assert lena.speaks_for(ADVOCATE, "--agreed-by") == ADVOCATE
    with pytest.raises(ActorNotAllowed, match=f"may not act for {SENIOR}"):
        lena.speaks_for(SENIOR)
    assert lena.audit_details() == {"os_user": "lh", "operator": f"stakeholder:{LEAD}"}

    for unmapped in ("mallory", "LENA", "lena "):
        with pytest.raises(ActorNotAllowed, match="os_users"):
            resolve_operator(unmapped)


def test_an_inactive_or_doubly_mapped_account_is_refused(store: Store) -> None:
    from tasks.actors import ActorNotAllowed, resolve_operator

    load(sample_directory(**{LEAD: {"os_users": ["lena"], "active": False}}))
    with pytest.raises(ActorNotAllowed, match="not active"):
        resolve_operator("lena")
    # two loads can leave one account on two people: it then speaks for neither
    load(sample_directory(**{LEAD: {"os_users": ["ops"]}}))
    load({"stakeholders": [{"key": "ops.desk", "display_name": "Desk", "os_users": ["ops"]}]})
    with pytest.raises(ActorNotAllowed, match="several stakeholders"):
        resolve_operator("ops")


def test_anyone_means_anyone() -> None:
    from tasks.actors import ANYONE, ActorNotAllowed, Operator

    desk = Operator(os_user="ops", key="ops.desk", acts_for=(ANYONE,))
    assert desk.speaks_for(SENIOR) == SENIOR and desk.speaks_for(None) == "ops.desk"
    plain = Operator(os_user="ops", key="ops.desk")
    with pytest.raises(ActorNotAllowed):
        plain.speaks_for(SENIOR)


def test_a_control_called_with_an_operator_audits_it(store: Store) -> None:
    from tasks.actors import Operator

    case = start_sample_case(Clock())
    operator = Operator(os_user="lena", key=LEAD)
    withdraw_consent(
        case.ref,
        "P-02",
        purpose=ConsentPurpose.CASE_HANDLING,
        by=LEAD,
        now=case.clock.tick(),
        operator=operator,
    )
    [event] = events(case, "consent.withdrawn")
    assert event.details["os_user"] == "lena"
