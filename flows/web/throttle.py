"""The approval page's limit per client address, as ASGI middleware (work: tasks/web/ratelimit.py).

A request to the links (`/a/...`, and the stable run links `/r/...`) beyond its client's budget
gets a plain 429 with Retry-After, before anything is read or stored; the others are served with
their client named, so the junk tokens among them are counted for it. What was counted is written
once a minute by a task of the app's lifespan (or, where no lifespan runs, after the first request
past the minute), and when the page stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math

from starlette.concurrency import run_in_threadpool
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models.settings import get_settings
from tasks.context import utcnow
from tasks.web.ratelimit import (
    JUNK_INTERVAL,
    JunkTally,
    RateLimiter,
    client_key,
    serving,
    trusted_proxies,
)

log = logging.getLogger("remedy.approval_page")

LINKS = ("/a/", "/r/")  # the approval links and the stable run links: both carry tokens
CHECK_SECONDS = 15.0  # how often the lifespan's task looks whether a minute of junk is due


class Throttle:
    """Limit each client address's requests to the links; audit their junk once a minute."""

    def __init__(self, app: ASGIApp) -> None:
        settings = get_settings()
        self.app = app
        self.limiter = RateLimiter(settings.approval_rate_per_minute)
        self.trusted = trusted_proxies(settings.approval_trusted_proxies)
        self.junk = JunkTally(interval=JUNK_INTERVAL)
        self._flushers: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._watch_lifespan(receive), send)
            return
        if scope["type"] != "http" or not scope["path"].startswith(LINKS):
            await self.app(scope, receive, send)
            return
        client = self._client(scope)
        wait = self.limiter.take(client)
        if wait > 0:
            self.junk.limited(client, now=utcnow())
            await _too_many(wait)(scope, receive, send)
        else:
            with serving(client, self.junk):
                await self.app(scope, receive, send)
        if not self._flushers and self.junk.due(utcnow()):
            await self._flush()  # no lifespan task: the first request past the minute writes

    def _client(self, scope: Scope) -> str:
        peer = scope.get("client")
        forwarded = None
        if self.trusted:
            for name, value in scope.get("headers", []):
                if name == b"x-forwarded-for":
                    forwarded = value.decode("latin-1")
        return client_key(peer[0] if peer else None, forwarded, self.trusted)

    def _watch_lifespan(self, receive: Receive) -> Receive:
        async def watched() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                task = asyncio.get_running_loop().create_task(self._flush_when_due())
                self._flushers.add(task)
            elif message["type"] == "lifespan.shutdown":
                await self._stop_flushers()
                await self._flush(force=True)
            return message

        return watched

    async def _flush_when_due(self) -> None:
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            if self.junk.due(utcnow()):
                await self._flush()

    async def _stop_flushers(self) -> None:
        loop = asyncio.get_running_loop()
        for task in [t for t in self._flushers if t.get_loop() is loop]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._flushers.discard(task)

    async def _flush(self, *, force: bool = False) -> None:
        await run_in_threadpool(lambda: self.junk.flush(utcnow(), force=force))


def _too_many(wait: float) -> PlainTextResponse:
    """The plain page of a request over its budget: when to come back, no token, no address."""
    seconds = max(1, math.ceil(wait))
    return PlainTextResponse(
        "Too many requests\n\n"
        f"This address has opened approval links too often. Wait {seconds} seconds, then open "
        "the link from your message again. Nothing was changed.\n",
        status_code=429,
        headers={"Retry-After": str(seconds)},
    )
