"""Reading an operator's TOML file into a validated model, with every problem on its own line.

Pure module: standard library and pydantic only (policy, plan templates and routing use it).
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def load_toml(path: Path, model: type[M], error: Callable[[Path, list[str]], Exception]) -> M:
    """Read, parse and validate a TOML file; raise error(path, problems) if it cannot be used."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(path, ["the file does not exist"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(path, [f"the file cannot be read ({exc})"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(path, [f"not valid TOML: {exc}"]) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # `from None`: the problems are in the message; pydantic's internals would only distract.
        raise error(path, [p for e in exc.errors() for p in problem_lines(e)]) from None


def problem_lines(error: Mapping[str, Any]) -> list[str]:
    """Render one pydantic error as `path.to.field: problem` lines (one per line of message)."""
    path = ""
    for part in error["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "[key]":
            path += f".{part}" if path else str(part)
    if error["type"] == "extra_forbidden":
        message = "unknown key (check the spelling)"
    elif error["type"] == "missing":
        message = "missing"
    else:
        message = str(error["msg"]).removeprefix("Value error, ")
    if "[key]" in error["loc"]:
        message = f"unknown key ({message[0].lower()}{message[1:]})"
    if not path:
        # whole-file checks already name what they are about, one problem a line
        return message.splitlines()
    return [f"{path}: {line}" for line in message.splitlines()]
