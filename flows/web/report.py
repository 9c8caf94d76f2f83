"""The public report page and the reporter's follow-up page, served by the approval page's app.

Routes: `GET /report` (the form), `POST /report` (files the report; the answer is the receipt,
shown once), `GET /follow-up` (a form for the receipt code), `POST /follow-up` (the status and the
thread for a code typed in the form; the code never appears in an address) and
`POST /follow-up/message` (the reporter's reply). The pages are in English, French, Spanish or
Swahili (the `lang` choice on every page, else the browser's Accept-Language), carry no script,
and weigh a few kilobytes. The app's SecurityHeaders apply to them (no-store, no referrer, no
framing, forms post only here).

Abuse costs little (the app's Throttle covers only the approval links, `/a/` and `/r/`; these
budgets are the public pages' own): each client address may make
`REMEDY_APPROVAL_RATE_PER_MINUTE` requests a minute to these pages, and `POST_BURST` posts at once
then `POSTS_PER_HOUR` an hour (a 429 page with Retry-After beyond, before anything is read); a
form is at most `MAX_BODY_BYTES`; a public form's CSRF token is a signed timestamp
(tasks/web/report_form.py); a filled honeypot field is a plain refusal like any other problem
(nothing stored; a person who filled it by mistake can still send); an unknown and a wrong
receipt code get the same page.
The logic (form to `ReportIn`, problems, tokens) is in tasks/web/report_form.py; the receipts,
the status and the thread in tasks/reporter/receipts.py.
"""

from __future__ import annotations

import logging
import math
import tomllib
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from models.settings import get_settings
from tasks.context import utcnow
from tasks.reporter.receipts import FollowUp, file_report, follow_up, reporter_writes
from tasks.web.forms import FormData, first
from tasks.web.guard import same_origin
from tasks.web.ratelimit import RateLimiter, client_key, trusted_proxies
from tasks.web.report_form import (
    CHILDREN,
    CODE_UNKNOWN,
    COUNTRIES,
    CSRF_FIELD,
    DANGER,
    HONEYPOT_FIELD,
    LANG_FIELD,
    LANGUAGES,
    MAX_BODY_BYTES,
    MESSAGE_LIMIT,
    MINERALS,
    REPLY,
    SAVE_FAILED,
    SITE_LIMIT,
    SOURCES,
    STALE_FORM,
    TEXT_LIMIT,
    TOO_LONG,
    Problem,
    page_language,
    public_csrf_ok,
    public_csrf_token,
    read_code,
    read_message,
    read_report,
)

log = logging.getLogger("remedy.report_page")

TEMPLATES = Path(__file__).parent / "templates"
LOCALES = Path(__file__).parent / "locales"
REPORT_FORM, FOLLOW_UP_FORM = "report", "follow-up"
ACTOR = "report-page"
POST_BURST = 10  # posts one address may make at once to the public forms ...
POSTS_PER_HOUR = 20  # ... and then an hour
LANGUAGE_NAMES = {"en": "English", "fr": "Français", "es": "Español", "sw": "Kiswahili"}

# what the follow-up page says about a status and a closure (English message ids)
STATUS_TEXT = {
    "received": ("Received", "Your report has arrived. The case team will look at it soon."),
    "being_verified": (
        "Being verified",
        "The case team is checking what your report says.",
    ),
    "planning": (
        "Remedy being planned",
        "The case team is deciding how to help the people affected and is planning it.",
    ),
    "under_way": ("Remedy under way", "The help that was planned is being given."),
    "closed": ("Closed", "The case team has finished its work on this report."),
}
CLOSED_TEXT = {
    "remedy_delivered": "The planned help was given to the people affected.",
    "not_substantiated": "The case team could not confirm what the report says.",
    "duplicate": "The same facts were already reported. They are handled with the earlier report.",
    "referred_elsewhere": "The report was passed on to an organisation that can act on it.",
    "no_contact": "The case team could not reach the people affected.",
    "other": "The case was closed for another reason.",
}
TITLES = (
    "Report a problem",
    "Your report was sent",
    "Follow your report",
    "Too many requests",
    "The form is too large",
    "Send the page's own form",
)
PYTHON_STRINGS = (
    *TITLES,
    *(text for pair in STATUS_TEXT.values() for text in pair),
    *CLOSED_TEXT.values(),
    "Wait %(seconds)s seconds, then try again. Nothing was changed.",
    "Shorten your text and send it again. Nothing was stored.",
    "Open the report page again and send the form from there.",
)


# --- words ----------------------------------------------------------------------------------------


@lru_cache(maxsize=len(LANGUAGES))
def catalog(language: str) -> Mapping[str, str]:
    """Return a language's translations ("English" = "translation"; English needs none)."""
    path = LOCALES / f"{language}.toml"
    if language == "en" or not path.exists():
        return {}
    with path.open("rb") as handle:
        return dict(tomllib.load(handle).get("messages", {}))


def translator(language: str) -> Callable[..., str]:
    """Return `_(msgid, **params)` for a language (an untranslated id falls back to English)."""
    words = catalog(language)

    def _(msgid: str, **params: Any) -> str:
        text = words.get(msgid) or msgid
        return text % params if params else text

    return _


@lru_cache(maxsize=1)
def _templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    return env


def _when(value: datetime) -> str:
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def render(template: str, language: str, status: int = 200, **context: Any) -> HTMLResponse:
    """Render a public page in a language, with the words and lists every page uses."""
    _ = translator(language)
    context.setdefault("nav_path", None)
    html = (
        _templates()
        .get_template(f"{template}.html.j2")
        .render(
            _=_,
            lang=language,
            languages=LANGUAGE_NAMES,
            lang_field=LANG_FIELD,
            csrf_field=CSRF_FIELD,
            **context,
        )
    )
    return HTMLResponse(html, status_code=status)


def _problems(problems: list[Problem], language: str) -> dict[str, str]:
    """Each field's problem in the page's language (the first one per field)."""
    _ = translator(language)
    shown: dict[str, str] = {}
    for problem in problems:
        shown.setdefault(problem.field, _(problem.msgid, **problem.params))
    return shown


# --- the pages -----------------------------------------------------------------------------------


def report_page(
    language: str,
    *,
    status: int = 200,
    problems: list[Problem] | None = None,
    values: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """The report form, empty or as typed with what to correct."""
    _ = translator(language)
    countries = sorted(COUNTRIES.items(), key=lambda item: _(item[1]).casefold())
    return render(
        "report",
        language,
        status,
        title=_("Report a problem"),
        nav_path="/report",
        csrf=public_csrf_token(REPORT_FORM, utcnow()),
        errors=_problems(problems or [], language),
        values=values or {},
        countries=countries,
        sources=[(key, label) for key, (_type, label) in SOURCES.items()],
        minerals=list(MINERALS.items()),
        children=list(CHILDREN.items()),
        danger=list(DANGER.items()),
        reply=list(REPLY.items()),
        honeypot=HONEYPOT_FIELD,
        text_limit=TEXT_LIMIT,
        site_limit=SITE_LIMIT,
    )


def follow_up_page(
    language: str, *, status: int = 200, problems: list[Problem] | None = None
) -> HTMLResponse:
    """The form for a receipt code (never showing a code typed before)."""
    return render(
        "follow_up",
        language,
        status,
        title=translator(language)("Follow your report"),
        nav_path="/follow-up",
        csrf=public_csrf_token(FOLLOW_UP_FORM, utcnow()),
        errors=_problems(problems or [], language),
    )


def thread_page(
    language: str,
    code: str,
    answer: FollowUp,
    *,
    status: int = 200,
    sent: bool = False,
    draft: str = "",
    problems: list[Problem] | None = None,
) -> HTMLResponse:
    """The status and the thread of a report, with a reply box (the code rides in the forms)."""
    _ = translator(language)
    headline, explanation = STATUS_TEXT[answer.status.value]
    reason = answer.closed_reason.value if answer.closed_reason is not None else None
    return render(
        "follow_up_thread",
        language,
        status,
        title=_("Follow your report"),
        csrf=public_csrf_token(FOLLOW_UP_FORM, utcnow()),
        code=code,
        answer=answer,
        headline=headline,
        explanation=explanation,
        closed_text=CLOSED_TEXT[reason] if reason else None,
        sent=sent,
        draft=draft,
        message_limit=MESSAGE_LIMIT,
        errors=_problems(problems or [], language),
    )


def message_page(language: str, status: int, title: str, message: str, **params: Any) -> Response:
    """A short page in the reporter's language (too many requests, a form too large)."""
    _ = translator(language)
    return render("report_message", language, status, title=_(title), message=_(message, **params))


# --- abuse ---------------------------------------------------------------------------------------


class _PostBudget(RateLimiter):
    """A token bucket of `burst` posts at once, then `per_hour` an hour."""

    def __init__(self, burst: int, per_hour: int) -> None:
        super().__init__(burst)
        self.per_second = per_hour / 3600.0


class Limits:
    """The public pages' budgets per client address (in memory, per process)."""

    def __init__(self) -> None:
        settings = get_settings()
        self.pages = RateLimiter(settings.approval_rate_per_minute)
        self.posts = _PostBudget(POST_BURST, POSTS_PER_HOUR)
        self.trusted = trusted_proxies(settings.approval_trusted_proxies)

    def wait(self, request: Request) -> float:
        """Spend a request of the client's budgets: 0 if it may go on, else seconds to wait."""
        peer = request.client.host if request.client else None
        forwarded = request.headers.get("x-forwarded-for") if self.trusted else None
        client = client_key(peer, forwarded, self.trusted)
        wait = self.pages.take(client)
        if wait == 0 and request.method == "POST":
            wait = self.posts.take(client)
        return wait


def _language_of(request: Request, form: FormData | None = None) -> str:
    chosen = first(form, LANG_FIELD) if form is not None else None
    return page_language(
        chosen or request.query_params.get(LANG_FIELD), request.headers.get("accept-language")
    )


async def _read_form(request: Request, language: str) -> FormData | Response:
    """The posted form, or the page saying why it is not read (too large, not our form)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        return message_page(
            language,
            415,
            "Send the page's own form",
            "Open the report page again and send the form from there.",
        )
    declared = request.headers.get("content-length", "")
    too_large = message_page(
        language,
        413,
        "The form is too large",
        "Shorten your text and send it again. Nothing was stored.",
    )
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return too_large
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return too_large
    try:
        return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=60)
    except ValueError:
        return too_large


def _from_this_page(request: Request, form: FormData, form_name: str, now: datetime) -> bool:
    return public_csrf_ok(first(form, CSRF_FIELD), form_name, now) and same_origin(
        request.headers.get("origin"), request.headers.get("sec-fetch-site")
    )


# --- the routes ----------------------------------------------------------------------------------


def report_routes(*, start_cases: bool = True) -> list[Route]:
    """The public pages' routes (start_cases: file_report starts each new case's entry run; the
    browser test, which runs no Prefect server, turns it off)."""
    limits = Limits()

    def limited(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            wait = limits.wait(request)
            if wait > 0:
                seconds = max(1, math.ceil(wait))
                response = message_page(
                    _language_of(request),
                    429,
                    "Too many requests",
                    "Wait %(seconds)s seconds, then try again. Nothing was changed.",
                    seconds=seconds,
                )
                response.headers["Retry-After"] = str(seconds)
                return response
            return await handler(request)

        return guarded

    async def show_report(request: Request) -> Response:
        return report_page(_language_of(request))

    async def send_report(request: Request) -> Response:
        now = utcnow()
        form = await _read_form(request, _language_of(request))
        if isinstance(form, Response):
            return form
        language = _language_of(request, form)
        read = read_report(form, language=language, now=now)
        problems = read.problems
        if not _from_this_page(request, form, REPORT_FORM, now):
            problems = [Problem("", STALE_FORM), *problems]
        if problems or read.report is None:
            return report_page(language, status=422, problems=problems, values=read.values)
        report = read.report
        try:
            filed = await run_in_threadpool(
                lambda: file_report(
                    report, now=now, actor=ACTOR, contact_ok=read.contact_ok, start=start_cases
                )
            )
        except Exception as exc:  # the store is down: keep what the reporter wrote on the page
            log.error("report page: a report could not be filed (%s)", type(exc).__name__)
            return report_page(
                language, status=503, problems=[Problem("", SAVE_FAILED)], values=read.values
            )
        _ = translator(language)
        return render("report_receipt", language, title=_("Your report was sent"), filed=filed)

    async def show_follow_up(request: Request) -> Response:
        return follow_up_page(_language_of(request))

    async def open_follow_up(request: Request) -> Response:
        now = utcnow()
        form = await _read_form(request, _language_of(request))
        if isinstance(form, Response):
            return form
        language = _language_of(request, form)
        if not _from_this_page(request, form, FOLLOW_UP_FORM, now):
            return follow_up_page(language, problems=[Problem("", STALE_FORM)])
        code, problem = read_code(form)
        if code is None:
            return follow_up_page(language, problems=[problem] if problem else [])
        answer = await run_in_threadpool(lambda: follow_up(code, now=now))
        if answer is None:
            return follow_up_page(language, problems=[Problem("code", CODE_UNKNOWN)])
        return thread_page(language, code, answer)

    async def send_message(request: Request) -> Response:
        now = utcnow()
        form = await _read_form(request, _language_of(request))
        if isinstance(form, Response):
            return form
        language = _language_of(request, form)
        code, problem = read_code(form)
        if code is None:
            return follow_up_page(language, problems=[problem] if problem else [])
        text, problem = read_message(form)
        if not _from_this_page(request, form, FOLLOW_UP_FORM, now):
            problem = Problem("", STALE_FORM)
        sent = False
        if problem is None:
            try:
                sent = await run_in_threadpool(lambda: reporter_writes(code, text, now=now))
            except ValueError:  # the store's own limits (e.g. a message too long)
                problem = Problem("message", TOO_LONG, {"limit": MESSAGE_LIMIT})
            if problem is None and not sent:
                return follow_up_page(language, problems=[Problem("code", CODE_UNKNOWN)])
        answer = await run_in_threadpool(lambda: follow_up(code, now=now))
        if answer is None:
            return follow_up_page(language, problems=[Problem("code", CODE_UNKNOWN)])
        if problem is not None:
            return thread_page(language, code, answer, status=422, draft=text, problems=[problem])
        return thread_page(language, code, answer, sent=True)

    async def report_route(request: Request) -> Response:
        return await (send_report if request.method == "POST" else show_report)(request)

    async def follow_up_route(request: Request) -> Response:
        return await (open_follow_up if request.method == "POST" else show_follow_up)(request)

    return [
        Route("/report", limited(report_route), methods=["GET", "POST"]),
        Route("/follow-up", limited(follow_up_route), methods=["GET", "POST"]),
        Route("/follow-up/message", limited(send_message), methods=["POST"]),
    ]
