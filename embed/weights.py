"""Model files fetched on first use into the cache: pinned SHA-256, streamed, atomic, locked.

`fetch` downloads one file by URL with httpx to a temporary file in the destination's folder,
hashing while it streams, and renames it into place only when the SHA-256 (and the size, when
known) match the pin, so the cache never holds a partial or foreign file. A lock file beside the
destination keeps two processes (or threads) from downloading the same file twice: the second
waits and then finds the file in place. The connect timeout is short, so a machine without a
network learns it in seconds; a failure is remembered for the process, so a layer that is off
is not retried on every request. Every failure is a `FetchFailed` whose message is one sentence;
the details go to the log.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from embed.model import ModelUnavailable

log = logging.getLogger(__name__)

# A machine without a network fails at DNS or connect: it must hear so in seconds, not minutes.
CONNECT_TIMEOUT_S = 3.0
# Between two chunks of a download (a stalled server), not the whole download.
READ_TIMEOUT_S = 30.0
# Bound of a download whose size is not pinned (a CLIP safetensors file is about 600 MB).
MAX_BYTES = 2 * 1024**3
CHUNK = 1 << 20


class FetchFailed(ModelUnavailable):
    """A model file could not be fetched (offline, HTTP error, wrong checksum); one sentence."""

    def __init__(self, url: str, reason: str, status: int | None = None) -> None:
        super().__init__(f"{url} could not be fetched: {reason}")
        self.url = url
        self.reason = reason
        self.status = status  # the HTTP status when the server answered with an error


@dataclass(frozen=True)
class Pin:
    """What the file at a URL must be: its SHA-256 (hex) and size in bytes.

    `sha256` None means no published checksum exists for the file: it is accepted as downloaded
    and its SHA-256 is logged (say so wherever such a pin is defined).
    """

    sha256: str | None
    size: int | None = None


# {url: the failure}, so a layer that could not be fetched is not tried again in this process.
_failed: dict[str, FetchFailed] = {}
_failed_lock = threading.Lock()


def fetch(url: str, dest: Path, pin: Pin, *, client: httpx.Client | None = None) -> Path:
    """`dest`, downloaded from `url` first when it is not there (FetchFailed if it cannot be)."""
    if dest.is_file():
        return dest
    with _failed_lock:
        failed = _failed.get(url)
    if failed is not None:
        raise failed
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with _locked(dest):
            if dest.is_file():  # another process fetched it while this one waited
                return dest
            _download(url, dest, pin, client)
    except FetchFailed as exc:
        with _failed_lock:
            _failed[url] = exc
        raise
    except OSError as exc:  # the cache folder is not writable, the disk is full
        log.debug("fetching %s into %s failed", url, dest, exc_info=True)
        failure = FetchFailed(url, f"{dest.parent} is not writable ({exc.strerror or exc})")
        with _failed_lock:
            _failed[url] = failure
        raise failure from exc
    return dest


def sha256_of(path: Path) -> str:
    """The SHA-256 (hex) of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def _locked(dest: Path) -> Iterator[None]:
    """An exclusive lock on `dest`'s lock file (other processes and threads wait for it)."""
    lock = dest.with_name(f".{dest.name}.lock")
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _download(url: str, dest: Path, pin: Pin, client: httpx.Client | None) -> None:
    limit = pin.size if pin.size is not None else MAX_BYTES
    timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
    owned = client is None
    http = client or httpx.Client(timeout=timeout, follow_redirects=True)
    part: Path | None = None
    # Parts left by a process that died downloading (this one holds the lock, so none is live).
    for stale in dest.parent.glob(f".{dest.name}.*.part"):
        stale.unlink(missing_ok=True)
    try:
        log.info("fetching %s into %s", url, dest.parent)
        with http.stream("GET", url) as response:
            if response.status_code != 200:
                status = response.status_code
                raise FetchFailed(url, f"the server answered HTTP {status}", status)
            # The temporary file is in the destination's folder, so the rename is atomic.
            handle, name = tempfile.mkstemp(
                dir=dest.parent, prefix=f".{dest.name}.", suffix=".part"
            )
            part = Path(name)
            digest = hashlib.sha256()
            received = 0
            with os.fdopen(handle, "wb") as out:
                for chunk in response.iter_bytes(CHUNK):
                    received += len(chunk)
                    if received > limit:
                        raise FetchFailed(url, f"it is larger than the expected {limit} bytes")
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        if pin.size is not None and received != pin.size:
            raise FetchFailed(url, f"it has {received} bytes, not the expected {pin.size}")
        actual = digest.hexdigest()
        if pin.sha256 is None:
            log.warning(
                "%s has no published checksum: accepted as downloaded, SHA-256 %s", url, actual
            )
        elif actual != pin.sha256.strip().lower():
            log.warning("%s has SHA-256 %s, not the pinned %s", url, actual, pin.sha256)
            raise FetchFailed(url, "its SHA-256 is not the pinned one, so it was not kept")
        os.replace(part, dest)
        log.info("fetched %s (%d bytes, SHA-256 %s)", dest.name, received, actual)
    except httpx.HTTPError as exc:
        log.debug("fetching %s failed", url, exc_info=True)
        raise FetchFailed(url, _reason(exc)) from exc
    finally:
        if part is not None:
            part.unlink(missing_ok=True)
        if owned:
            http.close()


def _reason(exc: httpx.HTTPError) -> str:
    """A few words on why a request failed (no network, timeout, refused)."""
    if isinstance(exc, httpx.ConnectTimeout):
        return f"no connection within {CONNECT_TIMEOUT_S:g} s (no network?)"
    if isinstance(exc, httpx.TimeoutException):
        return f"the server sent nothing for {READ_TIMEOUT_S:g} s"
    if isinstance(exc, httpx.ConnectError):
        return f"no connection ({str(exc).strip() or 'no network?'})"
    return f"{type(exc).__name__} ({str(exc).strip()})"
