"""Reading operator input files (JSON or YAML) safely, and explaining what is wrong with them.

Messages name the field and the problem but never echo the input: a report's text may hold
personal data, and errors end up in terminals and logs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

MAX_INPUT_BYTES = 1024 * 1024

M = TypeVar("M", bound=BaseModel)


class InputError(Exception):
    """An input file or document is not acceptable; `problems` lists each problem on one line."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors and aliases: a 'billion laughs' document cannot expand."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, "YAML aliases (*name) are not accepted", event.start_mark
            )
        return super().compose_node(parent, index)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    # str(exc) quotes the offending line: report only the problem and its position.
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or "not valid YAML"
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    return f"not valid YAML: {problem}{where}"


def parse_document(raw: bytes, *, source: str, fmt: str) -> dict[str, Any]:
    """Decode and parse a JSON or YAML document into a mapping, refusing anything unsafe."""
    if not raw.strip():
        raise InputError(source, ["the file is empty"])
    if len(raw) > MAX_INPUT_BYTES:
        raise InputError(
            source, [f"the file is {len(raw)} bytes; the limit is {MAX_INPUT_BYTES} bytes"]
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            source, [f"the file is not valid UTF-8 (bad byte at offset {exc.start})"]
        ) from None
    try:
        loads = json.loads if fmt == "json" else _load_yaml
        data = loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            source, [f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"]
        ) from None
    except yaml.YAMLError as exc:
        raise InputError(source, [_yaml_problem(exc)]) from None
    except RecursionError:
        raise InputError(source, ["the document is nested too deeply"]) from None
    if data is None:
        raise InputError(source, ["the file is empty"])
    if not isinstance(data, dict):
        raise InputError(source, ["the document must be a mapping of field names to values"])
    return data


def read_document(path: Path) -> dict[str, Any]:
    """Read a .json, .yaml or .yml file into a mapping."""
    source = str(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise InputError(source, ["unsupported file type; use .json, .yaml or .yml"])
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise InputError(source, [f"cannot read the file ({exc.strerror})"]) from None
    return parse_document(raw, source=source, fmt="json" if suffix == ".json" else "yaml")


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(document)"


def explain(exc: ValidationError) -> list[str]:
    """Turn a pydantic error into one line per problem: `field: problem` (no input values)."""
    lines = []
    for err in exc.errors(include_input=True, include_url=False):
        loc = _loc(tuple(p for p in err["loc"] if not str(p).startswith("function-")))
        kind, msg = err["type"], err["msg"]
        if kind == "missing":
            msg = "is required but missing"
        elif kind == "extra_forbidden":
            msg = "is not a known field"
        elif kind == "string_too_long":
            size = len(err["input"]) if isinstance(err.get("input"), str) else "?"
            limit = (err.get("ctx") or {}).get("max_length")
            msg = f"text is too long ({size} characters; the limit is {limit})"
        elif kind == "too_long":
            limit = (err.get("ctx") or {}).get("max_length")
            msg = f"has too many items (the limit is {limit})"
        elif kind.startswith("value_error"):
            msg = msg.removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}")
    return lines


def validate(model: type[M], data: dict[str, Any], *, source: str, **context: Any) -> M:
    """Validate data against a model, raising InputError with one line per problem."""
    try:
        return model.model_validate(data, context=context or None)
    except ValidationError as exc:
        raise InputError(source, explain(exc)) from None
