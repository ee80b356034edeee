"""Stage fetch: SourceItem -> Fetched bytes (or Failed with the reason)."""

from __future__ import annotations

from ingest.items import Cancelled, Failed, Fetched, FetchError, SourceItem

CANCELLED = "cancelled"  # the stage of an item the run left for later (not quarantined)


def fetch(item: SourceItem) -> Fetched | Failed:
    """Get the item's bytes through its source's fetcher."""
    try:
        return Fetched(item, item.fetch())
    except Cancelled as exc:
        return Failed(item, CANCELLED, exc.reason)
    except FetchError as exc:
        return Failed(item, "fetch", exc.reason, exc.retryable)
    except OSError as exc:  # a file vanished or became unreadable between discover and fetch
        return Failed(item, "fetch", f"{type(exc).__name__}: {exc.strerror or exc}")
