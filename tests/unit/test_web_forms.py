"""The approval page's forms: every decision's inputs described, and typed text read back.

The expected inputs are worked out from each form's Python field types (not from the JSON schema
the page reads), so a field the schema reading misses or misdescribes fails here.
"""

from __future__ import annotations

import enum
import types
from typing import Any, Literal, Union, get_args, get_origin

import pytest

from models.enums import DecisionKind, MilestoneStatus, RiskLevel, RootCause, SafetyRisk
from tasks.steps.table import DECISIONS
from tasks.web.forms import (
    CSRF_FIELD,
    KEY_FIELD,
    MAX_EVIDENCE,
    FormProblemsError,
    ProgressReport,
    checked_decision,
    decision_fields,
    parse_progress,
    parse_values,
    progress_fields,
    submitted_values,
)

PAGE_FIELDS = {"approver", "approval_code", CSRF_FIELD, KEY_FIELD}
CODE = "ABCD2345"


def _choices(annotation: Any) -> list[str] | None:
    """The values a Literal or an enum allows, as the page's options carry them."""
    if get_origin(annotation) is Literal:
        return [str(v) for v in get_args(annotation)]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [str(m.value) for m in annotation]
    return None


def expected(annotation: Any) -> tuple[str, str, list[str]]:
    """The widget, value type and option values a field of this Python type should get."""
    if get_origin(annotation) in (Union, types.UnionType):  # only `X | None` is expected here
        [annotation] = [a for a in get_args(annotation) if a is not type(None)]
    choices = _choices(annotation)
    if choices is not None:
        return "select", "enum", choices
    if annotation is bool:
        return "select", "boolean", ["yes", "no"]
    if annotation is int:
        return "number", "integer", []
    if annotation is float:
        return "number", "number", []
    if get_origin(annotation) is list:
        [item] = get_args(annotation)
        choices = _choices(item)
        if choices is not None:
            return "checkboxes", "enum_list", choices
        assert item is str, item
        return "lines", "string_list", []
    assert annotation is str, annotation
    return "", "string", []


@pytest.mark.parametrize("kind", list(DECISIONS), ids=lambda k: k.value)
def test_every_input_of_a_decision_form_is_described(kind: DecisionKind) -> None:
    model = DECISIONS[kind].form
    fields = {f.name: f for f in decision_fields(kind)}

    # every field a person types is asked for, in the form's order; the page's own are not
    asked = [name for name in model.model_fields if name not in PAGE_FIELDS]
    assert list(fields) == asked and asked
    assert not PAGE_FIELDS & set(fields)
    for name, info in model.model_fields.items():
        if name in PAGE_FIELDS:
            continue
        spec = fields[name]
        widget, value_type, options = expected(info.annotation)
        assert spec.type == value_type, name
        if widget:
            assert spec.widget == widget, name
        else:
            assert spec.widget in ("text", "textarea"), name
        assert [value for value, _ in spec.options] == options, name
        if value_type in ("enum", "enum_list"):
            assert all(label == value.replace("_", " ") for value, label in spec.options), name
        assert spec.required == info.is_required(), name
        assert spec.label == (info.title or name.replace("_", " ").capitalize()), name


def test_enums_are_selects_and_lists_of_enums_checkboxes_with_their_options() -> None:
    safety = {f.name: f for f in decision_fields(DecisionKind.SAFETY)}
    assert safety["risk_level"].widget == "select" and safety["risk_level"].required
    assert safety["risk_level"].options == [(r.value, r.value.replace("_", " ")) for r in RiskLevel]
    risks = safety["risks"]
    assert (risks.widget, risks.type, risks.max_items, risks.required) == (
        "checkboxes",
        "enum_list",
        7,
        False,
    )
    assert risks.options == [(r.value, r.value.replace("_", " ")) for r in SafetyRisk]
    assert safety["contact_cleared"].options == [("yes", "yes"), ("no", "no")]
    assert (safety["valid_days"].minimum, safety["valid_days"].maximum) == (1, 365)
    assert safety["valid_days"].default == "90"

    lessons = {f.name: f for f in decision_fields(DecisionKind.LESSONS)}
    assert lessons["root_causes"].widget == "checkboxes" and lessons["root_causes"].required
    assert [v for v, _ in lessons["root_causes"].options] == [r.value for r in RootCause]
    assert lessons["changes"].widget == "lines" and lessons["changes"].max_items == 20

    screening = {f.name: f for f in decision_fields(DecisionKind.SCREENING)}
    assert screening["duplicate_of"].pattern == r"^(RC-\d{4}-\d{4,})?$"
    assert screening["reason"].widget == "textarea" and screening["reason"].max_length == 2000


def test_a_progress_report_asks_for_status_note_and_evidence() -> None:
    status, note, evidence = progress_fields()
    assert (status.name, status.widget, status.required) == ("status", "select", True)
    assert status.options == [(MilestoneStatus.ACTIVE.value, "in progress"), ("done", "done")]
    assert (note.name, note.widget, note.max_length, note.required) == (
        "note",
        "textarea",
        4000,
        False,
    )
    assert (evidence.name, evidence.widget, evidence.max_items) == ("evidence", "lines", 20)


# --- reading what was typed ----------------------------------------------------------------------


def test_typed_text_becomes_the_decision_s_values() -> None:
    form = {
        "risk_level": ["high"],
        "risks": ["retaliation", "", "health"],
        "mitigation": ["  Meet off site.\r\nWith an interpreter.  "],
        "contact_cleared": ["yes"],
        "valid_days": [" 30 "],
        "unknown": ["ignored"],
        CSRF_FIELD: ["abc"],
    }
    values = parse_values(decision_fields(DecisionKind.SAFETY), form)
    assert values == {
        "risk_level": "high",
        "risks": ["retaliation", "health"],
        "mitigation": "Meet off site.\nWith an interpreter.",
        "contact_cleared": True,
        "valid_days": "30",
    }
    checked = checked_decision(DecisionKind.SAFETY, form, approver="lena.lead", code=CODE)
    assert checked.model_dump(mode="json") == {
        **values,
        "valid_days": 30,
        "approver": "lena.lead",
        "approval_code": CODE,
    }
    lines = parse_values(
        decision_fields(DecisionKind.LESSONS), {"changes": ["a\r\n\r\n  b \n"], "root_causes": []}
    )
    assert lines["changes"] == ["a", "b"] and lines["root_causes"] == []
    # an empty number or choice is left out, so the model's default (or "missing") applies
    empty = parse_values(decision_fields(DecisionKind.SAFETY), {"valid_days": [""]})
    assert "valid_days" not in empty and "contact_cleared" not in empty


PROBLEMS: list[tuple[str, DecisionKind, dict[str, list[str]], list[str]]] = [
    (
        "missing-required",
        DecisionKind.SCREENING,
        {"outcome": [""]},
        ["outcome: is required but missing"],
    ),
    (
        "wrong-enum-and-pattern",
        DecisionKind.SCREENING,
        {"outcome": ["maybe"], "duplicate_of": ["nonsense"]},
        [
            "outcome: Input should be 'accepted', 'duplicate' or 'rejected'",
            "duplicate_of: String should match pattern '^(RC-\\d{4}-\\d{4,})?$'",
        ],
    ),
    (
        "bad-number",
        DecisionKind.IMPACT_ASSESSMENT,
        {
            "involvement": ["cause"],
            "involvement_evidence": ["Audit notes."],
            "scale": ["high"],
            "persons_affected": ["many"],
            "irremediability": ["difficult"],
        },
        ["persons_affected: Input should be a valid integer, unable to parse string as an integer"],
    ),
    (
        "too-many-items-bad-boolean-out-of-range",
        DecisionKind.SAFETY,
        {
            "risk_level": ["high"],
            "risks": ["retaliation"] * 8,
            "contact_cleared": ["perhaps"],
            "valid_days": ["400"],
        },
        [
            "risks: has too many items (the limit is 7)",
            "contact_cleared: Input should be a valid boolean, unable to interpret input",
            "valid_days: Input should be less than or equal to 365",
        ],
    ),
    (
        "too-long",
        DecisionKind.CLOSURE_CONFIRMATION,
        {"confirm": ["no"], "reason": ["x" * 2001]},
        ["reason: text is too long (2001 characters; the limit is 2000)"],
    ),
]


@pytest.mark.parametrize(
    ("kind", "form", "problems"), [p[1:] for p in PROBLEMS], ids=[p[0] for p in PROBLEMS]
)
def test_a_form_with_problems_is_explained_in_the_page_s_words(
    kind: DecisionKind, form: dict[str, list[str]], problems: list[str]
) -> None:
    with pytest.raises(FormProblemsError) as caught:
        checked_decision(kind, form, approver="lena.lead", code=CODE)
    assert caught.value.problems == problems
    # what a person typed never appears in the problems (it may be personal data)
    assert all("nonsense" not in p and "perhaps" not in p for p in caught.value.problems)


def test_the_form_is_shown_again_as_typed() -> None:
    fields = decision_fields(DecisionKind.SAFETY)
    form = {"risks": ["retaliation", "health"], "mitigation": ["<b>x</b>"]}
    again = submitted_values(fields, form)
    assert again["risks"] == ["retaliation", "health"]
    assert again["mitigation"] == "<b>x</b>" and again["risk_level"] == ""
    assert set(again) == {f.name for f in fields}


def test_a_progress_report_is_read_or_explained() -> None:
    report = parse_progress(
        {"status": ["done"], "note": ["  Delivered.\r\n"], "evidence": ["doc:a\r\n\r\n doc:b "]}
    )
    assert report == ProgressReport(MilestoneStatus.DONE, "Delivered.", ["doc:a", "doc:b"])
    assert parse_progress({"status": ["active"]}) == ProgressReport(MilestoneStatus.ACTIVE, "", [])

    with pytest.raises(FormProblemsError) as caught:
        parse_progress(
            {
                "status": ["verified"],
                "note": ["n" * 4001],
                "evidence": ["\n".join(f"doc:{i}" for i in range(MAX_EVIDENCE + 1))],
            }
        )
    assert caught.value.problems == [
        "status: choose in progress or done",
        "note: text is too long (4001 characters; the limit is 4000)",
        "evidence: has too many items (the limit is 20)",
    ]
    with pytest.raises(FormProblemsError) as caught:
        parse_progress({"status": ["done"], "evidence": ["doc:" + "x" * 200]})
    assert caught.value.problems == [
        "evidence: a reference is too long (the limit is 200 characters)"
    ]


def test_no_decision_form_uses_the_page_s_own_field_names() -> None:
    for spec in DECISIONS.values():
        assert not {CSRF_FIELD, KEY_FIELD} & set(spec.form.model_fields)
