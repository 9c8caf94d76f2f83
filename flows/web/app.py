"""The approval page: a signed, single-use link shows a decision (GET) and takes it (POST).

`python -m flows.web.app` (started by `remedy up`) serves it on REMEDY_APPROVAL_HOST /
REMEDY_APPROVAL_PORT (127.0.0.1:8686). The routes are `GET /healthz`, `GET /a/{token}` (shows;
never changes anything, so link scanners decide nothing), `POST /a/{token}` (acts, with a CSRF
token, the recipient typing their stakeholder key and, where the policy asks, confirming with
their passkey), `POST /a/{token}/options` (a passkey challenge, as JSON, for the page's script),
`GET /r/{token}` (a message's stable link to the run waiting on a decision: a 303 to it in the
Prefect UI, or a page saying the decision no longer waits) and `GET /static/...` (that script).
The public report and follow-up pages (`/report`, `/follow-up`) are flows/web/report.py's.
An enrolment link (`remedy passkey invite`) is served on the same addresses. This module only
parses requests and renders pages; the work is in tasks/web/ (links, refusals, guard, forms,
actions, gate and passkeys, enrolment, run links).
"""

from __future__ import annotations

import logging
import traceback
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markdown_it import MarkdownIt
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flows.web.report import report_routes
from flows.web.throttle import Throttle
from models.enums import LinkPurpose, Locale
from models.settings import get_settings
from tasks.context import utcnow
from tasks.decisions.fields import FieldSpec
from tasks.web.actions import (
    SubmissionFailedError,
    decide_from_link,
    decision_verdict,
    progress_from_link,
)
from tasks.web.enrol_page import (
    CODE_FIELD,
    EnrolView,
    check_enrol_post,
    complete_enrolment,
    enrolment_options,
    is_enrolment_link,
    resolve_enrolment,
)
from tasks.web.forms import (
    CSRF_FIELD,
    KEY_FIELD,
    FormData,
    FormProblemsError,
    decision_fields,
    progress_fields,
    submitted_values,
)
from tasks.web.gate import (
    PASSKEY_FIELD,
    Gate,
    decision_gate,
    decision_options,
    prove_decider,
)
from tasks.web.guard import check_post, csrf_token
from tasks.web.refusals import LinkRefusedError
from tasks.web.resolve import LinkView, decision_markdown, resolve_link
from tasks.web.runlink import follow_run_link

log = logging.getLogger("remedy.approval_page")

MAX_BODY_BYTES = 64 * 1024
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is in the address
    "X-Frame-Options": "DENY",
    # no framing (clickjacking), no <base> to redirect relative addresses, forms post only here;
    # the one script (passkeys) is a file of this page's own, never inline, and talks only here
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self' 'unsafe-inline'; script-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
}
TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


class SecurityHeaders:
    """Put the page's security headers on every response, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


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


def _when(value: Any) -> str:
    zone = ZoneInfo(get_settings().timezone)
    if hasattr(value, "astimezone"):
        return f"{value.astimezone(zone):%Y-%m-%d %H:%M} {zone.key}"
    return str(value)


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    # html off: text people typed into the case stays text
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def page_words(locale: Locale) -> Any:
    """Return `_(text, **values)` in the recipient's language: the staff catalogs
    (notifications/locales/) hold the page's words, the decision titles, the forms' fields and the
    plan templates' texts; a per-person title keeps its pseudonym (notifications.render.plan_text).
    """
    from notifications.render import catalog, plan_text

    words = catalog(locale)

    def _(text: str, **values: Any) -> Markup:
        # the catalog's text is ours; Markup's % escapes the values
        translated = Markup(plan_text(words, text))  # noqa: S704
        return translated % values if values else translated

    return _


def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """Render one of the page's templates (in English unless `_` is given for a language)."""
    context.setdefault("_", page_words(Locale.EN))
    html = _templates().get_template(f"{template}.html.j2").render(**context)
    return HTMLResponse(html, status_code=status)


def refused_page(exc: LinkRefusedError) -> HTMLResponse:
    """Render the page that says why a link was refused, with the refusal's status."""
    return page(
        "message",
        exc.status,
        title=exc.title,
        message=exc.message,
        hint=exc.hint,
        tone="refused",
    )


def _form_page(
    view: LinkView,
    *,
    status: int = 200,
    problems: list[str] | None = None,
    values: dict[str, str | list[str]] | None = None,
    typed_key: str = "",
) -> HTMLResponse:
    fields: list[FieldSpec]
    gate: Gate = "link"
    if view.purpose == LinkPurpose.DECIDE:
        assert view.kind is not None
        fields = decision_fields(view.kind)
        gate = decision_gate(view)
        description = Markup(_markdown().render(decision_markdown(view)))  # noqa: S704
        template = "decide"
    else:
        fields = progress_fields()
        description = Markup("")
        template = "progress"
    if gate == "no-passkey":
        status = max(status, 403)  # nothing to submit here: the decision waits for a passkey
    return page(
        template,
        status,
        title=view.title,
        view=view,
        description=description,
        fields=fields,
        values=values or {},
        problems=problems or [],
        csrf=csrf_token(view.link_id),
        csrf_field=CSRF_FIELD,
        key_field=KEY_FIELD,
        typed_key=typed_key,
        gate=gate,
        passkey_field=PASSKEY_FIELD,
        _=page_words(view.locale),
    )


def _enrol_page(view: EnrolView) -> HTMLResponse:
    return page(
        "enrol",
        title="Add a passkey",
        view=view,
        problems=[],
        csrf=csrf_token(view.link_id),
        csrf_field=CSRF_FIELD,
        code_field=CODE_FIELD,
        passkey_field=PASSKEY_FIELD,
    )


async def _read_form(request: Request) -> FormData:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise HTTPException(415, "send the page's own form")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(413, "the form is too large")
    try:
        return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=400)
    except ValueError:
        raise HTTPException(413, "the form has too many fields") from None


async def healthz(_request: Request) -> Response:
    return PlainTextResponse("ok")


async def show(request: Request) -> Response:
    """Show what a link allows. Reads only (a refused link is audited, nothing else)."""
    token = request.path_params["token"]
    if await run_in_threadpool(is_enrolment_link, token):
        return await show_enrolment(token)
    try:
        view = await run_in_threadpool(resolve_link, token, now=utcnow())
    except LinkRefusedError as exc:
        return refused_page(exc)
    return await run_in_threadpool(_form_page, view)


async def act(request: Request, check_seconds: float) -> Response:
    """Take the decision or record the progress a link allows, once."""
    token = request.path_params["token"]
    now = utcnow()
    if await run_in_threadpool(is_enrolment_link, token):
        return await act_enrolment(request, token, now)
    try:
        view = await run_in_threadpool(resolve_link, token, now=now)
        form = await _read_form(request)
        await run_in_threadpool(
            check_post,
            view,
            form,
            origin=request.headers.get("origin"),
            fetch_site=request.headers.get("sec-fetch-site"),
            now=now,
        )
        # the passkey (where the policy asks for it) before anything is used up
        channel = await run_in_threadpool(prove_decider, view, form, now=now)
    except LinkRefusedError as exc:
        return refused_page(exc)
    fields = decision_fields(view.kind) if view.kind is not None else progress_fields()
    try:
        if view.purpose == LinkPurpose.DECIDE:
            assert view.request_id is not None
            await run_in_threadpool(lambda: decide_from_link(view, form, now=now, channel=channel))
            verdict, reason = await run_in_threadpool(
                decision_verdict, view.request_id, wait_seconds=check_seconds, tries=view.tries
            )
            return page(
                "submitted",
                title="Submitted",
                view=view,
                verdict=verdict,
                reason=reason,
                _=page_words(view.locale),
            )
        result = await run_in_threadpool(progress_from_link, view, form, now=now)
        return page(
            "progress_recorded",
            title="Progress recorded",
            view=view,
            result=result,
            _=page_words(view.locale),
        )
    except LinkRefusedError as exc:
        return refused_page(exc)
    except FormProblemsError as exc:
        problems, values = exc.problems, submitted_values(fields, form)
    except SubmissionFailedError:
        return page(
            "message",
            503,
            title="The decision could not be submitted; try again",
            message="Nothing was recorded and the link still works. Try again in a minute; if "
            "it keeps failing, decide in the Prefect UI with the code from your message.",
            hint=None,
            tone="retry",
        )
    # the form again, as typed, with what to correct (the key was confirmed already)
    return await run_in_threadpool(
        lambda: _form_page(
            view, status=422, problems=problems, values=values, typed_key=view.stakeholder_key
        )
    )


async def options(request: Request) -> Response:
    """Hand the page's script a passkey challenge for a link (JSON; errors as {"error": ...})."""
    token = request.path_params["token"]
    now = utcnow()
    origin = request.headers.get("origin")
    fetch_site = request.headers.get("sec-fetch-site")
    try:
        form = await _read_form(request)
        if await run_in_threadpool(is_enrolment_link, token):
            enrol = await run_in_threadpool(resolve_enrolment, token, now=now)
            await run_in_threadpool(
                check_enrol_post, enrol, form, origin=origin, fetch_site=fetch_site, now=now
            )
            body = await run_in_threadpool(enrolment_options, enrol, form, now=now)
        else:
            view = await run_in_threadpool(resolve_link, token, now=now)
            body = await run_in_threadpool(
                lambda: decision_options(view, form, origin=origin, fetch_site=fetch_site, now=now)
            )
    except LinkRefusedError as exc:
        text = f"{exc.title}. {exc.message}"
        return JSONResponse({"error": text, "reason": exc.reason}, status_code=exc.status)
    return Response(body, media_type="application/json")


async def run_link(request: Request) -> Response:
    """Send a message's stable link on to the run waiting on its decision now (reads only)."""
    try:
        answer = await run_in_threadpool(
            follow_run_link, request.path_params["token"], now=utcnow()
        )
    except LinkRefusedError as exc:
        return refused_page(exc)
    if answer.redirect is not None:
        return RedirectResponse(answer.redirect, status_code=303)
    return page("message", answer.status, title=answer.title, message=answer.message, hint=None)


async def show_enrolment(token: str) -> Response:
    """Show an enrolment link (reads only)."""
    try:
        view = await run_in_threadpool(resolve_enrolment, token, now=utcnow())
    except LinkRefusedError as exc:
        return refused_page(exc)
    return await run_in_threadpool(_enrol_page, view)


async def act_enrolment(request: Request, token: str, now: datetime) -> Response:
    """Store the passkey the page's script created for an enrolment link, once."""
    try:
        view = await run_in_threadpool(resolve_enrolment, token, now=now)
        form = await _read_form(request)
        await run_in_threadpool(
            check_enrol_post,
            view,
            form,
            origin=request.headers.get("origin"),
            fetch_site=request.headers.get("sec-fetch-site"),
            now=now,
        )
        await run_in_threadpool(complete_enrolment, view, form, now=now)
    except LinkRefusedError as exc:
        return refused_page(exc)
    return page("enrolled", title="Passkey added", view=view, tone="ok")


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    titles = {
        404: "There is nothing here",
        405: "This address does not take that request",
        413: "The form is too large",
        415: "Send the page's own form",
    }
    return page(
        "message",
        status,
        title=titles.get(status, "The page cannot answer that"),
        message="Open the link from your message again.",
        hint=None,
        tone="refused",
    )


async def _server_error(_request: Request, exc: Exception) -> Response:
    # the traceback names no token: the path is not part of it
    log.error("approval page error: %s", "".join(traceback.format_exception_only(exc)).strip())
    response = page(
        "message",
        500,
        title="Something went wrong on our side",
        message="Try again in a minute. If a decision was on its way, the case lead can check "
        "whether it arrived.",
        hint=None,
        tone="retry",
    )
    response.headers.update(SECURITY_HEADERS)
    return response


def create_app(*, check_seconds: float = 10.0, start_cases: bool = True) -> Starlette:
    """Build the approval page's web app (check_seconds: how long POST waits for the verdict;
    start_cases: a report filed on the report page starts its case's entry run, as in production;
    tests that run no Prefect server turn it off)."""

    async def token_route(request: Request) -> Response:
        if request.method == "POST":
            return await act(request, check_seconds)
        return await show(request)

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/a/{token}", token_route, methods=["GET", "POST"]),
            Route("/a/{token}/options", options, methods=["POST"]),
            Route("/r/{token}", run_link, methods=["GET"]),
            *report_routes(start_cases=start_cases),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        exception_handlers={
            HTTPException: _http_error,
            Exception: _server_error,
        },
    )
    app.add_middleware(Throttle)  # inside SecurityHeaders: a 429 carries the headers too
    app.add_middleware(SecurityHeaders)
    return app


def main() -> None:
    """Serve the approval page until interrupted (the access log is off: tokens are in paths)."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # every Prefect API call otherwise
    settings = get_settings()
    uvicorn.run(
        create_app(),
        host=settings.approval_host,
        port=settings.approval_port,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        log_level="info",
    )


if __name__ == "__main__":
    main()
