"""The downloader: one shared httpx client per source with caps, checks, retries and host limits.

Images and documents (feeds, CSV, HTML pages) go through the same client. Every failure becomes a
FetchError whose reason is a few words a user can read in the quarantine list. Connections go
through ingest/netguard.py, which refuses private addresses and odd ports; redirects are followed
here, hop by hop, so every hop meets the same checks.
"""

from __future__ import annotations

import email.utils
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpcore
import httpx

from config import FetchSettings
from ingest.items import Cancelled, FetchError
from ingest.netguard import GuardedBackend, Policy, Refused

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
MAX_RETRY_AFTER_S = 60.0  # a server asking for longer than this gets our own backoff instead
# Generic binary types some servers (and S3 uploads without a type) use for images.
BINARY_TYPES = frozenset({"application/octet-stream", "binary/octet-stream", "application/binary"})
IMAGE_ACCEPT = "image/avif,image/webp,image/png,image/jpeg,image/*;q=0.8,*/*;q=0.1"
DOCUMENT_ACCEPT = (
    "application/rss+xml,application/atom+xml,application/xml;q=0.9,text/html;q=0.9,"
    "text/csv;q=0.9,application/x-ndjson;q=0.9,*/*;q=0.5"
)


@dataclass(frozen=True)
class Document:
    """A fetched feed or page: its final URL (after redirects), media type and raw bytes."""

    url: str
    content_type: str  # lower-case media type without parameters; "" when the server sent none
    charset: str | None
    content: bytes

    @property
    def text(self) -> str:
        """The content decoded with the declared charset (UTF-8 otherwise), never failing."""
        try:
            return self.content.decode(self.charset or "utf-8-sig", errors="replace")
        except LookupError:  # an unknown charset name in the header
            return self.content.decode("utf-8-sig", errors="replace")


def image_signature(head: bytes) -> str | None:
    """The image format the first bytes announce (JPEG, PNG, GIF, WEBP, BMP, TIFF), or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    return None


def split_content_type(value: str | None) -> tuple[str, str | None]:
    """(media type lower-cased, charset or None) from a Content-Type header."""
    if not value:
        return "", None
    parts = [p.strip() for p in value.split(";")]
    charset = None
    for part in parts[1:]:
        name, _, arg = part.partition("=")
        if name.strip().lower() == "charset" and arg:
            charset = arg.strip().strip("\"'") or None
    return parts[0].lower(), charset


class _Retry(Exception):
    """A transient failure: try again after a pause (the wrapped error if attempts run out)."""

    def __init__(self, error: FetchError, wait_s: float | None = None) -> None:
        super().__init__(error.reason)
        self.error = error
        self.wait_s = wait_s


class Downloader:
    """Thread-safe HTTP fetcher shared by one source's discovery and its items' fetches."""

    def __init__(self, settings: FetchSettings) -> None:
        self.settings = settings
        self.policy = Policy(settings.allowed_private_hosts)
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()
        self._hosts: dict[str, threading.BoundedSemaphore] = {}
        self._hosts_lock = threading.Lock()
        self._cancelled = threading.Event()

    # -- public -------------------------------------------------------------------------------
    def image(self, url: str) -> bytes:
        """Download an image: size-capped, content-type and magic-byte checked, with retries."""
        return self._get(url, image=True).content

    def document(self, url: str) -> Document:
        """Download a feed or page (no image checks; capped at max_page_bytes), with retries."""
        return self._get(url, image=False)

    def cancel(self) -> None:
        """Stop work in flight: no new request, no retry, and an open body stops at its next
        chunk (or at the read timeout when the server sends nothing). Raises Cancelled there."""
        self._cancelled.set()

    def close(self) -> None:
        """Close the connection pool (and clear a cancel); a later call opens a new one."""
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            self._cancelled.clear()

    def __enter__(self) -> Downloader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------
    @property
    def client(self) -> httpx.Client:
        """The shared client, built on first use (httpx.Client is safe across threads)."""
        with self._client_lock:
            if self._client is None:
                s = self.settings
                limits = httpx.Limits(
                    max_connections=max(s.concurrency, s.per_host),
                    max_keepalive_connections=max(s.concurrency, s.per_host),
                )
                self._client = httpx.Client(
                    timeout=httpx.Timeout(
                        connect=s.connect_timeout_s,
                        read=s.read_timeout_s,
                        write=s.read_timeout_s,
                        # Waiting for a pooled connection: the host semaphore already bounds
                        # demand, so this only trips when the pool itself is wedged.
                        pool=s.connect_timeout_s + s.read_timeout_s,
                    ),
                    transport=_guarded_transport(self.policy, limits),
                    # No environment proxies: a proxy resolves names itself, out of our checks.
                    trust_env=False,
                    follow_redirects=False,  # _once follows them, checking every hop
                    headers={"User-Agent": s.user_agent},
                )
            return self._client

    @contextmanager
    def _host_slot(self, host: str) -> Iterator[None]:
        """Hold one of the per_host slots for this host while a request is open."""
        with self._hosts_lock:
            semaphore = self._hosts.get(host)
            if semaphore is None:
                semaphore = self._hosts[host] = threading.BoundedSemaphore(self.settings.per_host)
        with semaphore:
            yield

    def _get(self, url: str, *, image: bool) -> Document:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError(f"not an http(s) URL: {url[:200]}", retryable=False)
        host = f"{parts.hostname}:{parts.port or ''}"
        attempts = self.settings.retries + 1
        for attempt in range(attempts):
            self._check_cancelled()
            try:
                with self._host_slot(host):
                    self._check_cancelled()  # the slot may have taken a while
                    return self._once(url, image=image)
            except _Retry as retry:
                self._check_cancelled()  # no retry once the run is stopping
                if attempt == attempts - 1:
                    if attempts > 1:
                        raise FetchError(
                            f"{retry.error.reason} (after {attempts} attempts)",
                            retryable=retry.error.retryable,
                        ) from None
                    raise retry.error from None
                pause = self.settings.backoff_s * 2**attempt
                if retry.wait_s is not None:
                    pause = max(pause, retry.wait_s)
                log.debug("retrying %s in %.2f s: %s", url, pause, retry.error.reason)
                # Outside the host slot, so others can use it meanwhile; a cancel cuts it short.
                self._cancelled.wait(pause)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _once(self, url: str, *, image: bool) -> Document:
        for _hop in range(MAX_REDIRECTS + 1):
            self._precheck(url)
            document_or_next = self._hop(url, image=image)
            if isinstance(document_or_next, Document):
                return document_or_next
            url = document_or_next
        raise FetchError(f"more than {MAX_REDIRECTS} redirects", retryable=False)

    def _precheck(self, url: str) -> None:
        """Refuse a hop's scheme, port or numeric private host before anything is sent."""
        parts = urlsplit(url)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise FetchError(f"bad URL: {exc}", retryable=False) from exc
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError(f"not an http(s) URL: {url[:200]}", retryable=False)
        try:
            self.policy.precheck(parts.hostname, port)
        except Refused as exc:
            raise FetchError(exc.reason, retryable=False) from None

    def _hop(self, url: str, *, image: bool) -> Document | str:
        """One request: the Document, or the absolute URL a redirect points to."""
        accept = IMAGE_ACCEPT if image else DOCUMENT_ACCEPT
        cap = self.settings.max_bytes if image else self.settings.max_page_bytes
        try:
            with self.client.stream("GET", url, headers={"Accept": accept}) as response:
                if response.is_redirect:
                    return str(response.url.join(response.headers["location"]))
                self._check_status(response)
                media_type, charset = split_content_type(response.headers.get("content-type"))
                if image and not _image_type_ok(media_type):
                    raise FetchError(f"not an image (content-type {media_type})", retryable=False)
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > cap:
                    raise FetchError(f"larger than {cap} bytes", retryable=False)
                content = self._read_capped(response, cap, image=image)
                return Document(str(response.url), media_type, charset, content)
        except FetchError:
            raise
        except Refused as exc:
            raise FetchError(exc.reason, retryable=False) from None
        except httpx.TimeoutException as exc:
            kind = type(exc).__name__.removesuffix("Timeout").lower() or "request"
            raise _Retry(FetchError(f"timed out ({kind})")) from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise FetchError(f"bad URL: {exc}", retryable=False) from exc
        except httpx.DecodingError as exc:
            raise FetchError(f"bad content encoding: {exc}", retryable=False) from exc
        except httpx.TransportError as exc:
            raise _Retry(FetchError(f"connection failed ({type(exc).__name__})")) from exc

    @staticmethod
    def _check_status(response: httpx.Response) -> None:
        status = response.status_code
        if status == 429 or status >= 500:
            raise _Retry(FetchError(f"HTTP {status}"), _retry_after(response))
        if status >= 300:
            # Left 3xx means a redirect without Location. 410 says the item is gone for good;
            # other 4xx stay retryable because the quarantine's own backoff paces later tries.
            raise FetchError(f"HTTP {status}", retryable=status != 410)

    def _check_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise Cancelled()

    def _read_capped(self, response: httpx.Response, cap: int, *, image: bool) -> bytes:
        deadline = time.monotonic() + self.settings.total_timeout_s
        chunks: list[bytes] = []
        size = 0
        checked = not image
        for chunk in response.iter_bytes():
            self._check_cancelled()
            size += len(chunk)
            if size > cap:
                raise FetchError(f"larger than {cap} bytes", retryable=False)
            chunks.append(chunk)
            if not checked and size >= 12:
                # Refuse non-images on the first bytes rather than after the whole body.
                _check_signature(b"".join(chunks))
                checked = True
            if time.monotonic() > deadline:
                raise _Retry(
                    FetchError(f"timed out (slower than {self.settings.total_timeout_s:g} s)")
                )
        content = b"".join(chunks)
        if not checked:
            _check_signature(content)
        return content


def _guarded_transport(policy: Policy, limits: httpx.Limits) -> httpx.HTTPTransport:
    """httpx's transport with its connection pool opening sockets through the guard."""
    transport = httpx.HTTPTransport(limits=limits, trust_env=False)
    # httpx has no public hook for httpcore's network backend, so the pool it built is swapped
    # for the same pool on a guarded backend (the settings mirror HTTPTransport's defaults).
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=True),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=GuardedBackend(policy),
    )
    return transport


def _image_type_ok(media_type: str) -> bool:
    return not media_type or media_type.startswith("image/") or media_type in BINARY_TYPES


def _check_signature(head: bytes) -> None:
    if not head:
        raise FetchError("empty response", retryable=True)
    if image_signature(head) is None:
        raise FetchError("not an image (unrecognised file signature)", retryable=False)


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds a Retry-After header asks for (capped), or None when absent or unreadable."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return min(max(moment.timestamp() - time.time(), 0.0), MAX_RETRY_AFTER_S)
