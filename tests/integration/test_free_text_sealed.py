"""Free text about persons and decisions is sealed with the case's data key (docs/security.md).

A canary planted in every free-text field of every form, of the milestones (progress notes,
waiver, extension), of the ledger's waiver and of the controls is absent from the stored rows in
clear (the SQLite file's bytes, every PostgreSQL row cast to text); the readers that show it to
the people entitled to it still show it decrypted.
"""

from __future__ import annotations

import sqlite3
import uuid
from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import SQLModel, select

from demo.scripted import REPRESENTATIVE, settle
from models.enums import DecisionKind, MilestoneStatus, Step
from tasks.controls import close_early
from tasks.reports.case_view import decision_records
from tasks.steps.implement import activate_plan, request_extension, update_milestone
from tasks.steps.plan import draft_plan
from tasks.store.cases import get_case
from tasks.store.db import read_only, unit_of_work
from tasks.store.ledger import waive
from tasks.store.ledger_view import ledger_summary
from tests.conftest import Store
from tests.integration.factories import LEAD, SENIOR, Clock, milestones, start_sample_case
from tests.integration.test_all_six_steps import hand_over
from tests.integration.test_step5_close import closure_page

CANARY = "CANARY-FREE-TEXT-7731"


def in_clear(case_id: uuid.UUID, value: str | None) -> str | None:
    """A stored free text as its readers show it (for the tests that read rows)."""
    from tasks.store.sealed import open_text

    assert value is None or value.startswith("ck1:"), "free text stored in clear"
    with read_only() as session:
        return open_text(session, case_id, value)


def said(what: str) -> str:
    return f"{CANARY} {what}"


def stored_in_clear(store: Store) -> bool:
    """Whether the canary is anywhere in the store as stored (not as any reader shows it)."""
    if store.backend == "sqlite":
        assert store.path is not None
        conn = sqlite3.connect(store.path, isolation_level=None)  # outside any transaction
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        files = [store.path, store.path.with_name(store.path.name + "-wal")]
        return any(CANARY.encode() in f.read_bytes() for f in files if f.exists())
    with store.engine().connect() as conn:
        for table in SQLModel.metadata.tables.values():
            found = conn.execute(
                sa.select(sa.func.count())
                .select_from(table)
                .where(
                    sa.cast(
                        sa.func.row_to_json(sa.literal_column(f'"{table.name}"')), sa.Text
                    ).contains(CANARY)
                )
            ).scalar_one()
            if found:
                return True
        conn.rollback()
    return False


def test_free_text_is_sealed_everywhere_and_shown_to_who_may_read_it(store: Store) -> None:
    case = start_sample_case(Clock())
    case.decide(DecisionKind.SCREENING, reason=said("screening"))
    case.decide(DecisionKind.SAFETY, mitigation=said("mitigation"))
    case.decide(DecisionKind.VERIFICATION, reason=said("verification"))
    assert not stored_in_clear(store), "step 1's reasons or mitigation are stored in clear"
    case.enter(Step.RESPOND)
    case.decide(DecisionKind.IMPACT_ASSESSMENT, involvement_evidence=said("evidence"))
    case.decide(
        DecisionKind.RESPONSE,
        override_reason=said("override"),
        victim_impact_note=said("impact"),
        referral_rationale=said("referral"),
    )
    case.enter(Step.PLAN)
    draft_plan(case.ref, now=case.clock.tick())
    case.decide(
        DecisionKind.PLAN_AGREEMENT,
        victim_priorities=said("priorities"),
        comments=said("comments"),
    )
    case.decide(DecisionKind.PLAN_BUDGET, reason=said("budget"))
    assert not stored_in_clear(store), "a decision's free text is stored in clear"

    case.enter(Step.IMPLEMENT)
    activate_plan(case.ref, now=case.clock.tick())
    owners = dict(milestones(case.ref))
    keys = list(owners)
    with read_only() as session:
        line = next(
            x
            for x in ledger_summary(session, get_case(session, case.ref).id).lines
            if not x.settled
        )
    waive(
        case.ref,
        line.pseudonym,
        line.kind,
        line.currency,
        reason=said("ledger waiver"),
        by=LEAD,
        now=case.clock.tick(),
    )
    for key in keys[:-1]:
        settle(case.ref, key, payer=LEAD, representative=REPRESENTATIVE, now=case.clock.tick())
        update_milestone(
            case.ref,
            key,
            status=MilestoneStatus.VERIFIED,
            by=LEAD,
            note=said("progress"),
            evidence=[f"doc:{key}"],
            now=case.clock.tick(),
        )
    last = keys[-1]
    request_extension(
        case.ref,
        last,
        to=(case.clock.tick() + timedelta(days=400)).date(),
        reason=said("extension"),
        by=owners[last] or LEAD,
        now=case.clock.tick(),
    )
    assert not stored_in_clear(store), "a milestone's or the ledger's free text is stored in clear"
    with read_only() as session:
        [waived] = [
            x for x in ledger_summary(session, get_case(session, case.ref).id).lines if x.waived
        ]
        assert waived.waived_reason == said("ledger waiver")  # the case lead's ledger view

    close_early(case.ref, by=SENIOR, reason=said("close early"), now=case.clock.tick())
    case.enter(Step.CLOSE)
    proposal = case.decide(
        DecisionKind.CLOSURE,
        closure_type="unresolved_authorised",
        unresolved_authorised=True,
        victim_view=said("victim view"),
        unmet_needs=said("unmet needs"),
    )
    confirm = case.prepare(
        DecisionKind.CLOSURE_CONFIRMATION,
        scope=case.confirmation_scope(proposal),
        exclude=[proposal.approver_id],
    )
    page = closure_page(case, confirm.request_id, SENIOR)  # the second signer reads them all
    for what in (
        "screening",
        "verification",
        "priorities",
        "comments",
        "victim view",
        "unmet needs",
    ):
        assert said(what) in page, what
    assert CANARY not in confirm.description  # never on a Prefect object
    case.decide(
        DecisionKind.CLOSURE_CONFIRMATION,
        scope=case.confirmation_scope(proposal),
        exclude=[proposal.approver_id],
        reason=said("confirmation"),
    )
    hand_over(case, Step.LESSONS)
    case.decide(DecisionKind.LESSONS, summary=said("lesson"), changes=[said("change")])

    assert not stored_in_clear(store), "free text is stored in clear"
    # `remedy show decisions` (the case's team) shows each decision's reason decrypted
    reasons = {r.kind: r.reason for r in decision_records(case.ref)}
    assert reasons[DecisionKind.VERIFICATION] == said("verification")
    assert reasons[DecisionKind.RESPONSE] == said("override")


def test_free_text_from_before_sealing_is_sealed_by_the_upgrade_step(store: Store) -> None:
    from models.tables import Allegation, Decision
    from tasks.store.sealed import open_payload, open_text, seal_legacy_free_text

    case = start_sample_case(Clock())
    case.decide(DecisionKind.SCREENING)
    with unit_of_work() as session:  # as a version before 0013 wrote it
        allegation = session.exec(select(Allegation)).one()
        allegation.screening_reason = said("legacy")
        session.add(allegation)
        decision = session.exec(select(Decision)).one()
        decision.payload = {**decision.payload, "reason": said("legacy payload")}
        session.add(decision)
    assert stored_in_clear(store)
    with unit_of_work() as session:
        assert seal_legacy_free_text(session) >= 1
    with unit_of_work() as session:
        assert seal_legacy_free_text(session) == 0  # idempotent
        allegation = session.exec(select(Allegation)).one()
        assert open_text(session, allegation.case_id, allegation.screening_reason) == said("legacy")
        decision = session.exec(select(Decision)).one()
        opened = open_payload(session, decision.case_id, decision.payload)
        assert opened["reason"] == said("legacy payload")
    assert not stored_in_clear(store)


def test_clear_text_of_a_case_whose_key_was_destroyed_is_removed_not_sealed(store: Store) -> None:
    from models.tables import Allegation
    from tasks.store.sealed import seal_legacy_free_text
    from tasks.store.vault import destroy_case_key

    case = start_sample_case(Clock())
    case.decide(DecisionKind.SCREENING)
    with unit_of_work() as session:
        allegation = session.exec(select(Allegation)).one()
        allegation.screening_reason = said("legacy")
        session.add(allegation)
        assert destroy_case_key(session, allegation.case_id, case.clock.tick())
    with unit_of_work() as session:
        assert seal_legacy_free_text(session) >= 1
    with unit_of_work() as session:
        assert seal_legacy_free_text(session) == 0
        assert session.exec(select(Allegation)).one().screening_reason is None
    assert not stored_in_clear(store)
