"""Local receivers for the demo and the tests: a mail catcher (SMTP) and a chat webhook receiver.

Both listen on 127.0.0.1 only. The mail catcher writes each message it accepts to a .eml file;
the chat receiver appends each request's JSON to a log. Neither is used by `remedy up`: real
installations send to real mail servers and chat services.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class MailCatcher:
    """An SMTP server that keeps what it receives (aiosmtpd, from the dev dependencies)."""

    port: int
    folder: Path | None = None
    on_message: Callable[[EmailMessage], None] | None = None
    messages: list[EmailMessage] = field(default_factory=list)
    _controller: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self.messages.append(message)
            if self.folder is not None:
                self.folder.mkdir(parents=True, exist_ok=True)
                name = f"{len(self.messages):05d}.eml"
                (self.folder / name).write_bytes(envelope.content)
        if self.on_message is not None:
            self.on_message(message)  # a test may stop the sender here, before it hears 250
        return "250 OK"

    def start(self) -> MailCatcher:
        from aiosmtpd.controller import Controller

        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def url(self, sender: str = "remedy@example.org") -> str:
        """The apprise URL to send through this catcher (no TLS, no login: local only)."""
        return f"mailto://127.0.0.1:{self.port}?from={sender}&mode=insecure"


@dataclass
class ChatReceiver:
    """An HTTP server that records chat webhook calls; it can be told to fail for a while."""

    port: int
    log: Path | None = None
    statuses: list[int] = field(default_factory=list)  # answered in order, then 200
    requests: list[dict[str, Any]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> ChatReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                with receiver._lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    entry = {
                        "path": self.path,
                        "status": status,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body.decode("utf-8", "replace"),
                    }
                    receiver.requests.append(entry)
                    if receiver.log is not None and status < 300:
                        receiver.log.parent.mkdir(parents=True, exist_ok=True)
                        with receiver.log.open("a", encoding="utf-8") as fh:
                            fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *_args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def delivered(self) -> list[dict[str, Any]]:
        """The calls answered with success."""
        with self._lock:
            return [r for r in self.requests if r["status"] < 300]
