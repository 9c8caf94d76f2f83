"""Rendering notifications: one Jinja2 environment, one template per event for every channel.

Every template is rendered with autoescaping and StrictUndefined. The event template chooses its
words; the channel's layout and format macros (`fmt/html.j2`, `fmt/text.j2`, `fmt/md.j2`) choose
the markup. Plain-text and chat output is unescaped once at the end, so user-supplied text is data
everywhere: `{{ 7*7 }}` in a report arrives as written, and `<script>` is escaped in HTML mail.
Words go through a translation catalog per locale (`locales/<locale>.toml`, English msgid →
translation); a missing translation falls back to English and `missing_translations` reports it.
What a person typed (a site, a milestone's title, a reason) goes through the `typed` filter: in
chat (Markdown) it is escaped with `md_text`, so `[sign in](https://evil.example)` stays text.
A plan action's stored English words (title, verification method, consequence: the plan
templates' texts) are catalog keys too: `render` translates them in the context (`plan_text`), a
per-person title "… (P-01)" on its base with the pseudonym kept; a title the case lead wrote stays
as written. `template_messages` lists the plan templates' texts and the decision forms' titles and
help with the templates' own words, and the approval and progress pages' words, so `remedy
notifications check` covers them all.

Jinja2 is imported with the environment, at the first render, not with this module: a step's flow
process (a fresh one at each pickup) renders nothing on most pickups.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.enums import Locale, NotificationChannel, Step
from models.settings import get_settings
from notifications.markdown import md_text

if TYPE_CHECKING:
    from jinja2 import Environment
    from jinja2.runtime import Context

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
LOCALES = HERE / "locales"
# The approval and progress pages (flows/web/app.py) speak to staff in these catalogs too; the
# public report pages have their own (flows/web/locales/).
STAFF_PAGES = HERE.parent / "flows" / "web" / "templates"
STAFF_PAGE_NAMES = (
    "base",
    "decide",
    "fields",
    "problems",
    "progress",
    "progress_recorded",
    "submitted",
)
# The context values that carry a plan action's stored English words (plan_templates.toml).
PLAN_TEXTS = ("title", "verification_method", "consequence_if_missed")
# A per-person action's title: the template's title, then " (<pseudonym>)" (models.plan._draft).
_PER_PERSON = re.compile(r"(?P<base>.+) \((?P<pseudonym>[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*)\)")
FORMATS = {"html": "fmt/html.j2", "text": "fmt/text.j2", "md": "fmt/md.j2"}
LAYOUTS = {
    "html": "layout/email.html.j2",
    "text": "layout/email.txt.j2",
    "md": "layout/chat.md.j2",
}


@dataclass(frozen=True)
class Rendered:
    """A message ready to send: subject and body in the channel's format."""

    subject: str
    body: str
    format: str  # html | text | md


class Catalog:
    """Translations for one locale: English text in, translated text out (English if missing)."""

    def __init__(self, messages: dict[str, str]) -> None:
        self.messages = messages

    def gettext(self, message: str) -> str:
        return self.messages.get(message) or message

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return self.gettext(singular if n == 1 else plural)


def plan_text(cat: Catalog, text: str) -> str:
    """Translate a plan action's stored English text; a per-person suffix " (P-01)" is kept."""
    translated = cat.messages.get(text)
    if translated:
        return translated
    match = _PER_PERSON.fullmatch(text)
    if match and cat.messages.get(match["base"]):
        return f"{cat.messages[match['base']]} ({match['pseudonym']})"
    return text  # written by a person, or not translated: as stored


def catalog(locale: Locale) -> Catalog:
    """Load a locale's catalog (English needs none) from the configured folder."""
    return _catalog_at(get_settings().locales_dir or LOCALES, locale)


@lru_cache(maxsize=16)
def _catalog_at(folder: Path, locale: Locale) -> Catalog:
    path = folder / f"{locale.value}.toml"
    if locale == Locale.EN or not path.exists():
        return Catalog({})
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return Catalog({str(k): str(v) for k, v in data.get("messages", {}).items()})


def _when(value: object) -> str:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return str(value)


def _label(value: object) -> str:
    return str(value).replace("_", " ")


def _typed(context: Context, value: object) -> object:
    """Quote text a person typed: as typed, and in Markdown escaped so it is no link or markup."""
    if value is None or context.get("format") != "md":
        return value  # HTML is autoescaped; plain text shows any markup as typed
    return md_text(value)


@lru_cache(maxsize=1)
def environment() -> Environment:
    """Return the one environment every notification is rendered with."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, pass_context

    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters["when"] = _when
    env.filters["label"] = _label
    env.filters["typed"] = pass_context(_typed)
    env.filters["md_text"] = md_text
    # placeholders: each render passes the recipient's locale's functions in its context
    env.install_gettext_callables(  # type: ignore[attr-defined]
        lambda s: s, lambda s, p, n: s if n == 1 else p, newstyle=True
    )
    return env


def message_templates() -> list[str]:
    """Name the templates the message environment renders (report/ is the lessons report's,
    rendered by its own environment in tasks/reports)."""
    return environment().list_templates(filter_func=lambda name: not name.startswith("report/"))


def message_format(channel: NotificationChannel, *, html: bool) -> str:
    """Return the body format for a channel (chat is markdown; e-mail HTML unless asked not)."""
    if channel == NotificationChannel.CHAT:
        return "md"
    return "html" if html else "text"


def render(event: str, *, fmt: str, locale: Locale, context: dict[str, Any]) -> Rendered:
    """Render one event's message in a format and locale."""
    from markupsafe import Markup

    env = environment()
    cat = catalog(locale)
    template = env.get_template(f"messages/{event}.j2")
    words = {k: plan_text(cat, v) for k in PLAN_TEXTS if isinstance(v := context.get(k), str)}
    ctx = {
        **context,
        **words,
        "layout": LAYOUTS[fmt],
        "fmt": FORMATS[fmt],
        "format": fmt,
        "locale": locale.value,
        "gettext": _newstyle(env, cat.gettext),
        "_": _newstyle(env, cat.gettext),
        "ngettext": _newstyle_plural(env, cat.ngettext),
    }
    body = template.render(ctx).strip() + "\n"
    # the same template over a layout that holds only the subject block
    subject = template.render({**ctx, "layout": "layout/subject.j2"})
    subject = " ".join(Markup(subject).unescape().split())  # noqa: S704 (our own rendered output)
    if fmt != "html":
        body = re.sub(r"\n{3,}", "\n\n", Markup(body).unescape())  # noqa: S704 (rendered output)
    return Rendered(subject=subject, body=body, format=fmt)


def _newstyle(env: Environment, gettext: Any) -> Any:
    from markupsafe import Markup

    def translate(message: str, **variables: Any) -> str:
        text = gettext(message)
        if env.autoescape:
            text = Markup(text)  # noqa: S704 (catalog text is ours; % escapes the variables)
        return text % variables if variables else text

    return translate


def _newstyle_plural(env: Environment, ngettext: Any) -> Any:
    from markupsafe import Markup

    def translate(singular: str, plural: str, num: int, **variables: Any) -> str:
        variables.setdefault("num", num)
        text = ngettext(singular, plural, num)
        if env.autoescape:
            text = Markup(text)  # noqa: S704 (catalog text is ours; % escapes the variables)
        return text % variables

    return translate


def plan_template_texts() -> set[str]:
    """The plan templates' titles, verification methods and consequences (the operator's file,
    REMEDY_PLAN_TEMPLATES_FILE, or the shipped one)."""
    from models.plan import load_plan_templates

    texts: set[str] = set()
    for template in load_plan_templates(get_settings().plan_templates_file).action:
        texts.update((template.title, template.verification_method))
        if template.consequence_if_missed:
            texts.add(template.consequence_if_missed)
    return texts


def decision_form_texts() -> set[str]:
    """The decision forms' field titles and help, as the approval page shows them."""
    from models import forms

    texts: set[str] = set()
    pending: list[type] = [forms.ApprovalForm]
    while pending:
        form = pending.pop()
        pending += form.__subclasses__()
        for field in form.model_fields.values():  # type: ignore[attr-defined]
            texts.update(t for t in (field.title, field.description) if t)
    return texts


# The words the lessons report's code passes to its templates and draws in its chart
# (tasks/reports/lessons_render.py): the step titles, then the chart's.
REPORT_TEXTS: tuple[str, ...] = (
    *(step.title for step in Step),
    "Days spent in each step: median and worst case",
    "Days",
    "Step",
    "median days",
    "worst days",
    "Step %(step)s (%(title)s), median: %(days)s days over %(cases)s case(s)",
    "Step %(step)s (%(title)s), worst: %(days)s days over %(cases)s case(s)",
)


def template_messages() -> set[str]:
    """Every translatable English text: the templates', the plan templates', the forms', the
    lessons report's."""
    env = environment()
    found: set[str] = plan_template_texts() | decision_form_texts() | set(REPORT_TEXTS)
    pages = [STAFF_PAGES / f"{name}.html.j2" for name in STAFF_PAGE_NAMES]
    for path in [*sorted(TEMPLATES.rglob("*.j2")), *pages]:
        source = path.read_text(encoding="utf-8")
        for _lineno, _func, message in env.extract_translations(source):  # type: ignore[attr-defined]
            if isinstance(message, str):
                found.add(message)
            elif isinstance(message, tuple):
                found.update(m for m in message if isinstance(m, str))
    return found


def missing_translations() -> dict[str, list[str]]:
    """Return, per locale, the template texts its catalog does not translate."""
    wanted = template_messages()
    missing = {}
    for locale in Locale:
        if locale == Locale.EN:
            continue
        have = catalog(locale).messages
        missing[locale.value] = sorted(m for m in wanted if not have.get(m))
    return missing
