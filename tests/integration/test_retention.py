"""Retention and erasure on real SQLite and PostgreSQL (issue 14 item 3; docs/security.md,
Retention and erasure).

On an accelerated clock a closed case passes its retention periods: the shorter categories are
overwritten first, then the case's data key is destroyed (crypto-shredding), so its identities and
narrative no longer decrypt; the lessons report and the audit chain stay; a legal hold prevents it.
An affected person's access and erasure requests go through their representative.
"""

from __future__ import annotations

import json
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from models.enums import DecisionKind, Step
from models.tables import (
    AffectedPerson,
    Allegation,
    AuditEvent,
    Decision,
    PersonRemedyView,
    SafetyAssessment,
)
from tasks.context import current_policy
from tasks.reports.lessons import lessons_figures
from tasks.store.cases import get_case, reveal_identifying_data
from tasks.store.db import read_only, unit_of_work
from tasks.store.person_data import erase_person, export_person
from tasks.store.person_views import latest_views, record_person_view
from tasks.store.retention import (
    ERASED,
    RetentionError,
    apply_retention,
    release_hold,
    set_hold,
)
from tasks.store.vault import VaultError, get_vault
from tests.conftest import Store
from tests.integration.factories import (
    ADVOCATE,
    LEAD,
    OBSERVER,
    SENIOR,
    VERIFIER,
    Clock,
    SampleCase,
    rows,
    to_closing,
)

CANARY = "Canary-Retention-4471: P-01 wants the debt cancelled"


def closed_case(clock: Clock) -> SampleCase:
    """A case screened out, closed (four eyes) and its lessons captured; P-01 gave a view."""
    case = to_closing(clock)
    record_person_view(case.ref, "P-01", CANARY, by=ADVOCATE, given_by="person", now=clock.tick())
    proposal = case.decide(DecisionKind.CLOSURE, closure_type="no_basis")
    case.decide(
        DecisionKind.CLOSURE_CONFIRMATION,
        scope=case.confirmation_scope(proposal),
        exclude=[proposal.approver_id],
    )
    case.enter(Step.LESSONS)
    case.decide(DecisionKind.LESSONS)
    assert case.case().closed_at is not None
    return case


def days(n: int) -> timedelta:
    return timedelta(days=n)


def actions(case_ref: str) -> list[str]:
    return [e.action for e in rows(AuditEvent, AuditEvent.chain == case_ref)]


def identities_readable(case_ref: str) -> bool:
    try:
        reveal_identifying_data(case_ref, actor="test", reason="check", now=Clock().now)
    except VaultError:
        return False
    return True


def test_a_closed_case_past_its_retention_is_shredded_and_its_figures_stay(store: Store) -> None:
    clock = Clock()
    case = closed_case(clock)
    rules = current_policy().retention
    closed = case.case().closed_at
    assert closed is not None
    assert identities_readable(case.ref)
    before = lessons_figures(since=None, now=clock.now).model_dump(exclude={"generated_at"})

    # a day before the shortest period: nothing goes
    done = apply_retention(now=closed + days(min(rules.periods().values())) - days(1))
    assert done.erased == {} and done.shredded == []
    assert identities_readable(case.ref)

    # an identity still sealed by the master key (from before per-case keys) is not shredded
    # with the case's key: it is overwritten then
    with unit_of_work() as session:
        c = get_case(session, case.ref)
        p03 = session.exec(
            select(AffectedPerson).where(
                AffectedPerson.case_id == c.id, AffectedPerson.pseudonym == "P-03"
            )
        ).one()
        p03.identity_ciphertext = get_vault().encrypt({"name": CANARY})
        session.add(p03)

    # past the longest period: the data key is destroyed
    later = closed + days(rules.longest_days) + days(1)
    done = apply_retention(now=later)
    assert done.shredded == [case.ref]
    with read_only() as session:
        c = get_case(session, case.ref)
        [allegation] = session.exec(select(Allegation).where(Allegation.case_id == c.id)).all()
        persons = session.exec(select(AffectedPerson).where(AffectedPerson.case_id == c.id)).all()
        assert persons
        for p in persons:
            if p.identity_ciphertext is not None:
                with pytest.raises(VaultError):
                    get_vault().decrypt_for_case(session, c.id, p.identity_ciphertext)
        with pytest.raises(VaultError):
            get_vault().decrypt_for_case(session, c.id, allegation.description_ciphertext)
        with pytest.raises(VaultError):
            latest_views(session, c.id, with_text=True)
        # the identities' period is the longest: their ciphertext stays, unreadable
        assert any(p.identity_ciphertext for p in persons)
        assert [p.identity_ciphertext for p in persons if p.pseudonym == "P-03"] == [None]
    assert not identities_readable(case.ref)
    # the figures, the audit and the lessons stay
    after = lessons_figures(since=None, now=clock.now).model_dump(exclude={"generated_at"})
    assert after == before
    assert case.chain().ok
    assert "retention.key_destroyed" in actions(case.ref)
    shred = [
        e
        for e in rows(AuditEvent, AuditEvent.chain == case.ref)
        if e.action == "retention.key_destroyed"
    ]
    assert CANARY not in json.dumps(shred[0].details)
    # a second sweep does nothing more
    again = apply_retention(now=later + days(1))
    assert again.shredded == [] and again.erased == {}


def test_a_shorter_category_is_erased_before_the_key(store: Store) -> None:
    clock = Clock()
    case = closed_case(clock)
    rules = current_policy().retention
    closed = case.case().closed_at
    assert closed is not None
    free_text = rules.free_text_days
    assert free_text < rules.longest_days, "the shipped policy keeps free text shorter"
    typed = [d.reason for d in rows(Decision, Decision.case_id == case.case().id) if d.reason]
    assert typed and all(r.startswith("ck1:") for r in typed)  # reasons were given, sealed
    done = apply_retention(now=closed + days(free_text) + days(1))
    assert case.ref in done.erased and "free_text" in done.erased[case.ref]
    assert done.shredded == []
    with read_only() as session:
        assert latest_views(session, case.case().id, with_text=True)["P-01"].text == ERASED
    [view] = rows(PersonRemedyView, PersonRemedyView.case_id == case.case().id)
    assert view.text_ciphertext.startswith("ck1:")
    # the free text about decisions goes with it: the reasons typed are gone from the store
    case_id = case.case().id
    assert [d.reason for d in rows(Decision, Decision.case_id == case_id) if d.reason] == []
    assert [m.mitigation for m in rows(SafetyAssessment, SafetyAssessment.case_id == case_id)] in (
        [],
        [None],
    )
    # the identities (kept longer) still decrypt
    assert identities_readable(case.ref)
    assert "retention.erased" in actions(case.ref)
    assert case.chain().ok


def test_a_legal_hold_prevents_destruction_until_released(store: Store) -> None:
    clock = Clock()
    case = closed_case(clock)
    closed = case.case().closed_at
    assert closed is not None
    later = closed + days(current_policy().retention.longest_days) + days(1)
    with pytest.raises(RetentionError, match="case lead or senior approver"):
        set_hold(case.ref, reason="Court order 12/2027", by=VERIFIER, now=clock.tick())
    with pytest.raises(RetentionError, match="reason"):
        set_hold(case.ref, reason="  ", by=LEAD, now=clock.tick())
    set_hold(case.ref, reason="Court order 12/2027", by=LEAD, now=clock.tick())
    with pytest.raises(RetentionError, match="already"):
        set_hold(case.ref, reason="again", by=SENIOR, now=clock.tick())
    done = apply_retention(now=later)
    assert done.held == [case.ref] and done.shredded == []
    assert identities_readable(case.ref)
    # erasure is refused under a hold too
    with pytest.raises(RetentionError, match="legal hold"):
        erase_person(case.ref, "P-01", reason="asked", by=ADVOCATE, now=clock.tick())

    release_hold(case.ref, reason="Proceedings ended", by=SENIOR, now=clock.tick())
    with pytest.raises(RetentionError, match="no legal hold"):
        release_hold(case.ref, reason="again", by=SENIOR, now=clock.tick())
    done = apply_retention(now=later)
    assert done.shredded == [case.ref]
    assert not identities_readable(case.ref)
    assert {"case.data_hold_set", "case.data_hold_released"} <= set(actions(case.ref))
    assert case.chain().ok


def test_a_reopened_case_is_not_shredded(store: Store) -> None:
    from tasks.controls import reopen_case

    clock = Clock()
    case = closed_case(clock)
    closed = case.case().closed_at
    assert closed is not None
    reopen_case(case.ref, to="verification", by=LEAD, reason="New evidence", now=clock.tick())
    assert case.case().closed_at is None
    done = apply_retention(now=closed + days(current_policy().retention.longest_days + 1))
    assert done.shredded == [] and done.erased == {}
    assert identities_readable(case.ref)


def test_a_person_exports_then_erases_their_data_through_their_representative(
    store: Store,
) -> None:
    clock = Clock()
    case = closed_case(clock)
    with pytest.raises(RetentionError, match="case lead or victim representative"):
        export_person(case.ref, "P-01", by=OBSERVER, now=clock.tick())
    with pytest.raises(RetentionError, match="no affected person"):
        export_person(case.ref, "P-99", by=ADVOCATE, now=clock.tick())
    data = export_person(case.ref, "P-01", by=ADVOCATE, now=clock.tick())
    assert data["person"]["pseudonym"] == "P-01"
    assert data["person"]["identity"]  # decrypted
    assert [v["text"] for v in data["views"]] == [CANARY]
    assert "consent" in data and "ledger" in data and "milestones" in data
    exported = [
        e for e in rows(AuditEvent, AuditEvent.chain == case.ref) if e.action == "person.exported"
    ]
    assert len(exported) == 1 and CANARY not in json.dumps(exported[0].details)

    with pytest.raises(RetentionError, match="case lead or victim representative"):
        erase_person(case.ref, "P-01", reason="The person asked", by=SENIOR, now=clock.tick())
    with pytest.raises(RetentionError, match="reason"):
        erase_person(case.ref, "P-01", reason=" ", by=ADVOCATE, now=clock.tick())
    erased = erase_person(
        case.ref, "P-01", reason="The person asked", by=ADVOCATE, now=clock.tick()
    )
    assert erased.identity and erased.views == 1
    with read_only() as session:
        assert CANARY not in str(latest_views(session, case.case().id, with_text=True))
    again = export_person(case.ref, "P-01", by=LEAD, now=clock.tick())
    assert again["person"]["identity"] is None
    assert [v["text"] for v in again["views"]] == [None]
    # the pseudonym and the others stay
    others = export_person(case.ref, "P-03", by=LEAD, now=clock.tick())
    assert others["person"]["identity"]
    assert "person.erased" in actions(case.ref)
    assert case.chain().ok


def test_the_command_line_holds_exports_and_erases_as_the_person_at_the_terminal(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.integration.test_cli_actor import map_me
    from tests.integration.test_intake import run_cli

    clock = Clock()
    case = closed_case(clock)
    map_me(tmp_path, LEAD)
    assert run_cli("case", "hold-data", case.ref, "--reason", "Court order 12/2027") == 0
    assert run_cli("person", "erase", case.ref, "P-01", "--reason", "The person asked") == 1
    assert "legal hold" in capsys.readouterr().err
    assert run_cli("case", "release-data", case.ref, "--reason", "Proceedings ended") == 0
    capsys.readouterr()
    assert run_cli("person", "export", case.ref, "P-01") == 0
    data = json.loads(capsys.readouterr().out)
    assert [v["text"] for v in data["views"]] == [CANARY]
    target = tmp_path / "p01.json"
    assert run_cli("person", "export", case.ref, "P-01", "--out", str(target)) == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert json.loads(target.read_text(encoding="utf-8"))["person"]["pseudonym"] == "P-01"
    assert run_cli("person", "export", case.ref, "P-01", "--out", str(target)) == 1  # exists
    assert run_cli("person", "erase", case.ref, "P-01", "--reason", "The person asked") == 0
    assert run_cli("person", "export", case.ref, "P-01", "--by", OBSERVER) == 1
    assert actions(case.ref).count("person.exported") == 2


@pytest.mark.parametrize(
    ("old", "new", "why"),
    [
        ("identity_days = 1825", "identity_days = 0", "identity_days"),
        ("contact_days = 365", "contact_days = 40000", "contact_days"),
        ("free_text_days = 1095", "free_text_days = 1095\nnotes_days = 30", "notes_days"),
    ],
)
def test_the_retention_periods_are_checked_when_the_policy_is_read(
    tmp_path: Path, old: str, new: str, why: str
) -> None:
    from tests.unit.test_policy import problems, write

    assert why in problems(write(tmp_path, old, new))


def test_the_shipped_retention_periods_keep_identities_longest() -> None:
    from models.policy import load_policy

    rules = load_policy().retention
    assert rules.periods() == {
        "identity": 1825,
        "contact": 365,
        "narrative": 1825,
        "messages": 730,
        "free_text": 1095,
    }
    assert rules.longest_days == 1825


def test_the_sweep_task_applies_retention_and_counts_it(store: Store) -> None:
    from tasks.orchestration.sweep_tasks import _apply_retention

    clock = Clock()
    case = closed_case(clock)
    closed = case.case().closed_at
    assert closed is not None
    later = closed + days(current_policy().retention.longest_days + 1)
    assert _apply_retention(later) == {
        "retention_erased": 3,  # contact, messages, free_text: shorter than the longest
        "retention_shredded": 1,
        "retention_held": 0,
    }
    assert _apply_retention(later + days(1)) == {
        "retention_erased": 0,
        "retention_shredded": 0,
        "retention_held": 0,
    }
