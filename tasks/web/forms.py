"""The approval page's forms: which inputs a decision or a progress report asks for, and reading
what was typed back into values, with problems in the page's wording.

A decision's inputs are described from its form's JSON schema (tasks/decisions/fields.py, the same
description `remedy decide` prompts from); who decides and the one-time code are never asked: the
link says who, and the page submits the code itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from models.enums import DecisionKind, MilestoneStatus
from models.forms import SUBMITTER_FIELDS
from tasks.decisions.fields import FieldSpec, fields_from_schema
from tasks.inputs import explain
from tasks.steps.table import spec_of

# form fields of the page itself; no decision form may use these names
CSRF_FIELD, KEY_FIELD = "csrf", "stakeholder_key"
MAX_EVIDENCE = 20
MAX_NOTE = 4000
MAX_EVIDENCE_REF = 200
FormData = Mapping[str, Sequence[str]]


class FormProblemsError(Exception):
    """A submission is incomplete or breaks a rule; nothing was used up or changed."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def first(form: FormData, name: str) -> str:
    """Return a field's first value as typed ("" if it was not sent)."""
    values = form.get(name) or [""]
    return values[0]


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


# --- describing the inputs -----------------------------------------------------------------------


def decision_fields(kind: DecisionKind) -> list[FieldSpec]:
    """Describe the inputs of a decision's form (who decides and the code are not asked)."""
    schema = spec_of(kind).form.model_json_schema()
    return fields_from_schema(schema, skip=(*SUBMITTER_FIELDS, CSRF_FIELD, KEY_FIELD))


def progress_fields() -> list[FieldSpec]:
    """Describe the inputs of a milestone progress report."""
    return [
        FieldSpec(
            name="status",
            label="Status",
            help="In progress: work has started. Done: finished; the case lead verifies it.",
            widget="select",
            type="enum",
            required=True,
            options=[(MilestoneStatus.ACTIVE.value, "in progress"), ("done", "done")],
        ),
        FieldSpec(
            name="note",
            label="Note",
            help="What was done. Refer to people by pseudonym (P-01); no names or contacts.",
            widget="textarea",
            type="string",
            required=False,
            max_length=MAX_NOTE,
        ),
        FieldSpec(
            name="evidence",
            label="Evidence references (one per line)",
            help="References to where the evidence is kept, e.g. doc:receipt-17.",
            widget="lines",
            type="string_list",
            required=False,
            max_items=MAX_EVIDENCE,
        ),
    ]


# --- reading what was typed ----------------------------------------------------------------------


def submitted_values(fields: list[FieldSpec], form: FormData) -> dict[str, str | list[str]]:
    """Return what was typed into each field, to show the form again as it was."""
    return {
        f.name: list(form.get(f.name, [])) if f.widget == "checkboxes" else first(form, f.name)
        for f in fields
    }


def parse_values(fields: list[FieldSpec], form: FormData) -> dict[str, Any]:
    """Turn the form's strings into values for the decision's model; empty fields are left out."""
    values: dict[str, Any] = {}
    for f in fields:
        if f.type == "enum_list":
            values[f.name] = [v for v in form.get(f.name, []) if v]
            continue
        text = first(form, f.name).replace("\r\n", "\n")
        if f.type == "string_list":
            values[f.name] = _lines(text)
        elif f.type == "boolean":
            if text in ("yes", "no"):
                values[f.name] = text == "yes"
            elif text:
                values[f.name] = text  # the model explains what is wrong with it
        elif f.type in ("integer", "number", "enum"):
            if text.strip():
                values[f.name] = text.strip()
        else:
            values[f.name] = text.strip()
    return values


def checked_decision(kind: DecisionKind, form: FormData, *, approver: str, code: str) -> BaseModel:
    """Check a submitted decision form against its model, or raise FormProblemsError."""
    values = parse_values(decision_fields(kind), form)
    submission = {**values, "approver": approver, "approval_code": code}
    try:
        return spec_of(kind).form.model_validate(submission)
    except ValidationError as exc:
        raise FormProblemsError(explain(exc)) from None


@dataclass(frozen=True)
class ProgressReport:
    """A milestone progress report as checked from the page's form."""

    status: MilestoneStatus
    note: str
    evidence: list[str]


def parse_progress(form: FormData) -> ProgressReport:
    """Read a progress report from the form, or raise FormProblemsError."""
    problems = []
    status = first(form, "status")
    if status not in (MilestoneStatus.ACTIVE.value, MilestoneStatus.DONE.value):
        problems.append("status: choose in progress or done")
    note = first(form, "note").replace("\r\n", "\n").strip()
    if len(note) > MAX_NOTE:
        problems.append(f"note: text is too long ({len(note)} characters; the limit is {MAX_NOTE})")
    evidence = _lines(first(form, "evidence"))
    if len(evidence) > MAX_EVIDENCE:
        problems.append(f"evidence: has too many items (the limit is {MAX_EVIDENCE})")
    if any(len(e) > MAX_EVIDENCE_REF for e in evidence):
        problems.append(
            f"evidence: a reference is too long (the limit is {MAX_EVIDENCE_REF} characters)"
        )
    if problems:
        raise FormProblemsError(problems)
    return ProgressReport(MilestoneStatus(status), note, evidence)
