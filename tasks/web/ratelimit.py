"""The approval page's limit per client address, and the audit of junk in bulk.

A flood of made-up links must cost the case store nothing per request. Each client address may
make `REMEDY_APPROVAL_RATE_PER_MINUTE` requests to the links a minute (a token bucket: that many
at once, then one more every 60/N seconds); beyond it the page answers 429 before it reads
anything. An IPv6 client counts per /64 network, since one machine is handed a whole /64.

A token we never issued (malformed, tampered, or naming no link of ours) is junk: it is counted in
memory per client address and written as one `link.junk` event per address per minute, with the
count, on the `web` audit chain (`WEB_CHAIN`: the page's own chain, since junk belongs to no case).
Requests answered 429 are counted in the same event. Refusals of real links (expired, used, not an
approver, a forged form) stay one event each on their case's chain: there are few real links and
each address is limited. Everything here is in memory, per process; a restart starts afresh.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from tasks.store.audit import WEB_CHAIN, append_audit
from tasks.store.db import unit_of_work
from tasks.web.refusals import ACTOR

log = logging.getLogger("remedy.approval_page")

JUNK_ACTION = "link.junk"
JUNK_INTERVAL = timedelta(minutes=1)
MAX_CLIENTS = 20_000  # buckets kept; the least recently seen client is forgotten first
MAX_JUNK_CLIENTS = 1_000  # addresses per junk interval; more are counted together as OTHERS
OTHERS = "others"
UNKNOWN = "-"  # no address: a Unix socket, or junk met outside a served request

Network = IPv4Network | IPv6Network


# --- the limit -----------------------------------------------------------------------------------


class RateLimiter:
    """A token bucket per client: `per_minute` requests at once, then one every 60/per_minute s."""

    def __init__(self, per_minute: int, *, max_clients: int = MAX_CLIENTS) -> None:
        self.capacity = float(per_minute)
        self.per_second = per_minute / 60.0
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, client: str, *, at: float | None = None) -> float:
        """Spend one request of a client's budget: 0 if it may go on, else seconds until it may."""
        at = time.monotonic() if at is None else at
        with self._lock:
            tokens, then = self._buckets.pop(client, (self.capacity, at))
            tokens = min(self.capacity, tokens + max(0.0, at - then) * self.per_second)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.per_second
            self._buckets[client] = (tokens - 1 if wait == 0 else tokens, at)
            if len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            return wait


# --- who the client is ---------------------------------------------------------------------------


def trusted_proxies(text: str) -> tuple[Network, ...]:
    """Read REMEDY_APPROVAL_TRUSTED_PROXIES (addresses or networks, comma-separated)."""
    networks = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        try:
            networks.append(ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(
                f"REMEDY_APPROVAL_TRUSTED_PROXIES: {entry!r} is not an address or network "
                "(e.g. 127.0.0.1 or 10.0.0.0/8)"
            ) from None
    return tuple(networks)


def client_key(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """Return the address a request is limited and audited under.

    The peer is the client, unless it is a trusted proxy: then X-Forwarded-For is read from the
    right (each proxy appends the address it saw) up to the first hop that is no trusted proxy.
    What a client writes into the header itself lies further left and is never reached.
    """
    address = _ip(peer)
    if address is not None and forwarded_for and _trusted(address, trusted):
        for hop in reversed(forwarded_for.split(",")):
            hop_address = _ip(hop.strip())
            if hop_address is None:
                break
            address = hop_address
            if not _trusted(hop_address, trusted):
                break
    if address is None:
        return (peer or UNKNOWN)[:64]
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ip_network(f"{address}/64", strict=False))
    return str(address)


def _ip(text: str | None) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(text) if text else None
    except ValueError:
        return None


def _trusted(address: IPv4Address | IPv6Address, trusted: Sequence[Network]) -> bool:
    return any(address.version == net.version and address in net for net in trusted)


# --- junk, counted and audited in bulk -----------------------------------------------------------


@dataclass
class _Junk:
    """What one client address sent in one interval."""

    since: datetime
    reasons: Counter[str] = field(default_factory=Counter)
    limited: int = 0

    def merge(self, other: _Junk) -> None:
        self.since = min(self.since, other.since)
        self.reasons.update(other.reasons)
        self.limited += other.limited


class JunkTally:
    """Junk per client address, in memory; written as one audit event per address per interval."""

    def __init__(
        self, *, interval: timedelta = JUNK_INTERVAL, max_clients: int = MAX_JUNK_CLIENTS
    ) -> None:
        self.interval, self.max_clients = interval, max_clients
        self._clients: dict[str, _Junk] = {}
        self._opened: datetime | None = None
        self._lock = threading.Lock()

    def refused(self, client: str, reason: str, *, now: datetime) -> None:
        """Count a token we never issued."""
        self._add(client, now, reason=reason)

    def limited(self, client: str, *, now: datetime) -> None:
        """Count a request answered 429."""
        self._add(client, now, reason=None)

    def _add(self, client: str, now: datetime, *, reason: str | None) -> None:
        with self._lock:
            if self._opened is None:
                self._opened = now
            if client not in self._clients and len(self._clients) >= self.max_clients:
                client = OTHERS
            junk = self._clients.setdefault(client, _Junk(now))
            if reason is None:
                junk.limited += 1
            else:
                junk.reasons[reason] += 1

    def clear(self) -> None:
        """Forget what was counted and not written (a test's leftovers)."""
        with self._lock:
            self._clients, self._opened = {}, None

    def due(self, now: datetime) -> bool:
        """Tell whether an interval has passed since the oldest junk not yet written."""
        opened = self._opened
        return opened is not None and now - opened >= self.interval

    def flush(self, now: datetime, *, force: bool = False) -> int:
        """Write one event per address counted (if an interval has passed, or forced); say how many.

        If the store cannot take them, the counts are kept for the next flush.
        """
        with self._lock:
            if not self._clients or not (force or self.due(now)):
                return 0
            taken, self._clients, self._opened = self._clients, {}, None
        try:
            _write(taken, now)
        except Exception as exc:  # the store is down or locked: try again next time
            self._put_back(taken)
            log.warning(
                "junk audit not written (%s, %d addresses); kept for the next try",
                type(exc).__name__,
                len(taken),
            )
            return 0
        log.info(
            "junk on the approval page: %d refused, %d limited, from %d addresses",
            sum(sum(j.reasons.values()) for j in taken.values()),
            sum(j.limited for j in taken.values()),
            len(taken),
        )
        return len(taken)

    def _put_back(self, taken: dict[str, _Junk]) -> None:
        with self._lock:
            for client, junk in taken.items():
                if client in self._clients:
                    self._clients[client].merge(junk)
                else:
                    self._clients[client] = junk
            oldest = min(j.since for j in self._clients.values())
            self._opened = min(self._opened or oldest, oldest)


def _write(taken: dict[str, _Junk], now: datetime) -> None:
    with unit_of_work() as session:
        for client in sorted(taken):
            junk = taken[client]
            append_audit(
                session,
                chain=WEB_CHAIN,
                actor=ACTOR,
                action=JUNK_ACTION,
                at=now,
                details={
                    "address": client,
                    "count": sum(junk.reasons.values()),
                    "reasons": dict(sorted(junk.reasons.items())),
                    "limited": junk.limited,
                    "since": junk.since.isoformat(timespec="seconds"),
                },
            )


# --- the request being served --------------------------------------------------------------------

# junk met outside a request the page serves (a script, a test) is counted here, as UNKNOWN
OFFLINE = JunkTally()
_SERVING: ContextVar[tuple[str, JunkTally] | None] = ContextVar("approval_client", default=None)


@contextmanager
def serving(client: str, tally: JunkTally) -> Iterator[None]:
    """Name the client of the request being served, and the tally its junk counts toward."""
    token = _SERVING.set((client, tally))
    try:
        yield
    finally:
        _SERVING.reset(token)


def count_junk(reason: str, *, now: datetime) -> None:
    """Count a token we never issued for the client being served (audited later, in bulk)."""
    client, tally = _SERVING.get() or (UNKNOWN, OFFLINE)
    tally.refused(client, reason, now=now)
