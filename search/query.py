"""A query, built one way for the page, the API and the CLI.

`build_query` takes what a front end was given (uploaded files, examples that may be URLs,
catalog ids or file paths, text, filter fields, paging) and returns a checked `Query`, or raises
`QueryError` with one sentence. `classify` is the one rule that tells an example's kind.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest.dates import to_iso
from store.index import Strategy

MAX_EXAMPLES = 16  # positives, and negatives, in one query: each image costs an embedding
MAX_TOP_K = 1000


class QueryError(ValueError):
    """A query that cannot be answered as asked; the message is one sentence for the user."""


class UnknownImage(QueryError):
    """An id that is not in the catalog."""


class FetchFailed(QueryError):
    """An example image URL could not be downloaded (refused, unreachable, not an image)."""


@dataclass(frozen=True)
class Filters:
    """Payload filters: any of these sources / categories, a published-date range, title words.

    `since` and `until` are ISO 8601 dates or moments; a bare `until` date includes that day.
    """

    sources: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None
    words: str | None = None

    def where(self) -> dict[str, Any] | None:
        """The index's `where` mapping (store's filter language), None when empty."""
        where: dict[str, Any] = {}
        if self.sources:
            where["source"] = list(self.sources)
        if self.categories:
            where["category"] = list(self.categories)
        published: dict[str, str] = {}
        if self.since:
            published["gte"] = _moment(self.since, "since", end_of_day=False)
        if self.until:
            published["lte"] = _moment(self.until, "until", end_of_day=True)
        if "gte" in published and "lte" in published and published["gte"] > published["lte"]:
            raise QueryError("The date range is empty: `since` is after `until`.")
        if published:
            where["published_at"] = published
        if self.words and self.words.strip():
            where["title"] = {"text": self.words.strip()}
        return where or None


@dataclass(frozen=True)
class Examples:
    """Examples of one polarity, by kind: file contents, image URLs, catalog ids."""

    images: tuple[bytes, ...] = ()
    urls: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.images) + len(self.urls) + len(self.ids)


def is_url(value: str) -> bool:
    """An http(s) link: an example fetched through the guarded downloader."""
    return value.strip().lower().startswith(("http://", "https://"))


def is_id(value: str) -> bool:
    """A catalog point id (ids are UUIDs)."""
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def check_id(value: str) -> None:
    """QueryError (one sentence) for something that is not an image id."""
    if not is_id(value):
        shown = str(value)[:80]
        raise QueryError(f"{shown!r} is not an image id (ids are UUIDs).")


def classify(
    values: Sequence[str | bytes], *, read_file: Callable[[str], bytes] | None = None
) -> Examples:
    """Examples by kind: bytes are files, `http(s)://` are URLs, the rest are catalog ids.

    With `read_file` (the command line), a value that names an existing file, or that is not a
    UUID, is read as a file (OSError when it cannot be); without it, a value that is neither a
    URL nor a UUID is kept as an id, and `Query.check` says it is not one.
    """
    images: list[bytes] = []
    urls: list[str] = []
    ids: list[str] = []
    for value in values:
        if isinstance(value, bytes):
            images.append(value)
            continue
        text = value.strip()
        if not text:
            continue
        if is_url(text):
            urls.append(text)
        elif read_file is not None and (Path(value).exists() or not is_id(text)):
            images.append(read_file(value))
        else:
            ids.append(text)
    return Examples(tuple(images), tuple(urls), tuple(ids))


def parse_strategy(value: str | Strategy | None) -> Strategy:
    """The recommend strategy named by value (default average_vector); QueryError if unknown."""
    if value is None or value == "":
        return Strategy.AVERAGE_VECTOR
    try:
        return Strategy(value)
    except ValueError:
        names = ", ".join(s.value for s in Strategy)
        raise QueryError(f"strategy must be one of {names}.") from None


def parse_number(value: str | float | None, name: str) -> float | None:
    """An optional number from a form field or flag; QueryError if it is not one."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise QueryError(f"{name} must be a number.") from None


@dataclass(frozen=True)
class Query:
    """What to search for: examples of what is wanted and not wanted, text, filters, a page."""

    images: tuple[bytes, ...] = ()  # uploaded image files
    urls: tuple[str, ...] = ()  # image URLs, fetched through the guarded downloader
    ids: tuple[str, ...] = ()  # catalog point ids ("More like this": their stored vectors)
    negative_images: tuple[bytes, ...] = ()
    negative_urls: tuple[str, ...] = ()
    negative_ids: tuple[str, ...] = ()
    text: str | None = None  # matched against the CLIP vector (when a text model is enabled)
    filters: Filters = field(default_factory=Filters)
    top_k: int = 12
    offset: int = 0
    strategy: Strategy = Strategy.AVERAGE_VECTOR
    threshold: float | None = None

    @property
    def single_image(self) -> bool:
        """Exactly one example image and nothing else: the copy verdict applies."""
        return (
            len(self.images) + len(self.urls) == 1
            and not self.ids
            and not self.negatives
            and not (self.text or "").strip()
        )

    @property
    def negatives(self) -> int:
        """How many negative examples the query gives."""
        return len(self.negative_images) + len(self.negative_urls) + len(self.negative_ids)

    def check(self) -> None:
        """Raise QueryError (one sentence) for a query that cannot run."""
        positives = len(self.images) + len(self.urls) + len(self.ids)
        if not positives and not (self.text or "").strip():
            raise QueryError(
                "Give at least one example of what you want: an image, an image URL, a catalog "
                "id or some text."
            )
        if max(positives, self.negatives) > MAX_EXAMPLES:
            raise QueryError(
                f"A query takes at most {MAX_EXAMPLES} examples of what you want, and as many "
                "of what you do not want."
            )
        if not 1 <= self.top_k <= MAX_TOP_K:
            raise QueryError(f"top_k must be between 1 and {MAX_TOP_K}.")
        if self.offset < 0:
            raise QueryError("offset must be 0 or more.")
        parse_strategy(self.strategy)
        for pid in (*self.ids, *self.negative_ids):
            check_id(pid)
        if (self.text or "").strip() and (
            self.images or self.urls or self.negative_images or self.negative_urls
        ):
            raise QueryError(
                "A text query can be combined with catalog ids, not with example images."
            )


def build_query(
    *,
    positive: Examples = Examples(),  # frozen: a shared default is safe
    negative: Examples = Examples(),
    text: str | None = None,
    filters: Filters | None = None,
    top_k: int,
    offset: int = 0,
    strategy: str | Strategy | None = None,
    threshold: str | float | None = None,
) -> Query:
    """The checked Query for these inputs (QueryError, one sentence, when it cannot run)."""
    query = Query(
        images=positive.images,
        urls=positive.urls,
        ids=positive.ids,
        negative_images=negative.images,
        negative_urls=negative.urls,
        negative_ids=negative.ids,
        text=(text or "").strip() or None,
        filters=filters or Filters(),
        top_k=top_k,
        offset=offset,
        strategy=parse_strategy(strategy),
        threshold=parse_number(threshold, "threshold"),
    )
    query.check()
    return query


def _moment(value: str, name: str, *, end_of_day: bool) -> str:
    text = str(value).strip()
    iso = to_iso(text)
    if iso is None:
        raise QueryError(f"`{name}` must be a date such as 2024-05-01, not {text[:40]!r}.")
    if end_of_day and len(text) == 10:  # a bare date: the whole day
        day = datetime.fromisoformat(iso.replace("Z", "+00:00"))
        iso = day.replace(hour=23, minute=59, second=59, tzinfo=UTC).isoformat()
        iso = iso.replace("+00:00", "Z")
    return iso
