"""A real threaded HTTP server on 127.0.0.1 serving feeds and images (some broken) for tests."""

from __future__ import annotations

import io
import struct
import threading
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

MAX_REQUESTS = 2000  # a runaway client loop ends in 503s instead of a hung test


@dataclass
class Route:
    """What one path answers."""

    body: bytes = b""
    content_type: str | None = "application/octet-stream"
    status: int = 200
    delay_s: float = 0.0  # before the headers: longer than the client's read timeout = "slow"
    fail_first: int = 0  # answer 500 this many times, then normally
    headers: dict[str, str] = field(default_factory=dict)
    send_length: bool = True  # False: no Content-Length, the body ends when the socket closes
    drip_s: float = 0.0  # > 0: the body goes out one byte per drip_s seconds (a stalled server)


@dataclass(frozen=True)
class Seen:
    """One request as the server saw it."""

    path: str
    user_agent: str


class FeedServer:
    """Routes by path; records requests, user agents and the peak of concurrent requests."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Seen] = []
        self.max_concurrent = 0
        self._concurrent = 0
        self._failures: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    # -- set-up -------------------------------------------------------------------------------
    @property
    def base(self) -> str:
        """http://127.0.0.1:PORT"""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self._httpd.server_address[1])

    @property
    def host_port(self) -> str:
        """127.0.0.1:PORT, as an allowed_private_hosts entry for exactly this server."""
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        """Absolute URL of a path on this server."""
        return self.base + path

    def add(
        self,
        path: str,
        body: bytes | str = b"",
        content_type: str | None = "application/octet-stream",
        **options: Any,
    ) -> str:
        """Serve body at path (str bodies as UTF-8; content_type None sends none); returns URL."""
        data = body.encode() if isinstance(body, str) else body
        self.routes[path] = Route(body=data, content_type=content_type, **options)
        return self.url(path)

    def hits(self, path: str) -> int:
        """How many requests reached path."""
        with self._lock:
            return sum(1 for seen in self.requests if seen.path == path)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> FeedServer:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Wake sleeping handlers, stop serving and close the socket."""
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FeedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request handling ---------------------------------------------------------------------
    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        """Serve one GET."""
        path = handler.path.split("?", 1)[0]
        with self._lock:
            self.requests.append(Seen(path, handler.headers.get("User-Agent", "")))
            over = len(self.requests) > MAX_REQUESTS
            self._concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self._concurrent)
        route = self.routes.get(path)
        status = 503 if over else 404 if route is None else route.status
        try:
            if route is not None and route.delay_s:
                self._stopping.wait(route.delay_s)
            if route is not None and status == 200 and route.fail_first:
                with self._lock:
                    failed = self._failures.get(path, 0)
                    if failed < route.fail_first:
                        self._failures[path] = failed + 1
                        status = 500
        finally:
            # Counted until just before the response goes out: the client holds its host slot
            # at least that long, so the peak seen here can never exceed the client's.
            with self._lock:
                self._concurrent -= 1
        body = route.body if route is not None and status == route.status else b"error"
        handler.send_response(status)
        if route is not None and status == route.status:
            if route.content_type:
                handler.send_header("Content-Type", route.content_type)
            for name, value in route.headers.items():
                handler.send_header(name, value)
        else:
            handler.send_header("Content-Type", "text/plain")
        if route is None or route.send_length:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if route is not None and route.drip_s > 0 and status == route.status:
            for i in range(len(body)):
                handler.wfile.write(body[i : i + 1])
                handler.wfile.flush()
                if self._stopping.wait(route.drip_s):
                    return
            return
        handler.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (read timeout) closes its socket; that is the test's point.
        return


def _handler(server: FeedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # a stuck client cannot hold a handler thread for ever

        def do_GET(self) -> None:
            server.answer(self)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A real 1x1 PNG whose IHDR claims width x height (CRC fixed): a decompression bomb header."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 10, 10)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR data starts after sig+len+type
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)
