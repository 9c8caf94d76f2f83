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

from notifications.markdown import md_text
from tasks.markdown import md_text as md_text_of_tasks

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


def test_the_describers_still_find_md_text_where_they_import_it() -> None:
    assert md_text_of_tasks is md_text


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


# --- chat messages: the templates quote what people typed through `|typed` -----------------------

# what a person typed and a message may quote (a site, a title, a reason, a key, a narrative)
TYPED_KEYS = ("site", "country", "title", "milestone", "verification_method", "reason", "approver")


def _chat_context(value: str) -> dict[str, object]:
    from tasks.drain import BASE_CONTEXT

    context: dict[str, object] = {**BASE_CONTEXT, **dict.fromkeys(TYPED_KEYS, value)}
    context.update(
        case_ref="RC-2026-0001",
        kind="screening",
        outcome="accepted",
        closure_type="remediated",
        due_on="2027-01-15",
        due_at=None,
        acknowledge_by=None,
        severity="high",
        mineral="tin",
        source_type="ngo",
        persons_reported=2,
        plan_version=1,
        root_causes=["recruitment_fees"],
        visibility="narrative",
        narrative={"description": value, "persons": [{"pseudonym": value, "age_band": "adult"}]},
        expires_at="2027-01-15T09:00:00+00:00",
        code="ABCD2345",
        code_by="chat",
        enrol_link=None,
    )
    return context


def _events() -> list[str]:
    from notifications.render import TEMPLATES

    return sorted(p.stem for p in (TEMPLATES / "messages").glob("*.j2") if p.stem[0] != "_")


def _markup(body: str) -> list[str]:
    """The Markdown structure of a message: every token but the text in it, and autolinks."""
    tokens = MD.parse(body)
    found = [f"{t.type}:{t.tag}" for t in tokens if t.type != "inline"]
    found += [c.type for t in tokens for c in (t.children or []) if c.type != "text"]
    found += re.findall(r"(?<!\\)://|(?i:\bwww\.)|(?<![\\])@", body)
    return found


@pytest.mark.parametrize("event", _events())
@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
def test_no_chat_message_makes_markup_of_what_people_typed(event: str, value: str) -> None:
    from models.enums import Locale
    from notifications.render import render

    for locale in Locale:
        plain = render(event, fmt="md", locale=locale, context=_chat_context("typed text"))
        body = render(event, fmt="md", locale=locale, context=_chat_context(value)).body
        # whatever was typed, the message has our markup and no more: no link, image, code,
        # emphasis, HTML, heading or list of the typed text's own
        assert _markup(body) == _markup(plain.body), body


def test_typed_text_is_left_alone_outside_markdown() -> None:
    from models.enums import Locale
    from notifications.render import render

    title = HOSTILE["link"] + " & <b>"
    context = _chat_context(title)
    text = render("milestone_verified", fmt="text", locale=Locale.EN, context=context).body
    html = render("milestone_verified", fmt="html", locale=Locale.EN, context=context).body
    assert f"was verified: {title}." in text  # plain text: as typed
    assert "[Session expired - sign in](https://evil.example/login) &amp; &lt;b&gt;" in html


def test_a_fact_in_chat_is_escaped_by_the_format_itself() -> None:
    from markupsafe import Markup

    from notifications.render import environment

    template = environment().from_string(
        '{% import "fmt/md.j2" as f %}{{ f.facts([("Site", site), ("Due", none)]) }}'
    )
    body = Markup(template.render(site=HOSTILE["link"])).unescape()  # as render() finishes

    assert body.startswith("- **Site**: ") and "Due" not in body
    assert body.removeprefix("- **Site**: ").strip() == md_text(HOSTILE["link"])
