"""Stored text inside Markdown: shown as typed, never as a link, image, emphasis, code or HTML.

Decisions' descriptions, the case view and chat messages are Markdown, rendered by the approval
page, the Prefect UI, `remedy decide` and chat services; what they quote (a report's site, a
milestone's title, a key) was typed by someone, so a site like
`[Session expired - sign in](https://evil.example/login)` must not become a live link in an
approver's page or chat (docs/architecture.md, the approval page). It lives here, below `tasks`,
because the notification templates use it too (the `typed` filter of notifications/render.py).
"""

from __future__ import annotations

import re

# CommonMark's inline syntax (and GFM's strikethrough), escaped with a backslash wherever it stands
_BACKSLASHED = re.compile(r"[\\`*\[\]~]")
# an underscore between two letters or digits never opens or closes emphasis: left as typed
_LONE_UNDERSCORE = re.compile(r"(?<![^\W_])_|_(?![^\W_])")
# GFM autolinks without angle brackets (the Prefect UI renders them): scheme://, www. and e-mail
_SCHEME = re.compile(r":(?=//)")
_WWW = re.compile(r"(?i)(www)\.")
# a block construct the text would open at the start of a line: heading, list, quote, rule
_BLOCK_START = re.compile(r"^(?:([#+=-])|(\d{1,9})([.)]))")
# HTML-significant characters and the table cell separator, as character references
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "&#124;"}


def md_text(value: object) -> str:
    """Return a value's text for Markdown, on one line, to be read exactly as it was typed."""
    text = " ".join(str(value).replace("\x00", "\ufffd").split())
    text = _BACKSLASHED.sub(lambda m: "\\" + m.group(), text)
    text = _LONE_UNDERSCORE.sub(r"\\_", text)
    text = _SCHEME.sub(r"\\:", text)
    text = _WWW.sub(r"\1\\.", text)
    text = text.replace("@", "\\@")
    text = "".join(_ENTITIES.get(char, char) for char in text)
    return _BLOCK_START.sub(_escape_block_start, text, count=1)


def _escape_block_start(match: re.Match[str]) -> str:
    if match.group(1):
        return "\\" + match.group(1)
    return f"{match.group(2)}\\{match.group(3)}"
