"""The public report page's logic: the page's language, reading its form into a `ReportIn`, the
problems to show next to the fields, the honeypot, the size checks and the forms' CSRF tokens.

Everything a person may see is an English message id (`Problem.msgid`); the web layer translates it
into the page's language (flows/web/locales/). Nothing here stores anything: a form with problems
is answered with the form again, and only a clean `ReportIn` goes on to be filed.

The public forms have no link to bind a CSRF token to, so their token is a signed timestamp: the
time the form was shown and an HMAC of it and the form's name under a key derived from the vault.
It proves the form came from this page within `TOKEN_LIFETIME` (so a script must fetch the form
before posting, and a cross-site page cannot make a reporter's browser post a prepared form).
There is no session or cookie to protect: the receipt code travels in the form itself.
"""

from __future__ import annotations

import dataclasses
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from pydantic import ValidationError

from models.enums import Channel, Mineral, SourceType
from models.intake import ReportIn
from tasks.store.vault import get_vault
from tasks.web.forms import FormData, first

LANGUAGES = ("en", "fr", "es", "sw")
DEFAULT_LANGUAGE = "en"

CSRF_FIELD = "csrf"
LANG_FIELD = "lang"
HONEYPOT_FIELD = "website"  # a field bots fill and people never see; its label says leave empty
CSRF_INFO = b"remedy public pages csrf v1"
TOKEN_LIFETIME = timedelta(hours=6)  # a reporter may take their time writing
TOKEN_SKEW = timedelta(minutes=2)

MAX_BODY_BYTES = 96 * 1024  # the longest description, percent-encoded, fits with room to spare
TEXT_LIMIT = 8_000  # what happened (the schema allows 20,000; the page asks for less)
SITE_LIMIT = 200
NAME_LIMIT = 200
CONTACT_LIMIT = 300
MESSAGE_LIMIT = 5_000  # a reporter's message (the reporter store refuses longer ones too)
CODE_LIMIT = 100  # a receipt code as typed, spaces and dashes included
PERSONS_LIMIT = 1_000_000

# Countries of the list, by ISO 3166-1 alpha-2 code: where the minerals of the policy are mined
# or traded by hand, and the company's sourcing regions. Names are translated in the catalogs.
COUNTRIES: dict[str, str] = {
    "AO": "Angola",
    "AR": "Argentina",
    "BF": "Burkina Faso",
    "BI": "Burundi",
    "BO": "Bolivia",
    "BR": "Brazil",
    "CD": "Democratic Republic of the Congo",
    "CF": "Central African Republic",
    "CG": "Republic of the Congo",
    "CI": "Côte d'Ivoire",
    "CL": "Chile",
    "CN": "China",
    "CO": "Colombia",
    "EC": "Ecuador",
    "ET": "Ethiopia",
    "GH": "Ghana",
    "GN": "Guinea",
    "ID": "Indonesia",
    "IN": "India",
    "KE": "Kenya",
    "MG": "Madagascar",
    "ML": "Mali",
    "MM": "Myanmar",
    "MX": "Mexico",
    "MY": "Malaysia",
    "MZ": "Mozambique",
    "NE": "Niger",
    "NG": "Nigeria",
    "PE": "Peru",
    "PH": "Philippines",
    "RW": "Rwanda",
    "SD": "Sudan",
    "SL": "Sierra Leone",
    "SS": "South Sudan",
    "TZ": "Tanzania",
    "UG": "Uganda",
    "VE": "Venezuela",
    "ZA": "South Africa",
    "ZM": "Zambia",
    "ZW": "Zimbabwe",
}

# who is reporting, as the page asks it, and the schema's source type for each answer
SOURCES: dict[str, tuple[SourceType, str]] = {
    "worker": (SourceType.WORKER, "I work there, or worked there"),
    "relative": (
        SourceType.THIRD_PARTY,
        "A family member, friend or colleague of someone affected",
    ),
    "ngo": (SourceType.NGO, "An organisation that helps people (NGO)"),
    "union": (SourceType.TRADE_UNION, "A trade union"),
    "other": (SourceType.OTHER, "Someone else"),
}

MINERALS: dict[str, str] = {
    "unknown": "I don't know",
    Mineral.GOLD.value: "Gold",
    Mineral.COBALT.value: "Cobalt",
    Mineral.COPPER.value: "Copper",
    Mineral.TIN.value: "Tin",
    Mineral.TANTALUM.value: "Tantalum (coltan)",
    Mineral.TUNGSTEN.value: "Tungsten",
    Mineral.LITHIUM.value: "Lithium",
    Mineral.MICA.value: "Mica",
    Mineral.NICKEL.value: "Nickel",
    Mineral.OTHER.value: "Another mineral",
}

CHILDREN: dict[str, str] = {
    "no": "No, only adults",
    "yes": "Yes, children under 18 are affected",
    "unknown": "I don't know",
}
DANGER: dict[str, str] = {"yes": "Yes", "no": "No", "unknown": "I don't know"}
REPLY: dict[str, str] = {
    "page": "Only on the follow-up page, with the code you will get. You stay anonymous.",
    "contact": "Also by e-mail or phone. Give your contact below.",
}
# The first line of the stored description when the reporter says someone is in danger now:
# the schema has no field for it, and the case team reads the description first.
DANGER_LINE = {
    "yes": "[Reported on the report page: someone is in danger now.]",
    "unknown": "[Reported on the report page: the reporter does not know whether someone is in "
    "danger now.]",
}

# the problems a person can see, as English message ids (translated by the web layer)
REQUIRED = "Answer this question."
TOO_LONG = "This is too long. Shorten it to at most %(limit)s characters."
NOT_A_CHOICE = "Choose one of the answers."
BAD_DATE = "Write the date as year-month-day, for example 2026-03-15, or leave it empty."
FUTURE_DATE = "This date is in the future. Give the date it happened, or leave it empty."
BAD_NUMBER = "Write a number, for example 12, or leave it empty."
ANONYMOUS_CONTACT = (
    "You chose to stay anonymous. Leave your name and contact empty, or choose to be answered by "
    "e-mail or phone."
)
CONTACT_MISSING = "Give an e-mail address or phone number, or choose the follow-up page only."
CONSENT_MISSING = (
    "Tick this box to let the case team contact you, or choose the follow-up page only."
)
HONEYPOT_FILLED = "Leave this field empty."
CHECK_ANSWER = "Check this answer."
STALE_FORM = (
    "This page was open for a long time, or it did not come from this site. Check your answers "
    "and send them again."
)
SAVE_FAILED = (
    "Your report could not be saved because of a problem on our side. Your answers are still "
    "here: send them again in a few minutes."
)
CODE_MISSING = "Type the receipt code you were given."
CODE_UNKNOWN = "We found no report with this code. Check the code and try again."
MESSAGE_MISSING = "Write your message."

MESSAGES = (
    REQUIRED,
    TOO_LONG,
    NOT_A_CHOICE,
    BAD_DATE,
    FUTURE_DATE,
    BAD_NUMBER,
    ANONYMOUS_CONTACT,
    CONTACT_MISSING,
    CONSENT_MISSING,
    HONEYPOT_FILLED,
    CHECK_ANSWER,
    STALE_FORM,
    SAVE_FAILED,
    CODE_MISSING,
    CODE_UNKNOWN,
    MESSAGE_MISSING,
)

# the report form's fields, in the page's order (the error summary lists problems in this order)
REPORT_FIELDS = (
    "what",
    "country",
    "site",
    "when",
    "who",
    "persons",
    "children",
    "danger",
    "mineral",
    "reply",
    "name",
    "contact",
    "contact_ok",
    HONEYPOT_FIELD,
)
# where the schema's own complaints belong on the page
_SCHEMA_FIELDS = {
    "description": "what",
    "location": "country",
    "location.country": "country",
    "location.site": "site",
    "occurred_on": "when",
    "source_type": "who",
    "persons_reported": "persons",
    "affected_persons": "children",
    "mineral": "mineral",
    "reporter": "contact",
    "reporter.name": "name",
    "reporter.contact": "contact",
    "language": "what",
}


@dataclass(frozen=True)
class Problem:
    """What to correct in one field ("" for the form as a whole), as an English message id."""

    field: str
    msgid: str
    params: Mapping[str, int] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class ReportForm:
    """A report form as read: the report to file (None if there are problems) and the problems."""

    report: ReportIn | None
    contact_ok: bool
    problems: list[Problem]
    values: dict[str, str]  # what was typed, to show the form again as it was


# --- the page's language -------------------------------------------------------------------------


def page_language(chosen: str | None, accept_language: str | None) -> str:
    """Return the page's language: the reporter's choice if it is one of ours, else the browser's
    most preferred one of ours (Accept-Language, by q-value), else English."""
    if chosen:
        tag = chosen.strip().lower()[:8]
        if tag in LANGUAGES:
            return tag
    best, best_q = DEFAULT_LANGUAGE, 0.0
    for position, part in enumerate((accept_language or "").split(",")[:20]):
        pieces = part.strip().split(";")
        tag = pieces[0].strip().lower().split("-")[0]
        q = 1.0
        for param in pieces[1:]:
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        q -= position * 1e-6  # equal q-values: the first listed wins
        if tag in LANGUAGES and q > best_q:
            best, best_q = tag, q
    return best


# --- CSRF tokens of the public forms -------------------------------------------------------------


def public_csrf_token(form_name: str, now: datetime) -> str:
    """Return the token of a public form shown now: `<unix time>.<HMAC of it and the form>`."""
    issued = int(now.timestamp())
    return f"{issued}.{_sign(form_name, issued)}"


def public_csrf_ok(given: str, form_name: str, now: datetime) -> bool:
    """Tell whether a form's token was made here, for this form, within its lifetime."""
    issued_text, _, signature = given.partition(".")
    if not issued_text.isdigit() or len(issued_text) > 12 or not signature:
        return False
    issued = int(issued_text)
    if not hmac.compare_digest(signature.encode(), _sign(form_name, issued).encode()):
        return False
    age = now - datetime.fromtimestamp(issued, tz=now.tzinfo)
    return -TOKEN_SKEW <= age <= TOKEN_LIFETIME


def _sign(form_name: str, issued: int) -> str:
    key = get_vault().derive(CSRF_INFO)
    return hmac.new(key, f"{form_name}|{issued}".encode(), "sha256").hexdigest()[:40]


# --- the report form -----------------------------------------------------------------------------


def read_report(form: FormData, *, language: str, now: datetime) -> ReportForm:
    """Read the report form into a `ReportIn` validated by the intake schema, or the problems.

    A filled honeypot is a problem like any other (the form comes back asking to leave it
    empty): a person who filled it by mistake can still file, and nothing is stored either way.
    """
    values = {name: first(form, name).strip() for name in REPORT_FIELDS}
    values["contact_ok"] = "yes" if first(form, "contact_ok") else ""
    problems: list[Problem] = []

    def need(name: str, limit: int | None = None, *, required: bool = False) -> str:
        text = values[name]
        if required and not text:
            problems.append(Problem(name, REQUIRED))
        elif limit is not None and len(text) > limit:
            problems.append(Problem(name, TOO_LONG, {"limit": limit}))
        return text

    def choice(name: str, options: Mapping[str, object], *, required: bool = True) -> str | None:
        text = values[name]
        if not text:
            if required:
                problems.append(Problem(name, REQUIRED))
            return None
        if text not in options:
            problems.append(Problem(name, NOT_A_CHOICE))
            return None
        return text

    what = need("what", TEXT_LIMIT, required=True)
    country = choice("country", COUNTRIES)
    site = need("site", SITE_LIMIT)
    occurred_on = _date(values["when"], now, problems)
    who = choice("who", SOURCES)
    persons = _count(values["persons"], problems)
    children = choice("children", CHILDREN, required=False)
    danger = choice("danger", DANGER)
    mineral = choice("mineral", MINERALS, required=False) or "unknown"
    reply = choice("reply", REPLY)
    name = need("name", NAME_LIMIT)
    contact = need("contact", CONTACT_LIMIT)
    contact_ok = values["contact_ok"] == "yes"
    if reply == "page" and (name or contact):
        problems.append(Problem("contact", ANONYMOUS_CONTACT))
    elif reply == "contact":
        if not contact:
            problems.append(Problem("contact", CONTACT_MISSING))
        if not contact_ok:
            problems.append(Problem("contact_ok", CONSENT_MISSING))
    if values[HONEYPOT_FIELD]:
        problems.append(Problem(HONEYPOT_FIELD, HONEYPOT_FILLED))
    if problems:
        return ReportForm(None, contact_ok, _ordered(problems), values)

    assert country is not None and who is not None and danger is not None and reply is not None
    description = what if danger not in DANGER_LINE else f"{DANGER_LINE[danger]}\n\n{what}"
    data: dict[str, object] = {
        "received_at": now,
        "source_type": SOURCES[who][0],
        "channel": Channel.WEB_FORM,
        "anonymous": reply == "page",
        "language": language,
        "occurred_on": occurred_on,
        "location": {"country": country, "site": site or None},
        "mineral": Mineral.OTHER if mineral == "unknown" else Mineral(mineral),
        "description": description,
        "persons_reported": persons,
    }
    if children == "yes":
        # one pseudonymous person who is a minor: the policy weighs minors (no identity is asked)
        data["affected_persons"] = [{"minor": True}]
        data["persons_reported"] = max(persons or 1, 1)
    if reply == "contact":
        data["reporter"] = {"name": name or None, "contact": contact}
    try:
        report = ReportIn.model_validate(data, context={"now": now})
    except ValidationError as exc:
        return ReportForm(None, contact_ok, _schema_problems(exc), values)
    return ReportForm(report, contact_ok and reply == "contact", [], values)


def _date(text: str, now: datetime, problems: list[Problem]) -> date | None:
    if not text:
        return None
    try:
        day = date.fromisoformat(text) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) else None
    except ValueError:
        day = None
    if day is None:
        problems.append(Problem("when", BAD_DATE))
    elif day > now.date():
        problems.append(Problem("when", FUTURE_DATE))
        return None
    return day


def _count(text: str, problems: list[Problem]) -> int | None:
    if not text:
        return None
    if not text.isdigit() or len(text) > 7 or not 1 <= int(text) <= PERSONS_LIMIT:
        problems.append(Problem("persons", BAD_NUMBER))
        return None
    return int(text)


def _schema_problems(exc: ValidationError) -> list[Problem]:
    """Place the intake schema's complaints next to the fields (never echoing what was typed)."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = [str(part) for part in error["loc"] if not isinstance(part, int)]
        name = _SCHEMA_FIELDS.get(".".join(loc)) or _SCHEMA_FIELDS.get(loc[0] if loc else "", "")
        limit = (error.get("ctx") or {}).get("max_length")
        if error["type"] == "string_too_long" and isinstance(limit, int):
            problems.append(Problem(name, TOO_LONG, {"limit": limit}))
        elif "future" in str(error.get("msg", "")):
            problems.append(Problem(name or "when", FUTURE_DATE))
        else:
            problems.append(Problem(name, CHECK_ANSWER))
    return _ordered(problems)


def _ordered(problems: list[Problem]) -> list[Problem]:
    order = {name: i for i, name in enumerate(("", *REPORT_FIELDS))}
    return sorted(problems, key=lambda p: order.get(p.field, len(order)))


# --- the follow-up forms -------------------------------------------------------------------------


def read_code(form: FormData) -> tuple[str | None, Problem | None]:
    """Return the receipt code as typed (bounded), or the problem to show."""
    code = first(form, "code").strip()
    if not code:
        return None, Problem("code", CODE_MISSING)
    if len(code) > CODE_LIMIT:
        return None, Problem("code", CODE_UNKNOWN)  # no code of ours is that long
    return code, None


def read_message(form: FormData) -> tuple[str, Problem | None]:
    """Return the reporter's message as typed, and the problem to show if it cannot be sent."""
    text = first(form, "message").replace("\x00", "").strip()
    if not text:
        return text, Problem("message", MESSAGE_MISSING)
    if len(text) > MESSAGE_LIMIT:
        return text[: MESSAGE_LIMIT * 2], Problem("message", TOO_LONG, {"limit": MESSAGE_LIMIT})
    return text, None
