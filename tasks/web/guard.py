"""The approval page's defences of a POST: its own form's CSRF token, the browser's origin headers,
and the recipient confirming their stakeholder key. A refused POST is audited and changes nothing.
"""

from __future__ import annotations

import hmac
import uuid
from datetime import datetime
from urllib.parse import urlsplit

from models.settings import get_settings
from tasks.store.vault import get_vault
from tasks.web.forms import CSRF_FIELD, KEY_FIELD, FormData, first
from tasks.web.refusals import CSRF, SOMEONE_ELSE
from tasks.web.resolve import LinkView

CSRF_INFO = b"remedy approval page csrf v1"


def csrf_token(link_id: uuid.UUID) -> str:
    """Return the CSRF token of a link's form (a keyed hash: only this server can make it)."""
    key = get_vault().derive(CSRF_INFO)
    return hmac.new(key, f"{link_id}csrf".encode(), "sha256").hexdigest()


def _origin(url: str) -> tuple[str, str, int | None] | None:
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket: no origin we could have sent
        return None
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:
        port = -1
    return scheme, (parts.hostname or "").lower(), port


def same_origin(origin: str | None, fetch_site: str | None) -> bool:
    """Tell whether a POST comes from the page itself, judged by the headers browsers send."""
    if fetch_site is not None and fetch_site.lower() not in ("same-origin", "none"):
        return False
    # Under `Referrer-Policy: no-referrer` browsers send `Origin: null` with a form's POST;
    # the CSRF token and Sec-Fetch-Site carry the check then.
    if origin is None or origin == "null":
        return True
    given = _origin(origin)
    return given is not None and given == _origin(get_settings().approval_base_url)


def check_post(
    view: LinkView, form: FormData, *, origin: str | None, fetch_site: str | None, now: datetime
) -> None:
    """Refuse (audited) a POST without the page's CSRF token, from elsewhere, or by another."""
    given = first(form, CSRF_FIELD)
    token_ok = hmac.compare_digest(given.encode(), csrf_token(view.link_id).encode())
    if not token_ok or not same_origin(origin, fetch_site):
        raise view.refused(CSRF, "csrf", now=now)
    if first(form, KEY_FIELD).strip().casefold() != view.stakeholder_key.casefold():
        raise view.refused(SOMEONE_ELSE, "wrong-recipient", now=now)
