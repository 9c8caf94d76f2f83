"""Every word in the reader's language: the plan templates' texts, the decision titles and every
routed message, in French, Spanish and Swahili (notifications/locales/; docs/architecture.md).

The messages are rendered below the Prefect layer with the contexts the steps and the sweep store
(tasks/steps/implement.py, tasks/decisions/codes.py request_context, tasks/drain.py BASE_CONTEXT),
for a case whose drafted plan holds the child-specific and the financial actions.
"""

from __future__ import annotations

import html
import re
import tomllib
from datetime import UTC, date, datetime
from typing import Any

import pytest

from models.enums import (
    DecisionKind,
    IloIndicator,
    Involvement,
    Locale,
    NotificationEvent,
    OwedKind,
    Severity,
)
from models.plan import ActionDraft, PersonFacts, PlanFacts, draft_actions, load_plan_templates
from models.policy import load_policy
from notifications.render import (
    LOCALES,
    catalog,
    decision_form_texts,
    missing_translations,
    plan_template_texts,
    plan_text,
    render,
    template_messages,
)
from notifications.routing import load_routing
from tasks.drain import BASE_CONTEXT

TODAY = date(2026, 3, 10)
FORMATS = ("html", "text", "md")
TEMPLATES = load_plan_templates()
# The decisions a step asks for (tasks/steps/*.py); the others are recorded without a request.
REQUESTED = [
    k
    for k in DecisionKind
    if k not in {DecisionKind.PLAN_REVISION, DecisionKind.MILESTONE_EXTENSION}
]
DECISION_TITLES = {
    "Screen the allegation",
    "Assess safety before any contact",
    "Decide whether the allegation is substantiated",
    "Assess involvement and severity",
    "Decide the response",
    "Agree to the remediation action plan",
    "Approve the plan's budget",
    "Propose the case's closure",
    "Confirm the case's closure (second approver)",
    "Record the lessons learned",
}


def child_and_fee_case() -> list[ActionDraft]:
    persons = (
        PersonFacts(pseudonym="P-01", is_minor=True, age_uncertain=False, nationality="RW"),
        PersonFacts(pseudonym="P-02", is_minor=False, age_uncertain=True),
        PersonFacts(pseudonym="P-03", is_minor=False, age_uncertain=False, nationality="RW"),
    )
    facts = PlanFacts(
        country="CD",
        indicators=frozenset(IloIndicator),
        persons=persons,
        involvement=Involvement.CAUSE,
        severity=Severity.CRITICAL,
        owed=frozenset(OwedKind),
    )
    return draft_actions(facts, TEMPLATES, today=TODAY, policy=load_policy())


def contexts(actions: list[ActionDraft]) -> list[tuple[str, dict[str, Any]]]:
    """One context per message the whole case sends, as the steps and the sweep store them."""
    base = {
        **BASE_CONTEXT,
        "case_ref": "RC-2026-0042",
        "step": 4,
        "approval_link": "https://remedy.example/a/token",
        "progress_link": "https://remedy.example/a/token",
        "case_view_link": "https://prefect.example/artifacts/key/case-rc-2026-0042",
        "run_link": "https://remedy.example/r/token",
        "code": "K7Q2-9XW4",
        "code_expires_at": datetime(2026, 3, 12, 9, 0, tzinfo=UTC).isoformat(),
    }
    due_at = datetime(2026, 3, 13, 17, 0, tzinfo=UTC).isoformat()
    out: list[tuple[str, dict[str, Any]]] = []
    for event in NotificationEvent:
        name = event.value
        if name.startswith("milestone_"):
            for a in actions:
                out.append(
                    (
                        name,
                        {
                            **base,
                            "milestone": a.key,
                            "title": a.title,
                            "due_on": a.due_on.isoformat(),
                            "verification_method": a.verification_method,
                        },
                    )
                )
        elif name.startswith(("decision_", "passkey_missing")):
            for kind in REQUESTED:
                out.append(
                    (
                        name,
                        {
                            **base,
                            "kind": kind.value,
                            "round": 1,
                            "due_at": due_at,
                            "reason": "P-01",
                            "outcome": "agree",
                            "approver": "amani.senior",
                        },
                    )
                )
        else:
            out.append(
                (
                    name,
                    {
                        **base,
                        "acknowledge_by": due_at,
                        "severity": "critical",
                        "country": "CD",
                        "site": "Kolwezi",
                        "mineral": "cobalt",
                        "source_type": "ngo",
                        "persons_reported": 3,
                        "closure_type": "resolved_accepted",
                        "root_causes": ["recruitment_fees"],
                        "plan_version": 1,
                        "expires_at": due_at,
                        "enrol_link": "https://remedy.example/a/enrol",
                        "code_by": "chat",
                        "receipt_ref": "RR-7KQ2",
                        "follow_up_link": "https://remedy.example/follow-up",
                        "due_at": due_at,
                    },
                )
            )
    return out


def english_texts(locale: Locale) -> set[str]:
    """The English keys a reader of `locale` must never see: the plan texts, the decision titles
    and every translated message text of more than three words."""
    messages = catalog(locale).messages
    texts = plan_template_texts() | DECISION_TITLES
    texts |= {
        k.split("%(")[0].strip()
        for k, v in messages.items()
        if len(k.split("%(")[0].split()) > 3 and v != k
    }
    return {t for t in texts if t}


# --- the catalogs ---------------------------------------------------------------------------------


def test_the_check_covers_plan_texts_decision_titles_and_forms() -> None:
    wanted = template_messages()
    assert plan_template_texts() <= wanted
    assert wanted >= DECISION_TITLES
    assert decision_form_texts() <= wanted
    tracing = (
        "Trace the child's family; reunify only where the best-interests assessment finds it "
        "in the child's best interests"
    )
    assert tracing in wanted
    assert "Your stakeholder key" in decision_form_texts()


@pytest.mark.parametrize("locale", [Locale.FR, Locale.ES, Locale.SW])
def test_no_text_is_missing_a_translation(locale: Locale) -> None:
    assert (LOCALES / f"{locale.value}.toml").exists()
    assert missing_translations()[locale.value] == []


@pytest.mark.parametrize("locale", [Locale.FR, Locale.ES, Locale.SW])
def test_translations_keep_every_placeholder(locale: Locale) -> None:
    data = tomllib.loads((LOCALES / f"{locale.value}.toml").read_text(encoding="utf-8"))
    placeholder = re.compile(r"%\(\w+\)s")
    for english, translated in data["messages"].items():
        assert sorted(placeholder.findall(english)) == sorted(placeholder.findall(translated)), (
            english
        )
        assert (translated.strip() and translated != english) or len(english.split()) <= 2, english


def test_a_per_person_title_is_translated_on_its_base_and_keeps_the_pseudonym() -> None:
    es = catalog(Locale.ES)
    base = "Offer a medical check-up and any treatment needed"
    assert plan_text(es, f"{base} (P-01)") == f"{es.messages[base]} (P-01)"
    assert plan_text(es, base) == es.messages[base]
    # what the case lead wrote stays as written
    assert plan_text(es, "Pay the bus fare home (P-01)") == "Pay the bus fare home (P-01)"
    assert plan_text(catalog(Locale.EN), f"{base} (P-07)") == f"{base} (P-07)"


# --- a Spanish-speaking approver's messages for a whole case -------------------------------------


def test_a_spanish_approver_reads_no_english_template_text() -> None:
    actions = child_and_fee_case()
    keys = {a.key for a in actions}
    assert {"child-family-tracing-p-01", "child-family-tracing-p-02", "fee-reimbursement"} <= keys
    assert {"back-pay", "debt-cancellation", "child-documents-p-02"} <= keys
    events = {name for name, _ in contexts(actions)}
    assert events == {e.value for e in load_routing().events}
    english = english_texts(Locale.ES)
    assert len(english) > 100
    seen: list[str] = []
    for name, context in contexts(actions):
        for fmt in FORMATS:
            for visibility in ("minimal", "case", "narrative"):
                message = render(
                    name, fmt=fmt, locale=Locale.ES, context={**context, "visibility": visibility}
                )
                text = html.unescape(f"{message.subject}\n{message.body}")
                leaked = [e for e in english if e in text]
                assert not leaked, (name, fmt, leaked)
                seen.append(text)
    whole = "\n".join(seen)
    es = catalog(Locale.ES).messages
    tracing = TEMPLATES.action[[t.key for t in TEMPLATES.action].index("child-family-tracing")]
    assert f"{es[tracing.title]} (P-02)" in whole
    assert es[tracing.verification_method] in whole
    assert es["Agree to the remediation action plan"] in whole
    # the same case in English does show the English texts (the check above can fail)
    assigned = next(c for n, c in contexts(actions) if n == "milestone_assigned")
    assigned = {**assigned, "visibility": "case", "title": f"{tracing.title} (P-02)"}
    assigned["verification_method"] = tracing.verification_method
    english_mail = render("milestone_assigned", fmt="text", locale=Locale.EN, context=assigned)
    assert f"{tracing.title} (P-02)" in english_mail.body


# --- the lessons report ---------------------------------------------------------------------------


def lessons_figures() -> Any:
    from models.enums import ActionKind, Step
    from tasks.reports import lessons as r

    cross = r.CrossTab(
        groups=["1", "unknown"], rows=[r.CrossRow(cause="recruitment_fees", counts=[1, 2])]
    )
    return r.LessonsFigures(
        generated_at=datetime(2027, 2, 1, 9, 30, tzinfo=UTC),
        since=date(2027, 1, 1),
        closed_cases=3,
        cases_with_lessons=2,
        closure_types=[r.NamedCount(name="resolved_accepted", count=3)],
        steps=[
            r.StepDuration(step=s.value, title=s.title, cases=3, median_days=1.5, worst_days=4.0)
            for s in Step
        ],
        milestones=r.MilestoneTimeliness(verified=4, on_time=3, late=1, waived=1, cancelled=0),
        decisions=[r.DecisionDelay(kind="plan_budget", decisions=2, overdue=1)],
        forms=[
            r.FormCount(
                kind=ActionKind.CORRECTIVE_ACTION, category="fee_reimbursement", delivered=2
            )
        ],
        root_causes=[r.NamedCount(name="recruitment_fees", count=2)],
        by_tier=cross,
        by_country=cross,
        reporters=r.ReporterTimeliness(
            receipts=2,
            acknowledged_on_time=1,
            acknowledged_late=1,
            not_acknowledged=0,
            worst_acknowledgement_days_late=3,
            feedback_on_time=2,
            feedback_late=0,
            no_feedback=0,
            worst_feedback_days_late=None,
        ),
    )


@pytest.mark.parametrize("fmt", ["md", "html"])
@pytest.mark.parametrize("locale", [Locale.FR, Locale.ES, Locale.SW])
def test_the_lessons_report_is_in_the_readers_language(fmt: str, locale: Locale) -> None:
    from tasks.reports.lessons_render import render_lessons

    figures = lessons_figures()
    english = render_lessons(figures, fmt)  # type: ignore[arg-type]
    assert "Lessons learned across closed cases" in english
    assert "Verify the allegation" in english and "(at worst 3 days)" in english
    shown = html.unescape(render_lessons(figures, fmt, locale))  # type: ignore[arg-type]
    words = catalog(locale).messages
    assert words["Lessons learned across closed cases"] in shown
    assert words["Verify the allegation"] in shown
    assert "RC-" not in shown and "P-01" not in shown
    leaked = [
        e
        for e in english_texts(locale)
        | {"Lessons learned across closed cases", "Milestones on time"}
        if e in shown
    ]
    assert not leaked
    if fmt == "html":
        assert f'<html lang="{locale.value}">' in shown
        assert words["Days spent in each step: median and worst case"] in shown  # the chart


# --- the approval and progress pages --------------------------------------------------------------


def page_html(view: Any, template: str, fields: list[Any]) -> str:
    """Render a page as flows/web/app.py does, in the recipient's language (no store needed)."""
    from flows.web.app import page, page_words

    response = page(
        template,
        title=view.title,
        view=view,
        description="",
        fields=fields,
        values={},
        problems=["P-01 is not in the case"],
        csrf="token",
        csrf_field="csrf",
        key_field="key",
        typed_key="",
        gate="passkey",
        passkey_field="passkey",
        _=page_words(view.locale),
    )
    return html.unescape(bytes(response.body).decode("utf-8"))


@pytest.mark.parametrize("locale", [Locale.FR, Locale.ES, Locale.SW])
def test_the_approval_and_progress_pages_speak_the_recipients_language(locale: Locale) -> None:
    import uuid

    from models.enums import LinkPurpose, MilestoneStatus
    from tasks.web.forms import decision_fields, progress_fields
    from tasks.web.resolve import LinkView, MilestoneView

    words = catalog(locale).messages
    expires = datetime(2026, 3, 12, 9, 0, tzinfo=UTC)
    tracing = TEMPLATES.action[[t.key for t in TEMPLATES.action].index("child-family-tracing")]
    common = {"link_id": uuid.uuid4(), "case_ref": "RC-2026-0042", "stakeholder_key": "amani"}
    progress = LinkView(
        **common,
        purpose=LinkPurpose.PROGRESS,
        expires_at=expires,
        title="Report progress on milestone child-family-tracing-p-02",
        locale=locale,
        milestone=MilestoneView(
            key="child-family-tracing-p-02",
            title=f"{tracing.title} (P-02)",
            due_on=TODAY,
            verification_method=tracing.verification_method,
            status=MilestoneStatus.ACTIVE,
            evidence=2,
        ),
    )
    decide = LinkView(
        **common,
        purpose=LinkPurpose.DECIDE,
        expires_at=expires,
        title="Agree to the remediation action plan",
        kind=DecisionKind.PLAN_AGREEMENT,
        round=1,
        due_at=expires,
        locale=locale,
    )
    pages = [page_html(progress, "progress", progress_fields())]
    pages += [page_html(decide, "decide", decision_fields(DecisionKind.PLAN_AGREEMENT))]
    english = english_texts(locale) | {
        t for f in progress_fields() for t in (f.label, f.help) if t and len(t.split()) > 1
    }
    for shown in pages:
        leaked = [e for e in english if e in shown]
        assert not leaked
    assert f"{words[tracing.title]} (P-02)" in pages[0]
    assert words[tracing.verification_method] in pages[0]
    assert words["Agree to the remediation action plan"] in pages[1]
    assert words["The affected persons gave informed consent to this plan"] in pages[1]
    assert words["Confirm your stakeholder key"] in pages[1]
    # the same pages in English (the recipient's default) keep their English words
    english_page = page_html(progress.model_copy(update={"locale": Locale.EN}), "progress", [])
    assert f"{tracing.title} (P-02)" in html.unescape(english_page)
    assert "This link was made out to the milestone's owner" in english_page
