"""Stored text put into Markdown stays text: no links, images, emphasis, code, HTML or new blocks.

Each case is rendered the way the approval page renders a decision (CommonMark with tables, HTML
off); the property test does so for any text. Bare URLs, `www.` and e-mail addresses are checked on
the escaped source, since the Prefect UI's renderer turns them into links (GFM autolinks).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from markdown_it.token import Token

from tasks.markdown import md_text

MD = MarkdownIt("commonmark", {"html": False}).enable("table")  # the page's renderer


def inline_tokens(markdown: str) -> list[Token]:
    """The inline tokens of a one-paragraph document (fails if it is not one paragraph)."""
    blocks = MD.parse(markdown)
    assert [t.type for t in blocks] == ["paragraph_open", "inline", "paragraph_close"], markdown
    return blocks[1].children or []


def shown_as(value: str) -> str:
    """What a reader sees of md_text(value) in a sentence; fails on anything but plain text."""
    children = inline_tokens(f"Where: {md_text(value)}; mineral: tin")
    assert {t.type for t in children} <= {"text"}, [t.type for t in children]
    text = "".join(t.content for t in children)
    assert text.startswith("Where: ") and text.endswith("; mineral: tin")
    return text.removeprefix("Where: ").removesuffix("; mineral: tin")


def unlinkable(escaped: str) -> bool:
    """No GFM autolink can start in the escaped source: no bare scheme, www. or e-mail."""
    return not re.search(r"(?<!\\)://|(?i:\bwww\.)|(?<!\\)@", escaped)


HOSTILE = {
    "link": "[Session expired - sign in](https://evil.example/login)",
    "image": "![logo](https://evil.example/pixel.png)",
    "reference": "[sign in][1]",
    "autolink": "<https://evil.example/login>",
    "email-autolink": "<lena@evil.example>",
    "bare-url": "see https://evil.example/login now",
    "www": "see www.evil.example now",
    "email": "write to lena@evil.example",
    "html": '<a href="https://evil.example">sign in</a><script>alert(1)</script>',
    "entity": "fees &amp; more &#91;x&#93;",
    "emphasis": "**urgent** and _now_ and *here*",
    "strikethrough": "~~cancelled~~",
    "code": "`rm -rf` and ``double``",
    "backslash": "C:\\sites\\nyabibwe\\",
    "newlines": "line one\n\n# heading\r\n- item\n[1]: https://evil.example",
    "hard-break": "two spaces  \nthen more",
}


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_text_is_shown_as_typed_and_links_nothing(value: str) -> None:
    escaped = md_text(value)

    assert shown_as(value) == " ".join(value.split())
    assert unlinkable(escaped), escaped
    assert "<" not in escaped and ">" not in escaped and "\n" not in escaped


def test_ordinary_text_stays_readable() -> None:
    assert md_text("Artisanal tin site near Nyabibwe (South Kivu)") == (
        "Artisanal tin site near Nyabibwe (South Kivu)"
    )
    assert md_text("lena.lead") == "lena.lead"
    assert md_text("P-01") == "P-01"
    assert md_text("recruitment_fees") == "recruitment_fees"  # intraword: never emphasis
    assert md_text(42) == "42" and md_text(None) == "None"


BLOCK_STARTS = ["# heading", "- item", "+ item", "* item", "1. item", "12) item", "> quote", "---"]


@pytest.mark.parametrize("value", BLOCK_STARTS)
def test_text_at_the_start_of_a_line_opens_no_block(value: str) -> None:
    children = inline_tokens(md_text(value))
    assert {t.type for t in children} == {"text"}
    assert "".join(t.content for t in children) == value


def test_a_pipe_stays_inside_its_table_cell() -> None:
    title = "Pay back | the fees [here](https://evil.example)"
    table = "\n".join(
        [
            "| key | action | owner |",
            "|---|---|---|",
            f"| {md_text('fee-refund')} | {md_text(title)} | {md_text('lena.lead')} |",
        ]
    )
    tokens = MD.parse(table)
    cells = [tokens[i + 1] for i, t in enumerate(tokens) if t.type == "td_open"]
    assert ["".join(c.content for c in (cell.children or [])) for cell in cells] == [
        "fee-refund",
        title,
        "lena.lead",
    ]
    assert not any(c.type == "link_open" for t in tokens for c in (t.children or []))


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")))
def test_any_text_is_shown_as_typed(value: str) -> None:
    if not value.split():
        assert md_text(value) == ""
        return
    assert shown_as(value) == " ".join(value.split())
    assert unlinkable(md_text(value))
