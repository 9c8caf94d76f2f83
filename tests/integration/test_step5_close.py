"""IOM step 5, close the incident, on real stores: which closures a case allows."""

from __future__ import annotations

import uuid

from demo.scripted import REPRESENTATIVE, settle
from models.enums import CaseState, ConsentPurpose, DecisionKind, MilestoneStatus, Step
from tasks.controls import close_early, withdraw_consent
from tasks.steps.implement import activate_plan, update_milestone
from tests.conftest import Store
from tests.integration.factories import (
    LEAD,
    SENIOR,
    Clock,
    SampleCase,
    implement,
    milestones,
    plan,
    respond,
    script,
    start_sample_case,
    to_implementing,
)


def test_a_remedied_case_cannot_be_closed_as_no_basis(store: Store) -> None:
    case = to_implementing(Clock())
    implement(case)
    assert case.case().state == CaseState.CLOSING
    case.enter(Step.CLOSE)
    pending = case.prepare(DecisionKind.CLOSURE)
    who, values = script(DecisionKind.CLOSURE, closure_type="no_basis")
    result = case.submit(pending.request_id, who, values)
    assert not result.accepted
    assert "screened out or unsubstantiated" in (result.reason or "")


# --- what the signers of a closure see -----------------------------------------------------------

MARKUP_REASON = "Interviews with P-01 and P-02 off site <b>confirmed</b> it; see [the file](https://evil.example)"


def closure_page(case: SampleCase, request_id: uuid.UUID, who: str) -> str:
    """The closure decision's description as the approval page shows `who`."""
    from tasks.web.resolve import decision_markdown, resolve_link
    from tests.integration.test_web_links import decide_link, token_of

    view = resolve_link(token_of(decide_link(request_id, who)), now=case.clock.tick())
    return decision_markdown(view)


def as_html(markdown: str) -> str:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)


def test_closure_signers_see_the_verdict_with_its_reasons_each_persons_view_and_what_is_undone(
    store: Store,
) -> None:
    case = start_sample_case(Clock())
    case.decide(DecisionKind.SCREENING)
    case.decide(DecisionKind.SAFETY)
    case.decide(DecisionKind.VERIFICATION, reason=MARKUP_REASON)
    respond(case)
    plan(case)
    case.enter(Step.IMPLEMENT)
    activate_plan(case.ref, now=case.clock.tick())
    keys = [k for k, _ in milestones(case.ref)]
    done, undone = keys[:-1], keys[-1]
    for key in done:
        settle(case.ref, key, payer=LEAD, representative=REPRESENTATIVE, now=case.clock.tick())
        update_milestone(
            case.ref,
            key,
            status=MilestoneStatus.VERIFIED,
            by=LEAD,
            evidence=[f"doc:{key}"],
            now=case.clock.tick(),
        )
    withdraw_consent(
        case.ref, "P-02", purpose=ConsentPurpose.CASE_HANDLING, by=LEAD, now=case.clock.tick()
    )
    close_early(case.ref, by=SENIOR, reason="Funding ended.", now=case.clock.tick())
    assert case.case().state == CaseState.CLOSING
    case.enter(Step.CLOSE)
    pending = case.prepare(DecisionKind.CLOSURE)

    # wherever they sign (the Prefect form too): the verdict, the persons, what is left undone
    brief = pending.description
    assert "### The verdict" in brief and "Verification: **substantiated**" in brief
    assert "| P-01 | given |" in brief and "| P-02 | withdrawn |" in brief
    assert "withdrew consent" in brief
    assert "### Left undone" in brief and undone in brief
    assert "Interviews with" not in brief  # typed words stay off Prefect objects

    # on the approval page: also the verifier's reasons and the victims' view, as plain text
    page = closure_page(case, pending.request_id, LEAD)
    shown = brief.split("### The verdict")[1].split("Enter **your stakeholder key**")[0].strip()
    assert shown in page
    html = as_html(page)
    assert "Interviews with P-01 and P-02 off site" in html
    assert "<b>" not in html and "&lt;b&gt;confirmed&lt;/b&gt;" in html
    assert 'href="https://evil.example' not in html
    assert "Documents back first; school for P-01" in page  # the victims' priorities
    assert "recorded by grace.advocate" in page

    # the second signer sees the proposal's view of the outcome and the unmet needs too
    proposal = case.decide(
        DecisionKind.CLOSURE,
        closure_type="unresolved_authorised",
        unresolved_authorised=True,
    )
    confirm = case.prepare(
        DecisionKind.CLOSURE_CONFIRMATION,
        scope=case.confirmation_scope(proposal),
        exclude=[proposal.approver_id],
    )
    page = closure_page(case, confirm.request_id, SENIOR)
    assert "P-01 and P-03 accept the outcome" in page and "Follow-up on schooling" in page
    assert "### Left undone" in page and "Interviews with P-01" in page

    # pseudonyms only: no name from the report reaches what signers see
    for text in (brief, page, confirm.description):
        for name in ("Jean-Baptiste", "Emmanuel"):
            assert name not in text
