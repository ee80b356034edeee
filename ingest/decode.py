"""Stage decode: Fetched bytes -> Decoded RGB image (or Failed with the reason)."""

from __future__ import annotations

from embed.decode import DecodeError, decode_image
from ingest.items import Decoded, Failed, Fetched


def decode(fetched: Fetched) -> Decoded | Failed:
    """Decode through the one safe decoder every path uses."""
    try:
        return Decoded(fetched.item, fetched.data, decode_image(fetched.data))
    except DecodeError as exc:
        # A changed source item gets a new version and is tried again; retries of the same
        # bytes would fail the same way unless the failure was a cut-off download.
        return Failed(fetched.item, "decode", exc.reason, retryable="truncated" in exc.reason)
