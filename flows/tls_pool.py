"""TLS contexts made once in the fork server, handed out one each in the flow runs forked from it.

Every Prefect client a flow run opens (the run's own, its event and log workers', the suspension
observer's, each pull step's) and every e-mail apprise sends builds a TLS context, even to reach
an http:// server or a plain SMTP relay, and each build parses a bundle of about 140 CA
certificates: 14-17 ms of CPU. A pickup that asks its first question and sends its e-mails built
11 (9 for Prefect's clients, 2 for e-mail); a profile of the forked runs on a worker put over a
third of their CPU there (bench/README.md, Forked pickups).

`install()` runs in the fork server (flows/prefork_warm.py): it builds a stock of contexts for
the two argument sets those callers use (the CA file Prefect's clients verify with,
`PREFECT_API_SSL_CERT_FILE` or certifi's, and no arguments: the system's certificates) and makes
`ssl.create_default_context` hand them out, each to one caller only, as if just made: the same
function, the same arguments, nothing changed on them before. A forked run gets its own copy of
the stock (fork copies the process); once its copy is used up, or for any other arguments, it
builds contexts as before. Nothing is shared between callers, so one that turns verification off
on its context (apprise with `verify=no`) changes nobody else's. The stock trusts the certificates
that were on disk when the fork server started: after changing them, restart the runner or worker,
as after changing the code.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Buffer  # the type typeshed gives cadata

# (cafile, the purpose's oid, SSL_CERT_FILE, SSL_CERT_DIR): a stocked context is served only for
# the arguments it was made with, and, as the system's default certificates are found through
# those two variables, only while they are what they were (a run's environment may set them)
Key = tuple[str | None, str, str | None, str | None]

_stock: dict[Key, list[ssl.SSLContext]] = {}
_made: Callable[..., ssl.SSLContext] = ssl.create_default_context
served = 0  # contexts handed out from the stock in this process


def _key(purpose: Any, cafile: Any, capath: Any, cadata: Any) -> Key | None:
    if capath is not None or cadata is not None or not isinstance(purpose, ssl.Purpose):
        return None
    if cafile is not None and not isinstance(cafile, str):
        return None
    return (cafile, purpose.oid, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


def create_default_context(
    purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH,
    *,
    cafile: str | bytes | os.PathLike[str] | os.PathLike[bytes] | None = None,
    capath: str | bytes | os.PathLike[str] | os.PathLike[bytes] | None = None,
    cadata: str | Buffer | None = None,
) -> ssl.SSLContext:
    """`ssl.create_default_context`, from the stock while it lasts."""
    global served
    key = _key(purpose, cafile, capath, cadata)
    stock = _stock.get(key) if key is not None else None
    if stock:
        try:
            context = stock.pop()
        except IndexError:  # another thread took the last one
            pass
        else:
            served += 1
            return context
    return _made(purpose, cafile=cafile, capath=capath, cadata=cadata)


def install(stock: dict[str | None, int]) -> None:
    """Build, for each CA file (None: the system's default certificates), that many contexts
    verifying servers with it, and serve them from `ssl.create_default_context` in this process
    and the processes it forks."""
    for cafile, count in stock.items():
        key = _key(ssl.Purpose.SERVER_AUTH, cafile, None, None)
        assert key is not None
        _stock[key] = [_made(ssl.Purpose.SERVER_AUTH, cafile=cafile) for _ in range(count)]
    ssl.create_default_context = create_default_context


def left() -> int:
    """Return how many contexts are still in stock in this process."""
    return sum(len(stock) for stock in _stock.values())
