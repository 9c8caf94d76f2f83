"""A decision form's inputs, described from its JSON schema: one description for every way a person
fills in a form (the approval page renders it as HTML inputs, `remedy decide` prompts for it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Widget = Literal["select", "checkboxes", "lines", "textarea", "number", "text"]


@dataclass
class FieldSpec:
    """One input of the page's form, described from a JSON-schema property."""

    name: str
    label: str
    help: str
    widget: Widget
    type: Literal["string", "boolean", "integer", "number", "enum", "enum_list", "string_list"]
    required: bool
    options: list[tuple[str, str]] = field(default_factory=list)
    default: str | list[str] | None = None
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    max_items: int | None = None
    pattern: str | None = None


def _resolve(spec: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline a property's $ref (directly or as a lone allOf), keeping its own title etc."""
    ref = spec.get("$ref")
    if ref is None and len(spec.get("allOf", [])) == 1:
        ref = spec["allOf"][0].get("$ref")
    if not ref:
        return spec
    target = defs.get(ref.rsplit("/", 1)[-1], {})
    return {**target, **{k: v for k, v in spec.items() if k not in ("$ref", "allOf")}}


def _label(value: str) -> str:
    return value.replace("_", " ")


def _default_text(value: Any) -> str | list[str] | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return [str(v) for v in value]
    return str(value)


def _field(name: str, raw: dict[str, Any], defs: dict[str, Any], required: bool) -> FieldSpec:
    """Describe one property: the widget follows its type, labels follow its title."""
    spec = _resolve(raw, defs)
    # a bare $ref's title is its enum's class name: only the property's own title labels it
    label = raw.get("title") or _label(name).capitalize()
    common: dict[str, Any] = {
        "name": name,
        "label": label,
        "help": raw.get("description", ""),  # an enum's own docstring is not help
        "required": required,
        "default": _default_text(spec.get("default")),
    }
    kind = spec.get("type")
    if "enum" in spec:
        options = [(str(v), _label(str(v))) for v in spec["enum"]]
        return FieldSpec(widget="select", type="enum", options=options, **common)
    if kind == "boolean":
        return FieldSpec(
            widget="select", type="boolean", options=[("yes", "yes"), ("no", "no")], **common
        )
    if kind == "array":
        items = _resolve(spec.get("items", {}), defs)
        if "enum" in items:
            options = [(str(v), _label(str(v))) for v in items["enum"]]
            return FieldSpec(
                widget="checkboxes",
                type="enum_list",
                options=options,
                max_items=spec.get("maxItems"),
                **common,
            )
        return FieldSpec(
            widget="lines", type="string_list", max_items=spec.get("maxItems"), **common
        )
    if kind in ("integer", "number"):
        return FieldSpec(
            widget="number",
            type="integer" if kind == "integer" else "number",
            minimum=spec.get("minimum"),
            maximum=spec.get("maximum"),
            **common,
        )
    limit, pattern = spec.get("maxLength"), spec.get("pattern")
    long_text = pattern is None and (limit is None or limit > 200)
    return FieldSpec(
        widget="textarea" if long_text else "text",
        type="string",
        max_length=limit,
        pattern=pattern,
        **common,
    )


def fields_from_schema(schema: dict[str, Any], *, skip: Sequence[str] = ()) -> list[FieldSpec]:
    """Describe a form's inputs from its JSON schema (enums as selects, lists as checkboxes…)."""
    defs = schema.get("$defs", {})
    required = set(schema.get("required", []))
    return [
        _field(name, raw, defs, name in required)
        for name, raw in schema.get("properties", {}).items()
        if name not in skip
    ]
