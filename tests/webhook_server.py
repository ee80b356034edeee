"""A webhook receiver on 127.0.0.1 for tests: records each POST and answers what it is told."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_POSTS = 200  # a runaway delivery loop gets 503s instead of hanging the test


@dataclass(frozen=True)
class Post:
    """One delivery as the receiver saw it, and the status it answered."""

    key: str  # the Idempotency-Key header
    status: int
    body: dict[str, Any]


class WebhookServer:
    """`answer(n)` gives the status of the n-th POST (0-based); 200 by default."""

    def __init__(self, answer: Callable[[int], int] = lambda n: 200) -> None:
        self.answer = answer
        self.posts: list[Post] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The webhook URL."""
        return f"http://127.0.0.1:{self.port}/hooks/desk"

    @property
    def host_port(self) -> str:
        """127.0.0.1:PORT, as an allowed_private_hosts entry."""
        return f"127.0.0.1:{self.port}"

    def acknowledged(self) -> dict[str, int]:
        """{Idempotency-Key: how many times it was answered with a 2xx}."""
        with self._lock:
            counts: dict[str, int] = {}
            for post in self.posts:
                if 200 <= post.status < 300:
                    counts[post.key] = counts.get(post.key, 0) + 1
            return counts

    def receive(self, key: str, body: dict[str, Any]) -> int:
        """Record one POST; returns the status to answer."""
        with self._lock:
            n = len(self.posts)
            status = 503 if n >= MAX_POSTS else self.answer(n)
            self.posts.append(Post(key, status, body))
            return status

    def __enter__(self) -> WebhookServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _handler(server: WebhookServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 10

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            status = server.receive(self.headers.get("Idempotency-Key", ""), body)
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler
