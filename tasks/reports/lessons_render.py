"""Rendering the lessons-learned report: Markdown or HTML through Jinja2, and an inline SVG chart.

`render_lessons` renders the figures of `tasks.reports.lessons` with the report templates
(`notifications/templates/report/`); `svg_step_durations` draws the steps' durations. Every word
goes through the notification catalogs (notifications/locales/<locale>.toml, English in,
translation out); English is the default and needs none.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Literal

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from models.enums import Locale
from models.iso4217 import format_amount
from notifications.render import TEMPLATES, catalog
from tasks.reports.lessons import LessonsFigures

Format = Literal["md", "html"]


# --- the report ----------------------------------------------------------------------------------


def _days(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _strong(value: object) -> Markup:
    return Markup("<strong>%s</strong>") % (value,)


def _words(locale: Locale, fmt: Format) -> tuple[Callable[..., str], Callable[..., str]]:
    """Return the report's `_(text, **values)` and `ngettext(one, many, n)` for a locale."""
    cat = catalog(locale)

    def text(message: str) -> str:
        # HTML: the catalog's text is ours; % then escapes the values (Markup's own %)
        return Markup(message) if fmt == "html" else message  # noqa: S704

    def gettext(message: str, **values: Any) -> str:
        translated = text(cat.gettext(message))
        return translated % values if values else translated

    def ngettext(singular: str, plural: str, num: int, **values: Any) -> str:
        return text(cat.ngettext(singular, plural, num)) % {"num": num, **values}

    return gettext, ngettext


def _md(value: object) -> str:
    """Make stored text safe in a Markdown table cell: no HTML, no cell breaks."""
    text = " ".join(str(value).split())
    for char, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "&#124;")):
        text = text.replace(char, entity)
    for char in "\\`*[]":
        text = text.replace(char, "\\" + char)
    return text


@lru_cache(maxsize=1)
def report_environment() -> Environment:
    """Return the Jinja2 environment of the reports (autoescape for .html.j2, strict undefined)."""
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["days"] = _days
    env.filters["money"] = format_amount
    env.filters["pct"] = _pct
    env.filters["md"] = _md
    env.filters["strong"] = _strong
    return env


def render_lessons(figures: LessonsFigures, fmt: Format, locale: Locale = Locale.EN) -> str:
    """Render the lessons-learned report as Markdown or as a standalone HTML page."""
    if fmt not in ("md", "html"):
        raise ValueError(f"unknown report format {fmt!r} (md or html)")
    template = report_environment().get_template(f"report/lessons.{fmt}.j2")
    gettext, ngettext = _words(locale, fmt)
    context: dict[str, Any] = {
        "f": figures,
        "total": figures.decisions_total,
        "_": gettext,
        "ngettext": ngettext,
        "lang": locale.value,
    }
    if fmt == "html":
        # our own markup, built from escaped parts only (see svg_step_durations)
        context["chart"] = Markup(svg_step_durations(figures, locale))  # noqa: S704
    return template.render(context)


# --- the chart -----------------------------------------------------------------------------------

SVG_WIDTH, SVG_HEIGHT = 640, 320
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 44, 56
SERIES = (("median", "#4477aa"), ("worst", "#ee6677"))


def _nice_ceiling(value: float) -> tuple[float, float]:
    """Return (axis maximum, tick step) for values up to `value`, with about five ticks."""
    if value <= 0:
        return 1.0, 0.25
    raw = value / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return step * math.ceil(value / step - 1e-9), step


def _num(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _text(x: float, y: float, content: str, **attrs: str) -> str:
    extra = "".join(f' {k.rstrip("_").replace("_", "-")}="{escape(v)}"' for k, v in attrs.items())
    return f'<text x="{_num(x)}" y="{_num(y)}"{extra}>{escape(content)}</text>'


def svg_step_durations(figures: LessonsFigures, locale: Locale = Locale.EN) -> str:
    """Draw the median and worst days per step as a fixed-size SVG bar chart (no script)."""
    _ = catalog(locale).gettext  # every value is escaped where the SVG is written
    plot_w = SVG_WIDTH - _LEFT - _RIGHT
    plot_h = SVG_HEIGHT - _TOP - _BOTTOM
    base = _TOP + plot_h
    worst = max((s.worst_days or 0.0 for s in figures.steps), default=0.0)
    top, tick = _nice_ceiling(worst)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_WIDTH}" height="{SVG_HEIGHT}" '
        f'viewBox="0 0 {SVG_WIDTH} {SVG_HEIGHT}" role="img" font-family="sans-serif" '
        'font-size="11">',
        f"<title>{escape(_('Days spent in each step: median and worst case'))}</title>",
        f'<rect x="0" y="0" width="{SVG_WIDTH}" height="{SVG_HEIGHT}" fill="#ffffff"/>',
    ]
    # y axis: gridlines and tick labels
    ticks = round(top / tick)
    for i in range(ticks + 1):
        value = i * tick
        y = base - plot_h * value / top
        parts.append(
            f'<line class="grid" x1="{_LEFT}" y1="{_num(y)}" x2="{_LEFT + plot_w}" '
            f'y2="{_num(y)}" stroke="#dddddd"/>'
        )
        parts.append(_text(_LEFT - 6, y + 4, _num(value), text_anchor="end"))
    parts.append(
        f'<line class="axis" x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{base}" stroke="#333333"/>'
    )
    parts.append(
        f'<line class="axis" x1="{_LEFT}" y1="{base}" x2="{_LEFT + plot_w}" y2="{base}" '
        'stroke="#333333"/>'
    )
    middle_y = _TOP + plot_h / 2
    parts.append(
        _text(
            16,
            middle_y,
            _("Days"),
            text_anchor="middle",
            transform=f"rotate(-90 16 {_num(middle_y)})",
            class_="axis-label",
        )
    )
    parts.append(
        _text(
            _LEFT + plot_w / 2,
            SVG_HEIGHT - 12,
            _("Step"),
            text_anchor="middle",
            class_="axis-label",
        )
    )
    # the bars: one per step and series
    group_w = plot_w / max(len(figures.steps), 1)
    bar_w = group_w * 0.32
    for n, step in enumerate(figures.steps):
        x0 = _LEFT + n * group_w + group_w * 0.18
        for k, (series, colour) in enumerate(SERIES):
            days = step.median_days if series == "median" else step.worst_days
            height = plot_h * (days or 0.0) / top
            label = _(f"Step %(step)s (%(title)s), {series}: %(days)s days over %(cases)s case(s)")
            label %= {
                "step": step.step,
                "title": _(step.title),
                "days": _days(days),
                "cases": step.cases,
            }
            parts.append(
                f'<rect class="bar {series}" data-step="{step.step}" '
                f'data-days="{escape(_num(days)) if days is not None else ""}" '
                f'x="{_num(x0 + k * bar_w)}" y="{_num(base - height)}" '
                f'width="{_num(bar_w)}" height="{_num(height)}" fill="{colour}">'
                f"<title>{escape(label)}</title></rect>"
            )
        parts.append(
            _text(x0 + bar_w, base + 16, str(step.step), text_anchor="middle", class_="step")
        )
    # legend
    x = _LEFT
    for series, colour in SERIES:
        parts.append(f'<rect x="{x}" y="14" width="12" height="12" fill="{colour}"/>')
        parts.append(_text(x + 16, 24, _(f"{series} days"), class_="legend"))
        x += 110
    parts.append("</svg>")
    return "\n".join(parts)
