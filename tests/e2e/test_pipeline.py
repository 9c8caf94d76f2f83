"""The sample case through all six steps against a real Prefect server and runner, carrying a
planted canary name and contact that must never leak (one case serves both tests)."""

from __future__ import annotations

import json
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlmodel import col, select

from demo.scripted import ScriptedStakeholders
from models.enums import (
    CaseState,
    DecisionKind,
    DecisionRequestStatus,
    MilestoneStatus,
    PlanStatus,
)
from tests.e2e.conftest import E2E
from tests.e2e.helpers import case_runs, flow_name, latest_artifact, open_case, wait_for
from tests.e2e.test_reporter_e2e import public_page  # noqa: F401 (fixture)

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

NAME = "Quillon Vexbrindle"
CONTACT = "quillon.vexbrindle.4471@example.net"
DOCUMENT = "QVX-4471-CANARY"
NARRATIVE_ONLY = "Vexbrindle"  # the narrative mentions the surname only
ALWAYS_SECRET = (NAME, CONTACT, DOCUMENT, "quillon", "QVX-4471")
# who may see the narrative (notifications/routing.toml [visibility])
NARRATIVE_READERS = {
    "lena.lead@acme.example",
    "amani.verifier@audit.example",
    "grace.advocate@safepassage.example",
}


def clean(text: str, where: str, extra: tuple[str, ...] = ()) -> None:
    lowered = text.lower()
    for canary in (*ALWAYS_SECRET, *extra):
        assert canary.lower() not in lowered, f"canary {canary!r} leaked into {where}"


def mail_text(message: EmailMessage) -> str:
    chunks = [f"{k}: {v}" for k, v in message.items()]
    for part in message.walk():
        if part.get_content_maintype() == "text":
            chunks.append(part.get_content())
    return "\n".join(chunks)


def canary_report(examples: Path) -> dict[str, Any]:
    """Return the changes that plant the canary in the sample report (its persons kept)."""
    sample = yaml.safe_load((examples / "reports" / "tin-kivu.yaml").read_text())
    persons = sample["affected_persons"]
    persons[-1]["identity"] = {"name": NAME, "contact": CONTACT, "document_numbers": [DOCUMENT]}
    return {
        "description": sample["description"]
        + f" Mr {NARRATIVE_ONLY} says his documents were taken; ask Safe Passage.",
        "reporter": {"name": f"{NAME} (brother)", "contact": CONTACT, "relation": "family"},
        "affected_persons": persons,
    }


def _drive_canary_case(examples: Path, tmp_path: Path) -> str:
    ref = open_case(examples, tmp_path, **canary_report(examples))
    ScriptedStakeholders().drive(ref, until=CaseState.LESSONS_CAPTURED, timeout=600)
    wait_for(
        lambda: all(r.state and r.state.is_final() for r in case_runs(ref)),
        what="every run of the case to end",
    )
    return ref


# the pipeline test's case, once it went through all six steps (the canary test reads it)
_PIPELINE_CASE: dict[str, str] = {}


def _rows(model, **where):  # type: ignore[no-untyped-def]
    from tasks.store.db import read_only

    with read_only() as session:
        query = select(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return list(session.exec(query).all())


def _case(reference: str):  # type: ignore[no-untyped-def]
    from models.tables import RemediationCase

    return _rows(RemediationCase, reference=reference)[0]


def test_sample_case_through_all_six_steps(live: E2E, examples: Path, tmp_path: Path) -> None:
    from models.tables import (
        ActionPlan,
        AuditEvent,
        ClosureRecord,
        ConsentRecord,
        Decision,
        DecisionRequest,
        Lesson,
        PlanAction,
        SafetyAssessment,
        VerificationFinding,
    )
    from tasks.reports.case_view import case_artifact_key
    from tasks.store.audit import verify_chain
    from tasks.store.db import read_only

    ref = open_case(examples, tmp_path, **canary_report(examples))
    case_id = _case(ref).id
    people = ScriptedStakeholders()
    # one refused submission: the case lead's first try rejects the allegation with no reason
    people.override_once[DecisionKind.SCREENING] = {"outcome": "rejected", "reason": ""}

    # step 1 -------------------------------------------------------------------------------
    people.drive(ref, until=CaseState.DETERMINING_RESPONSE, timeout=180)
    outcomes = [(s.what, s.who) for s in people.log]
    assert outcomes[:2] == [
        ("screening (refused)", "lena.lead"),
        ("screening (accepted)", "lena.lead"),
    ]
    screening = sorted(
        _rows(DecisionRequest, case_id=case_id, kind=DecisionKind.SCREENING), key=lambda r: r.round
    )
    assert [r.status for r in screening] == [
        DecisionRequestStatus.SUPERSEDED,
        DecisionRequestStatus.DECIDED,
    ]
    assert screening[0].flow_run_id == screening[1].flow_run_id  # the same run asked again
    refused = _rows(AuditEvent, chain=ref, action="decision.refused")
    assert len(refused) == 1 and refused[0].details["reason"].startswith("a reason is required")
    assert refused[0].actor == "stakeholder:lena.lead"  # proven: the ticket was hers
    assert len(_rows(SafetyAssessment, case_id=case_id)) == 1
    [finding] = _rows(VerificationFinding, case_id=case_id)
    assert finding.trafficking_indicated and finding.forced_labour_indicated

    # step 2 -------------------------------------------------------------------------------
    people.drive(ref, until=CaseState.DESIGNING_PLAN, timeout=180)
    case = _case(ref)
    assert case.involvement == "directly_linked" and case.severity_is_final
    assert case.response_level is not None and case.step == 3

    # step 3 -------------------------------------------------------------------------------
    people.drive(ref, until=CaseState.IMPLEMENTING, timeout=180)
    [plan] = _rows(ActionPlan, case_id=case_id)
    assert plan.status == PlanStatus.APPROVED and plan.version == 1
    assert len(_rows(ConsentRecord, case_id=case_id)) == 3 * 2  # 3 persons x 2 purposes
    actions = _rows(PlanAction, plan_id=plan.id)
    keys = {a.key for a in actions}
    assert {"document-return", "fee-reimbursement", "child-removal-p-01"} <= keys

    # step 4: the implement flow activates every milestone
    wait_for(
        lambda: all(a.status == MilestoneStatus.ACTIVE for a in _rows(PlanAction, plan_id=plan.id)),
        what="milestones activated",
    )

    # steps 4-6 ----------------------------------------------------------------------------
    people.drive(ref, until=CaseState.LESSONS_CAPTURED, timeout=300)
    case = _case(ref)
    assert case.closed_at is not None and case.closure_type == "resolved_accepted"
    [closure] = _rows(ClosureRecord, case_id=case_id)
    assert len(set(closure.approver_ids)) == 2  # four eyes
    [lesson] = _rows(Lesson, case_id=case_id)
    assert "recruitment_fees" in lesson.root_causes
    assert all(a.status == MilestoneStatus.VERIFIED for a in _rows(PlanAction, plan_id=plan.id))

    # exactly one decision per request, and the chain holds
    decisions = _rows(Decision, case_id=case_id)
    assert len({d.request_id for d in decisions}) == len(decisions)
    kinds = sorted(d.kind.value for d in decisions)
    assert kinds == sorted(k.value for k in people.script)
    with read_only() as session:
        report = verify_chain(session, ref)
    assert report.ok, report.problem

    # Prefect: every run of the case ended well; lessons were started by the closure event
    runs = wait_for(
        lambda: (
            [r for r in case_runs(ref) if r.state and r.state.is_final()]
            if all(r.state and r.state.is_final() for r in case_runs(ref))
            else None
        ),
        what="all runs final",
    )
    names = {flow_name(r): r for r in runs}
    assert set(names) == {
        "remediation-case",
        "verify-allegation",
        "determine-response",
        "design-action-plan",
        "implement-and-monitor",
        "close-incident",
        "capture-lessons",
    }
    assert all(r.state.is_completed() for r in runs), [(flow_name(r), r.state.name) for r in runs]
    lessons_run = names["capture-lessons"]
    assert lessons_run.created_by is not None and lessons_run.created_by.type == "AUTOMATION"
    assert lessons_run.parameters == {"case_ref": ref}

    # the case view in the UI
    view = latest_artifact(case_artifact_key(ref))
    assert view is not None and "lessons_captured" in view and "Milestones" in view
    transitions = [
        e.details["to"]
        for e in sorted(_rows(AuditEvent, chain=ref), key=lambda e: e.seq)
        if e.action == "case.transition"
    ]
    assert transitions == [
        "verifying",
        "determining_response",
        "designing_plan",
        "implementing",
        "closing",
        "closed",
        "lessons_captured",
    ]
    with read_only() as session:
        waiting = session.exec(
            select(DecisionRequest).where(
                DecisionRequest.case_id == case_id,
                col(DecisionRequest.status) == DecisionRequestStatus.WAITING,
            )
        ).all()
    assert waiting == []
    _PIPELINE_CASE["ref"] = ref


def test_the_canary_never_leaks(live: E2E, examples: Path, tmp_path: Path) -> None:
    """A planted canary name and contact go through the whole pipeline and never leak.

    The canary is in the report's identity fields, the reporter's contact and the narrative. Only
    e-mails to roles that may see the narrative may show it (the narrative, never the identity
    fields); no chat message, no other e-mail, and nothing in Prefect (run names, parameters, logs,
    artifacts, run inputs, events) may hold any of it. The case is the pipeline test's, which
    carries the canary (one case through six steps serves both); run alone, it drives its own.
    """
    ref = _PIPELINE_CASE.get("ref") or _drive_canary_case(examples, tmp_path)
    assert_no_canary_leaks(live, ref, min_mails=11, min_runs=7)


def test_the_canary_never_leaks_from_the_report_page(
    live: E2E,
    public_page: str,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The same canary, filed by a named reporter on the public page (not anonymous, agreeing to
    be contacted), never leaks either: the case team answers, so the reporter is told there is
    news at the canary contact (that message carries neither the name nor the report), and step 1
    ends on an unsubstantiated verdict. The page's process (the test's) logs none of it either,
    nor does any part of the stack in its log file."""
    from demo.reporter import SAMPLE_FIELDS, file_through_page, follow_up_page
    from tests.e2e.test_reporter_e2e import UNSUBSTANTIATED
    from tests.integration.test_cli_actor import map_me
    from tests.integration.test_intake import run_cli
    from tests.integration.test_report_page import case_of

    fields = {
        **SAMPLE_FIELDS,
        "what": f"Mr {NARRATIVE_ONLY} and eleven others are kept at the pit at night.",
        "name": NAME,
        "contact": CONTACT,
        "reply": "contact",
        "contact_ok": "yes",
    }
    filed = file_through_page(public_page, fields)
    ref = case_of(filed.receipt_ref)
    map_me(tmp_path)
    assert run_cli("reporter", "reply", ref, "--text", "Thank you, we are checking.") == 0
    people = ScriptedStakeholders(override_once={DecisionKind.VERIFICATION: UNSUBSTANTIATED})
    people.drive(ref, until=CaseState.CLOSING, timeout=240)
    assert "Closed" in follow_up_page(public_page, filed.code)

    assert_no_canary_leaks(
        live, ref, min_mails=3, min_runs=2, reporter=CONTACT, others_mailed=False
    )
    clean(caplog.text, "the page's log", extra=(NARRATIVE_ONLY,))
    for log in sorted((live.stack.home / "logs").glob("*.log")):
        clean(log.read_text(errors="replace"), f"{log.name}", extra=(NARRATIVE_ONLY,))


def assert_no_canary_leaks(
    live: E2E,
    ref: str,
    *,
    min_mails: int,
    min_runs: int,
    reporter: str | None = None,
    others_mailed: bool = True,
) -> None:
    """The canary rules for one case: identities in no message, the narrative only in e-mails
    to roles that may read it, nothing in chat or in Prefect (run names, parameters, logs,
    artifacts, run inputs, events). E-mails to the reporter's own address (`reporter`) may be
    addressed to it, and carry nothing else of the report."""
    from tasks.context import utcnow
    from tasks.drain import deliver_due

    deliver_due(now=utcnow())  # whatever is still in the outbox

    # e-mail: identities never; the narrative only to roles that may read it
    to_reporter = [m for m in live.mail.messages if reporter and str(m["To"]) == reporter]
    for message in to_reporter:
        text = mail_text(message).replace(reporter or "", "")
        clean(text, "the e-mail to the reporter", extra=(NARRATIVE_ONLY, ref))
    assert not reporter or to_reporter, "the reporter who agreed should have been told of news"
    mails = [m for m in live.mail.messages if ref in str(m["Subject"])]
    assert len(mails) >= min_mails
    readers_saw = False
    for message in mails:
        to, text = str(message["To"]), mail_text(message)
        if to in NARRATIVE_READERS:
            clean(text, f"e-mail to {to}")
            readers_saw = readers_saw or NARRATIVE_ONLY in text
        else:
            clean(text, f"e-mail to {to}", extra=(NARRATIVE_ONLY,))
    assert readers_saw, "the case lead should have had the narrative in the case_opened e-mail"
    if others_mailed:  # others did get mail too (a case that went further than step 1)
        assert {str(m["To"]) for m in mails} - NARRATIVE_READERS

    # chat: references and links only
    chats = [r for r in live.chat.requests if ref in r["body"]]
    assert chats
    for request in chats:
        clean(request["body"], "a chat message", extra=(NARRATIVE_ONLY, "P-01", "P-02"))

    # Prefect: run names, parameters, logs, artifacts, run inputs, events
    api = live.stack.http()  # the API credential and a CSRF token: the server is locked
    runs = case_runs(ref)
    assert len(runs) >= min_runs
    ids = [str(r.id) for r in runs]
    dumps: dict[str, Any] = {
        "runs": [r.model_dump(mode="json") for r in runs],
        "logs": _all(api, "/logs/filter", {"logs": {"flow_run_id": {"any_": ids}}}),
        "task runs": _all(api, "/task_runs/filter", {"flow_runs": {"id": {"any_": ids}}}),
        "artifacts": _all(api, "/artifacts/filter", {"artifacts": {"key": {"like_": "case-"}}})
        + _all(api, "/artifacts/filter", {"flow_runs": {"id": {"any_": ids}}}),
        "inputs": [
            api.post(f"/flow_runs/{i}/input/filter", json={"prefix": ""}, timeout=30).json()
            for i in ids
        ],
        "events": api.post(
            "/events/filter",
            json={"filter": {"any_resource": {"id_prefix": ["remedy.case."]}}, "limit": 50},
            timeout=30,
        ).json(),
    }
    api.close()
    assert dumps["logs"] and dumps["inputs"] and dumps["artifacts"]
    for what, data in dumps.items():
        clean(json.dumps(data, ensure_ascii=False), f"Prefect {what}", extra=(NARRATIVE_ONLY,))


def _all(api: httpx.Client, path: str, body: dict[str, Any]) -> list[Any]:
    rows: list[Any] = []
    offset = 0
    while True:
        page = api.post(path, json={**body, "limit": 200, "offset": offset}, timeout=30).json()
        rows += page
        if len(page) < 200:
            return rows
        offset += 200
