"""A reporter on the public pages, over plain HTTP as a browser without JavaScript (demo, tests).

Each form is fetched first for its CSRF token and posted back with the headers a browser sends
for a same-origin form, so the page checks them exactly as it checks a person's. What comes back
is read as text: the receipt code and reference, the status and the thread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

import httpx

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
CODE = re.compile(r'<p class="code"[^>]*>([A-Z2-7-]+)</p>')
RECEIPT_REF = re.compile(r"R-\d{4}-[A-Z2-7]{4}-[A-Z2-7]{4}")
TIMEOUT = 60.0

# an anonymous report as a worker's relative would file it (the page's field names)
SAMPLE_FIELDS: dict[str, str] = {
    "what": "My brother and eleven others are kept at the pit at night and are not paid. "
    "The team leader keeps their cards.",
    "country": "CD",
    "site": "Kamituga",
    "who": "relative",
    "persons": "12",
    "children": "unknown",
    "danger": "yes",
    "mineral": "gold",
    "reply": "page",
}


@dataclass(frozen=True)
class PageReceipt:
    """What the receipt page showed: the secret code and the public reference."""

    code: str
    receipt_ref: str
    status: int


def _csrf(html: str) -> str:
    found = CSRF.search(html)
    if found is None:
        raise RuntimeError("the page carries no CSRF token")
    return found.group(1)


def _post(client: httpx.Client, base: str, path: str, form: dict[str, str]) -> httpx.Response:
    headers = {"Origin": base, "Sec-Fetch-Site": "same-origin"}  # as a browser sends them
    return client.post(f"{base}{path}", data=form, headers=headers, timeout=TIMEOUT)


def file_through_page(base: str, fields: dict[str, str], *, lang: str = "en") -> PageReceipt:
    """Fill the report form and send it; return the receipt shown (RuntimeError if refused)."""
    with httpx.Client() as client:
        shown = client.get(f"{base}/report?lang={lang}", timeout=TIMEOUT)
        shown.raise_for_status()
        form = {**fields, "csrf": _csrf(shown.text), "lang": lang, "website": ""}
        sent = _post(client, base, f"/report?lang={lang}", form)
    code, ref = CODE.search(sent.text), RECEIPT_REF.search(sent.text)
    if sent.status_code != 200 or code is None or ref is None:
        raise RuntimeError(f"the report page answered {sent.status_code} without a receipt")
    return PageReceipt(code=code.group(1), receipt_ref=ref.group(0), status=sent.status_code)


def follow_up_page(base: str, code: str, *, lang: str = "en") -> str:
    """Open the follow-up with a receipt code; return the page's main text, as it reads."""
    with httpx.Client() as client:
        shown = client.get(f"{base}/follow-up?lang={lang}", timeout=TIMEOUT)
        shown.raise_for_status()
        form = {"code": code, "csrf": _csrf(shown.text), "lang": lang}
        opened = _post(client, base, f"/follow-up?lang={lang}", form)
    opened.raise_for_status()
    return main_text(opened.text)


def main_text(html: str) -> str:
    """The text of a page's <main>, one line per block, without the forms' controls."""
    reader = _MainText()
    reader.feed(html)
    return "\n".join(line for line in (" ".join(b.split()) for b in reader.blocks) if line)


class _MainText(HTMLParser):
    BLOCKS = frozenset({"h1", "h2", "p", "li", "dt", "dd", "div"})
    SKIP = frozenset({"form", "textarea", "button", "label", "script", "style"})

    def __init__(self) -> None:
        super().__init__()
        self.blocks: list[str] = [""]
        self.inside_main = False
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "main":
            self.inside_main = True
        elif tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BLOCKS:
            self.blocks.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "main":
            self.inside_main = False
        elif tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.BLOCKS:
            self.blocks.append("")

    def handle_data(self, data: str) -> None:
        if self.inside_main and not self.skipping:
            self.blocks[-1] += data


def case_of_receipt(receipt_ref: str) -> str:
    """The case a receipt belongs to, as the case team finds it (the pages never name it)."""
    from sqlmodel import select

    from models.tables import RemediationCase, ReporterReceipt
    from tasks.store.db import read_only

    with read_only() as session:
        case = session.exec(
            select(RemediationCase)
            .join(ReporterReceipt, ReporterReceipt.case_id == RemediationCase.id)  # type: ignore[arg-type]
            .where(ReporterReceipt.receipt_ref == receipt_ref)
        ).one()
        return case.reference
