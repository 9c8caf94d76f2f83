"""IOM step 4, implement and monitor, on real stores: who may report what on a milestone."""

from __future__ import annotations

from typing import Any

import pytest

from demo.scripted import REPRESENTATIVE, settle
from models.enums import CaseState, CaseStatus, MilestoneStatus, Step
from models.tables import ProgressUpdate
from tasks.steps.implement import (
    MilestoneResult,
    MilestoneUpdateError,
    activate_plan,
    update_milestone,
)
from tests.conftest import Store
from tests.integration.factories import (
    LEAD,
    OBSERVER,
    SUPPLIER,
    Clock,
    milestones,
    rows,
    to_implementing,
)
from tests.integration.steps_helpers import assert_state, plan_keys
from tests.integration.test_free_text_sealed import in_clear


def test_milestone_updates_follow_the_rules(store: Store) -> None:
    case = to_implementing(Clock())
    assert activate_plan(case.ref, now=case.clock.tick()) > 0
    doc, training = "document-return", "management-training"
    owners = dict(milestones(case.ref))
    assert owners[doc] == SUPPLIER

    def update(key: str, status: MilestoneStatus, by: str, **kw: Any) -> MilestoneResult:
        return update_milestone(case.ref, key, status=status, by=by, now=case.clock.tick(), **kw)

    refusals: list[tuple[str, MilestoneStatus, str, dict[str, Any], str]] = [
        (doc, MilestoneStatus.DONE, OBSERVER, {}, "only the milestone's owner or the case lead"),
        (doc, MilestoneStatus.VERIFIED, SUPPLIER, {"evidence": ["doc:x"]}, "only the case lead"),
        (doc, MilestoneStatus.WAIVED, SUPPLIER, {"note": "n/a"}, "only the case lead"),
        (doc, MilestoneStatus.VERIFIED, LEAD, {}, "needs evidence"),
        (doc, MilestoneStatus.WAIVED, LEAD, {"note": "  "}, "needs a reason"),
        (doc, MilestoneStatus.CANCELLED, LEAD, {}, "cannot be set to cancelled"),
        ("no-such-milestone", MilestoneStatus.DONE, LEAD, {}, "has no milestone"),
        (doc, MilestoneStatus.DONE, "nobody.here", {}, "unknown stakeholder"),
    ]
    before = store.row_counts()
    for key, status, by, kw, message in refusals:
        with pytest.raises(MilestoneUpdateError, match=message):
            update(key, status, by, **kw)
    assert store.row_counts() == before

    # the owner reports it done with evidence; a replayed report (same key) changes nothing
    done = update(
        doc, MilestoneStatus.DONE, SUPPLIER, evidence=["doc:receipts"], idempotency_key="k1"
    )
    after_done, events = store.row_counts(), len(case.audit())
    replay = update(
        doc, MilestoneStatus.DONE, SUPPLIER, evidence=["doc:receipts"], idempotency_key="k1"
    )
    assert replay == done
    assert store.row_counts() == after_done and len(case.audit()) == events
    # the lead verifies on the evidence already reported, or waives with a reason
    update(doc, MilestoneStatus.VERIFIED, LEAD)
    update(training, MilestoneStatus.WAIVED, LEAD, note="The site closed; nobody left to train.")
    with pytest.raises(MilestoneUpdateError, match="is verified already"):
        update(doc, MilestoneStatus.DONE, SUPPLIER)
    actions = plan_keys(case, 1)
    assert actions[doc].status == MilestoneStatus.VERIFIED
    assert actions[doc].evidence_refs == ["doc:receipts"]
    assert actions[training].status == MilestoneStatus.WAIVED
    assert (
        in_clear(actions[training].case_id, actions[training].waived_reason)
        == "The site closed; nobody left to train."
    )
    updates = rows(ProgressUpdate, ProgressUpdate.case_id == case.case().id)
    assert sorted(u.status for u in updates) == sorted(
        [MilestoneStatus.DONE, MilestoneStatus.VERIFIED, MilestoneStatus.WAIVED]
    )
    assert [e.details["status"] for e in case.audit() if e.action == "milestone.updated"] == [
        "done",
        "verified",
        "waived",
    ]

    # the last one closed moves the case on to closure, and nothing more can be reported
    remaining = [k for k, _ in milestones(case.ref) if k not in (doc, training)]
    for key in remaining:  # a financial milestone: each person's payment first (the ledger)
        settle(case.ref, key, payer=LEAD, representative=REPRESENTATIVE, now=case.clock.tick())
    for key in remaining[:-1]:
        result = update(key, MilestoneStatus.VERIFIED, LEAD, evidence=[f"doc:{key}"])
        assert not result.plan_completed
    assert case.case().state == CaseState.IMPLEMENTING
    last = update(remaining[-1], MilestoneStatus.VERIFIED, LEAD, evidence=["doc:last"])
    assert last.plan_completed and last.open_milestones == 0
    assert_state(case, CaseState.CLOSING, Step.CLOSE, CaseStatus.ACTIVE)
    with pytest.raises(MilestoneUpdateError, match="not implementing"):
        update(doc, MilestoneStatus.DONE, SUPPLIER)
    assert case.chain().ok


def test_a_milestone_update_key_belongs_to_one_milestone(store: Store) -> None:
    case = to_implementing(Clock())
    activate_plan(case.ref, now=case.clock.tick())
    owners = dict(milestones(case.ref))
    first, second = "document-return", "management-training"
    update_milestone(
        case.ref,
        first,
        status=MilestoneStatus.DONE,
        by=owners[first] or LEAD,
        evidence=["doc:a"],
        now=case.clock.tick(),
        idempotency_key="update-1",
    )
    again = update_milestone(
        case.ref,
        first,
        status=MilestoneStatus.DONE,
        by=owners[first] or LEAD,
        evidence=["doc:a"],
        now=case.clock.tick(),
        idempotency_key="update-1",
    )
    assert again.status == MilestoneStatus.DONE
    with pytest.raises(MilestoneUpdateError, match="used for another milestone"):
        update_milestone(
            case.ref,
            second,
            status=MilestoneStatus.DONE,
            by=LEAD,
            now=case.clock.tick(),
            idempotency_key="update-1",
        )
