"""Settings read from the environment: the approval page's public address needs https off loopback.

Its links carry single-use tokens and its form a CSRF token; over plain http anyone on the path
reads them. Plain http stays possible where the traffic never leaves the machine.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from models.settings import Settings

ACCEPTED = [
    "https://approvals.example.org",
    "https://approvals.example.org:8443/remedy/",
    "https://10.0.0.5:8686",
    "http://127.0.0.1:8686",
    "http://127.9.8.7:8686",
    "http://localhost:8686",  # the default
    "http://LOCALHOST",
    "http://[::1]:8686",
]
REFUSED = [
    "http://approvals.example.org",
    "http://approvals.example.org:8686/",
    "http://10.0.0.5:8686",
    "http://0.0.0.0:8686",
    "http://[2001:db8::1]:8686",
    "http://localhost.evil.example",
    "http://127.0.0.1.evil.example",
    "ftp://approvals.example.org",
    "approvals.example.org",
]


@pytest.mark.parametrize("url", ACCEPTED)
def test_https_anywhere_and_http_on_loopback_are_accepted(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REMEDY_APPROVAL_BASE_URL", url)
    assert Settings().approval_base_url == url


@pytest.mark.parametrize("url", REFUSED)
def test_a_base_url_without_https_off_loopback_is_refused(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REMEDY_APPROVAL_BASE_URL", url)
    with pytest.raises(ValidationError) as caught:
        Settings()
    [error] = caught.value.errors()
    assert error["loc"] == ("approval_base_url",)
    assert "must use https" in error["msg"]
    assert "127.0.0.1, ::1 or localhost" in error["msg"]


def test_the_default_base_url_is_a_host_name_on_this_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Passkeys are bound to a host name, never to an IP: links name localhost by default, and
    the page still listens on 127.0.0.1 only."""
    monkeypatch.delenv("REMEDY_APPROVAL_BASE_URL", raising=False)
    monkeypatch.delenv("REMEDY_APPROVAL_HOST", raising=False)
    settings = Settings()
    assert settings.approval_base_url == "http://localhost:8686"
    assert settings.approval_host == "127.0.0.1"
