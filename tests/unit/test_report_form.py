"""The public report page's logic below the web layer: the form read into the intake schema, the
problems placed next to the fields, the honeypot, the page's language, the forms' CSRF tokens, and
a translation of every string the public pages show in each of their languages.
"""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from jinja2 import Environment
from jinja2.ext import extract_from_ast

from flows.web import report as web_report
from models.enums import Channel, Mineral, SourceType
from models.iso3166 import is_country_code
from tasks.web import report_form as rf
from tasks.web.report_form import (
    ANONYMOUS_CONTACT,
    BAD_DATE,
    BAD_NUMBER,
    CHECK_ANSWER,
    CODE_MISSING,
    CODE_UNKNOWN,
    CONSENT_MISSING,
    CONTACT_MISSING,
    DANGER_LINE,
    FUTURE_DATE,
    HONEYPOT_FIELD,
    HONEYPOT_FILLED,
    MESSAGE_LIMIT,
    MESSAGE_MISSING,
    NOT_A_CHOICE,
    REQUIRED,
    TEXT_LIMIT,
    TOKEN_LIFETIME,
    TOO_LONG,
    Problem,
    page_language,
    public_csrf_ok,
    public_csrf_token,
    read_code,
    read_message,
    read_report,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "flows" / "web" / "templates"
PUBLIC_TEMPLATES = ("public_base", "report", "follow_up")  # name prefixes of the public pages


def answers(**changes: str) -> dict[str, list[str]]:
    """A complete anonymous report as the form posts it, with some answers changed."""
    form = {
        "what": "The supervisor keeps our identity cards and we are not paid.",
        "country": "CD",
        "site": "Kamituga",
        "when": "2026-05-20",
        "who": "worker",
        "persons": "12",
        "children": "no",
        "danger": "no",
        "mineral": "gold",
        "reply": "page",
        "name": "",
        "contact": "",
        HONEYPOT_FIELD: "",
    }
    form.update(changes)
    return {name: [value] for name, value in form.items()}


def problems_of(**changes: str) -> dict[str, str]:
    read = read_report(answers(**changes), language="en", now=NOW)
    assert read.report is None
    return {p.field: p.msgid for p in read.problems}


# --- the form read into the intake schema --------------------------------------------------------


def test_a_complete_anonymous_answer_is_a_web_form_report_in_the_pages_language() -> None:
    read = read_report(answers(), language="sw", now=NOW)
    assert read.problems == [] and read.report is not None
    report = read.report
    assert report.channel == Channel.WEB_FORM and report.source_type == SourceType.WORKER
    assert report.anonymous and report.reporter is None and not read.contact_ok
    assert report.language == "sw" and report.received_at == NOW
    assert report.location.country == "CD" and report.location.site == "Kamituga"
    assert report.occurred_on == date(2026, 5, 20) and report.mineral == Mineral.GOLD
    assert report.persons_reported == 12 and report.affected_persons == []
    assert report.description == "The supervisor keeps our identity cards and we are not paid."


@pytest.mark.parametrize(
    ("who", "source"),
    [
        ("worker", SourceType.WORKER),
        ("relative", SourceType.THIRD_PARTY),
        ("ngo", SourceType.NGO),
        ("union", SourceType.TRADE_UNION),
        ("other", SourceType.OTHER),
    ],
)
def test_who_reports_maps_to_the_schemas_source_type(who: str, source: SourceType) -> None:
    report = read_report(answers(who=who), language="en", now=NOW).report
    assert report is not None and report.source_type == source


def test_optional_answers_left_empty_and_an_unknown_mineral() -> None:
    read = read_report(
        answers(site="", when="", persons="", children="", mineral=""), language="fr", now=NOW
    )
    report = read.report
    assert report is not None, read.problems
    assert report.location.site is None and report.occurred_on is None
    assert report.persons_reported is None and report.mineral == Mineral.OTHER
    unknown = read_report(answers(mineral="unknown"), language="fr", now=NOW).report
    assert unknown is not None and unknown.mineral == Mineral.OTHER


def test_children_affected_make_a_pseudonymous_minor_and_danger_heads_the_description() -> None:
    report = read_report(
        answers(children="yes", danger="yes", persons=""), language="en", now=NOW
    ).report
    assert report is not None
    assert report.minors_involved and report.persons_reported == 1
    assert [p.identity for p in report.affected_persons] == [None]
    assert report.description.startswith(DANGER_LINE["yes"] + "\n\n")
    unsure = read_report(answers(danger="unknown"), language="en", now=NOW).report
    assert unsure is not None and unsure.description.startswith(DANGER_LINE["unknown"])


def test_a_reporter_who_wants_an_answer_gives_a_contact_and_agrees() -> None:
    form = answers(reply="contact", name="Amani", contact="amani@example.org")
    form["contact_ok"] = ["yes"]
    read = read_report(form, language="en", now=NOW)
    assert read.report is not None and read.contact_ok
    assert not read.report.anonymous and read.report.reporter is not None
    assert read.report.reporter.contact == "amani@example.org"
    assert read.report.reporter.name == "Amani"


def test_missing_answers_are_problems_in_the_pages_order_and_nothing_is_made() -> None:
    read = read_report({}, language="en", now=NOW)
    assert read.report is None
    assert [(p.field, p.msgid) for p in read.problems] == [
        ("what", REQUIRED),
        ("country", REQUIRED),
        ("who", REQUIRED),
        ("danger", REQUIRED),
        ("reply", REQUIRED),
    ]


def test_the_answers_that_break_a_rule_are_problems_next_to_their_field() -> None:
    assert problems_of(country="XX", who="boss", danger="maybe") == {
        "country": NOT_A_CHOICE,
        "who": NOT_A_CHOICE,
        "danger": NOT_A_CHOICE,
    }
    assert problems_of(when="20 May 2026") == {"when": BAD_DATE}
    assert problems_of(when="2026-02-30") == {"when": BAD_DATE}
    tomorrow = (NOW + timedelta(days=1)).date().isoformat()
    assert problems_of(when=tomorrow) == {"when": FUTURE_DATE}
    assert problems_of(persons="twelve") == {"persons": BAD_NUMBER}
    assert problems_of(persons="0") == {"persons": BAD_NUMBER}


def test_a_text_too_long_is_refused_with_its_limit() -> None:
    read = read_report(answers(what="x" * (TEXT_LIMIT + 1)), language="en", now=NOW)
    assert read.report is None
    assert read.problems == [Problem("what", TOO_LONG, {"limit": TEXT_LIMIT})]
    assert read_report(answers(what="x" * TEXT_LIMIT), language="en", now=NOW).report


def test_anonymous_means_no_name_or_contact_and_contact_means_consent() -> None:
    assert problems_of(name="Amani") == {"contact": ANONYMOUS_CONTACT}
    assert problems_of(reply="contact") == {
        "contact": CONTACT_MISSING,
        "contact_ok": CONSENT_MISSING,
    }
    assert problems_of(reply="contact", contact="+243 81 000 0000") == {
        "contact_ok": CONSENT_MISSING
    }


def test_a_filled_honeypot_is_refused_even_when_everything_else_is_right() -> None:
    assert problems_of(**{HONEYPOT_FIELD: "http://spam.example"}) == {
        HONEYPOT_FIELD: HONEYPOT_FILLED
    }


def test_the_schemas_own_refusals_are_placed_next_to_the_field_without_the_text() -> None:
    # a NUL character passes the page's checks and is refused by the intake schema itself
    read = read_report(answers(what="secret name\x00"), language="en", now=NOW)
    assert read.report is None
    assert read.problems == [Problem("what", CHECK_ANSWER)]
    assert "secret" not in repr(read.problems)


def test_what_was_typed_is_kept_to_show_the_form_again() -> None:
    read = read_report(answers(country="XX", site="  Kamituga  "), language="en", now=NOW)
    assert read.values["site"] == "Kamituga" and read.values["country"] == "XX"
    assert read.values["what"].startswith("The supervisor")


def test_every_country_of_the_list_is_an_iso_code() -> None:
    assert all(is_country_code(code) for code in rf.COUNTRIES)


# --- the page's language -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chosen", "accept", "expected"),
    [
        ("fr", "sw", "fr"),
        ("SW", None, "sw"),
        ("de", "es-PE,es;q=0.9,en;q=0.5", "es"),
        (None, "de-DE,de;q=0.9,sw;q=0.8,fr;q=0.7", "sw"),
        (None, "fr;q=0.4, es;q=0.6", "es"),
        (None, "fr, es", "fr"),
        (None, "de, zh;q=0.5", "en"),
        (None, "fr;q=nonsense", "en"),
        (None, None, "en"),
    ],
)
def test_the_pages_language(chosen: str | None, accept: str | None, expected: str) -> None:
    assert page_language(chosen, accept) == expected


# --- CSRF tokens ---------------------------------------------------------------------------------


def test_a_public_forms_token_is_good_for_its_form_within_its_lifetime() -> None:
    token = public_csrf_token("report", NOW)
    assert public_csrf_ok(token, "report", NOW + timedelta(minutes=30))
    assert public_csrf_ok(token, "report", NOW + TOKEN_LIFETIME)
    assert not public_csrf_ok(token, "report", NOW + TOKEN_LIFETIME + timedelta(seconds=1))
    assert not public_csrf_ok(token, "report", NOW - timedelta(hours=1))
    assert not public_csrf_ok(token, "follow-up", NOW)


@pytest.mark.parametrize(
    "given", ["", "nonsense", "123", "123.", ".abc", "9" * 13 + ".ab", "-5.abcdef"]
)
def test_a_malformed_token_is_refused(given: str) -> None:
    assert not public_csrf_ok(given, "report", NOW)


def test_a_token_with_a_changed_time_or_signature_is_refused() -> None:
    issued, _, signature = public_csrf_token("report", NOW).partition(".")
    later = str(int(issued) + 3600)
    assert not public_csrf_ok(f"{later}.{signature}", "report", NOW + timedelta(hours=1))
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    assert not public_csrf_ok(f"{issued}.{flipped}", "report", NOW)


# --- the follow-up forms -------------------------------------------------------------------------


def test_a_receipt_code_as_typed() -> None:
    assert read_code({"code": ["  abcd-efgh  "]}) == ("abcd-efgh", None)
    assert read_code({}) == (None, Problem("code", CODE_MISSING))
    assert read_code({"code": ["A" * 101]}) == (None, Problem("code", CODE_UNKNOWN))


def test_a_reporters_message_as_typed() -> None:
    assert read_message({"message": [" Thank you \x00"]}) == ("Thank you", None)
    assert read_message({"message": ["  "]}) == ("", Problem("message", MESSAGE_MISSING))
    text, problem = read_message({"message": ["x" * (MESSAGE_LIMIT + 1)]})
    assert problem == Problem("message", TOO_LONG, {"limit": MESSAGE_LIMIT})
    assert text == "x" * (MESSAGE_LIMIT + 1)  # kept, to be shortened by the reporter


# --- translations --------------------------------------------------------------------------------


def page_strings() -> set[str]:
    """Every English string the public pages show: the templates' `_("...")` and the lists."""
    env = Environment()
    strings: set[str] = set()
    templates = [t for t in TEMPLATES.glob("*.html.j2") if t.name.startswith(PUBLIC_TEMPLATES)]
    assert len(templates) >= 6
    for template in templates:
        tree = env.parse(template.read_text("utf-8"))
        # `_(variable)` yields nothing here: its strings are those of the lists below
        for _line, _function, found in extract_from_ast(tree, ("_",), babel_style=False):
            assert isinstance(found, tuple) and isinstance(found[0], str)
            strings.add(found[0])
    strings.update(rf.COUNTRIES.values(), rf.MINERALS.values(), rf.CHILDREN.values())
    strings.update(rf.DANGER.values(), rf.REPLY.values(), rf.MESSAGES)
    strings.update(label for _type, label in rf.SOURCES.values())
    strings.update(web_report.PYTHON_STRINGS)
    return strings


def placeholders(text: str) -> list[str]:
    return sorted(re.findall(r"%\((\w+)\)s", text))


@pytest.mark.parametrize("language", [lang for lang in rf.LANGUAGES if lang != "en"])
def test_every_page_string_has_a_translation(language: str) -> None:
    path = ROOT / "flows" / "web" / "locales" / f"{language}.toml"
    with path.open("rb") as handle:
        catalog = tomllib.load(handle)["messages"]
    strings = page_strings()
    assert "Report a problem" in strings and "Received" in strings and REQUIRED in strings
    missing = sorted(s for s in strings if not catalog.get(s, "").strip())
    assert missing == [], f"{language}: no translation for {missing}"
    unused = sorted(set(catalog) - strings)
    assert unused == [], f"{language}: translations of strings no page shows: {unused}"
    changed = [s for s in strings if placeholders(s) != placeholders(catalog[s])]
    assert changed == [], f"{language}: placeholders differ in {changed}"


def test_the_translator_falls_back_to_english_and_fills_placeholders() -> None:
    fr = web_report.translator("fr")
    assert fr("Report a problem") == "Signaler un problème"
    assert fr(TOO_LONG, limit=10) == "C'est trop long. Raccourcissez à 10 caractères au plus."
    assert fr("a string no page shows") == "a string no page shows"
    assert web_report.translator("en")(TOO_LONG, limit=5).endswith("at most 5 characters.")
