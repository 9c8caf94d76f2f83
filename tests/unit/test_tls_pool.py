"""TLS contexts built before the fork and handed out one each (flows/tls_pool.py): a caller gets
a context as if just made, never one another caller had, and anything not in stock is built."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import certifi
import pytest

from flows import tls_pool


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(ssl, "create_default_context", ssl.create_default_context)
    monkeypatch.setattr(tls_pool, "_stock", {})
    monkeypatch.setattr(tls_pool, "served", 0)
    tls_pool.install({certifi.where(): 2, None: 1})
    yield


def test_contexts_come_from_the_stock_each_to_one_caller_then_are_built(pool: None) -> None:
    assert ssl.create_default_context is tls_pool.create_default_context
    assert tls_pool.left() == 3
    first = ssl.create_default_context(cafile=certifi.where())
    # a caller that turns verification off changes its own context only
    first.check_hostname = False
    first.verify_mode = ssl.CERT_NONE
    second = ssl.create_default_context(cafile=certifi.where())
    third = ssl.create_default_context(cafile=certifi.where())  # the stock is used up: built
    assert tls_pool.served == 2
    assert len({id(first), id(second), id(third)}) == 3
    for context in (second, third):
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname is True
        assert context.cert_store_stats()["x509_ca"] > 0  # the CA file's certificates loaded
    # the system's default certificates: its own stock
    default = ssl.create_default_context()
    assert tls_pool.served == 3
    assert default.verify_mode == ssl.CERT_REQUIRED
    assert tls_pool.left() == 0


def test_other_arguments_are_built_as_asked(pool: None) -> None:
    pem = ssl.DER_cert_to_PEM_cert(ssl.PEM_cert_to_DER_cert(_first_pem()))
    asked = [
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH),  # a server's context
        ssl.create_default_context(cafile=certifi.where(), cadata=pem),
        ssl.create_default_context(capath="/etc/ssl/certs"),
    ]
    assert tls_pool.served == 0
    assert tls_pool.left() == 3
    assert asked[0].verify_mode == ssl.CERT_NONE  # what CLIENT_AUTH gives, not a stock one


def test_a_run_that_names_other_default_certificates_gets_contexts_made_with_them(
    pool: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    stocked_with = os.environ.get("SSL_CERT_FILE")
    monkeypatch.setenv("SSL_CERT_FILE", certifi.where())  # where the defaults are looked for
    ssl.create_default_context()
    assert tls_pool.served == 0
    if stocked_with is None:  # as it was when the stock was made: served from it again
        monkeypatch.delenv("SSL_CERT_FILE")
    else:
        monkeypatch.setenv("SSL_CERT_FILE", stocked_with)
    ssl.create_default_context()
    assert tls_pool.served == 1


def _first_pem() -> str:
    from pathlib import Path

    text = Path(certifi.where()).read_text(encoding="ascii")
    start = text.index("-----BEGIN CERTIFICATE-----")
    end = text.index("-----END CERTIFICATE-----", start) + len("-----END CERTIFICATE-----")
    return text[start:end]
