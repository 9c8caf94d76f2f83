"""Deciding in another's name through the Prefect API (issue 10; docs/security.md).

What only a real server shows: what Prefect keeps of a submission once the step recorded it, and
what a resume through its API with a copied secret achieves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.client.orchestration import get_client

from models.enums import DecisionKind, DecisionRequestStatus
from models.tables import AuditEvent, DecisionRequest
from tasks.decisions.requests import waiting_requests
from tasks.decisions.resume import (
    await_verdict,
    issued_code,
    submit_decision,
    submit_with_code,
)
from tasks.store.db import read_only
from tests.e2e.conftest import E2E
from tests.e2e.helpers import open_case, wait_for

LEAD = "lena.lead"


def _screening(reference: str) -> DecisionRequest | None:
    from tasks.decisions.resume import waiting_run_ready

    waiting = [r for r in waiting_requests(reference) if r.kind == DecisionKind.SCREENING]
    return waiting[0] if len(waiting) == 1 and waiting_run_ready(waiting[0]) else None


def _inputs(flow_run_id: Any) -> dict[str, Any]:
    """Every run input Prefect keeps for a run, by key."""
    with get_client(sync_client=True) as client:
        rows = client.filter_flow_run_input(
            flow_run_id=flow_run_id, key_prefix="suspended-", limit=200, exclude_keys=set()
        )
    return {row.key: row.value for row in rows}


def _audit(chain: str, action: str) -> list[AuditEvent]:
    from sqlmodel import select

    with read_only() as session:
        return list(
            session.exec(
                select(AuditEvent).where(AuditEvent.chain == chain, AuditEvent.action == action)
            ).all()
        )


def test_prefect_keeps_no_usable_secret_of_a_refused_submission(
    live: E2E, examples: Path, tmp_path: Path
) -> None:
    ref = open_case(examples, tmp_path)
    first = wait_for(lambda: _screening(ref), what="screening to wait")
    code = issued_code(first.id, LEAD)
    assert code is not None
    run_id = first.flow_run_id

    # as `remedy decide` does: a decision the rules refuse (rejected, no reason)
    form = {"outcome": "rejected", "reason": "", "approver": LEAD, "approval_code": code}
    submit_with_code(first.id, form, channel="command-line")
    assert await_verdict(first.id, wait_seconds=60).status == "refused"
    second = wait_for(lambda: _screening(ref), what="the next round to wait")

    # what Prefect holds: no submission once recorded, and the code nowhere
    kept = _inputs(run_id)
    assert not [key for key in kept if key.endswith("-response")], kept.keys()
    assert code not in repr(kept)

    # the Prefect UI path: the lead types her code straight in, and the rules refuse it again
    submit_decision(second.id, form)
    assert await_verdict(second.id, wait_seconds=60).status == "refused"
    third = wait_for(lambda: _screening(ref), what="the third round to wait")

    # whoever saw that code (in the run input, before it was deleted) presents it as hers
    replay = {"outcome": "accepted", "reason": "", "approver": LEAD, "approval_code": code}
    submit_decision(third.id, replay)

    def proven_nothing() -> DecisionRequest | None:
        with read_only() as session:
            row = session.get(DecisionRequest, third.id)
        return row if row is not None and row.tries == 1 else None

    again = wait_for(proven_nothing, what="the replay to be checked")
    assert again.status == DecisionRequestStatus.WAITING and again.round == third.round
    [replayed] = _audit(ref, "decision.replay_refused")
    assert replayed.details["named"] == LEAD
    assert _audit(ref, "decision.taken") == []
    # the same round waits again, under a fresh key, for the real decision
    waiting = wait_for(lambda: _screening(ref), what="the same round to wait again")
    assert waiting.id == third.id and waiting.suspend_key.endswith("-t1")
