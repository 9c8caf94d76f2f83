"""Sending one rendered message through apprise, and saying why it failed without leaking URLs.

apprise URLs hold credentials (SMTP passwords, webhook tokens): they are built here from settings
and secrets, handed to apprise, and never logged, stored, or put in an error message. apprise's
own log output is captured and only classified ("connection refused", "HTTP 500"...).

apprise is imported when a message is sent, not with this module: it loads every plugin it has,
and a step's flow process (a fresh one at each pickup) sends nothing on most pickups.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from models.enums import ChatKind

CHAT_SCHEMES: dict[ChatKind, tuple[str, ...]] = {
    ChatKind.SLACK: ("slack",),
    ChatKind.MSTEAMS: ("msteams",),
    ChatKind.MATTERMOST: ("mmost", "mmosts"),
    ChatKind.MATRIX: ("matrix", "matrixs"),
    ChatKind.JSON: ("json", "jsons"),
}
IDEMPOTENCY_HEADER = "X-Remedy-Key"


class DeliveryFailedError(Exception):
    """A message was not delivered; the message says why in words that hold no secret."""


def email_url(smtp_url: str, *, to: str, key: str) -> str:
    """Return the apprise e-mail URL for one recipient, with the message's idempotency header."""
    parts = urlsplit(smtp_url)
    if parts.scheme not in ("mailto", "mailtos"):
        raise DeliveryFailedError("the SMTP setting is not a mailto:// or mailtos:// URL")
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "to"]
    query += [("to", to), (f"+{IDEMPOTENCY_HEADER}", key)]
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def chat_url(webhook_url: str, *, kind: ChatKind, key: str) -> str:
    """Check a chat webhook URL against its kind; JSON webhooks also get the idempotency header."""
    scheme = urlsplit(webhook_url).scheme
    if scheme not in CHAT_SCHEMES[kind]:
        raise DeliveryFailedError(f"the chat webhook of kind {kind.value} has the wrong scheme")
    if kind == ChatKind.JSON:
        parts = urlsplit(webhook_url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        query.append((f"+{IDEMPOTENCY_HEADER}", key))
        return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))
    return webhook_url


_CAUSES = (
    (re.compile(r"connection refused|errno 111", re.I), "connection refused"),
    (re.compile(r"timed? ?out", re.I), "timed out"),
    (
        re.compile(r"name or service not known|nodename nor servname|getaddrinfo", re.I),
        "host not found",
    ),
    (re.compile(r"authentication|auth failed|smtp auth|\b535\b", re.I), "authentication failed"),
    (re.compile(r"error=(\d{3})\b"), "the receiver answered HTTP {0}"),
    (re.compile(r"ssl|tls|certificate", re.I), "TLS failed"),
)


def classify(log_text: str) -> str:
    """Name the cause of a failure from apprise's log, in words only (never its text)."""
    for pattern, words in _CAUSES:
        match = pattern.search(log_text)
        if match:
            return words.format(*match.groups())
    return "delivery failed"


def send(url: str, *, channel: str, subject: str, body: str, fmt: str) -> None:
    """Deliver one message; raise DeliveryFailedError (a safe reason) unless apprise says yes."""
    import apprise

    formats = {
        "html": apprise.NotifyFormat.HTML,
        "text": apprise.NotifyFormat.TEXT,
        "md": apprise.NotifyFormat.MARKDOWN,
    }
    app = apprise.Apprise()
    if not app.add(url):
        raise DeliveryFailedError(f"the {channel} address is not a valid apprise URL")
    logger = logging.getLogger("apprise")
    propagate = logger.propagate
    logger.propagate = False  # apprise's messages name hosts and addresses: keep them here
    try:
        with apprise.LogCapture(level=logging.DEBUG) as captured:
            result = app.notify(title=subject, body=body, body_format=formats[fmt])
            log_text = captured.getvalue()
    finally:
        logger.propagate = propagate
    if not bool(result):  # a falsy result is a failure, whatever its type
        raise DeliveryFailedError(f"{channel}: {classify(log_text)}")
