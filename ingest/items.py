"""Typed hand-offs between the ingestion stages."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from config import Settings, SourceKind, SourceSettings
from embed.decode import DecodedImage


class FetchError(RuntimeError):
    """An item's bytes could not be fetched; `reason` is short and user-readable."""

    def __init__(self, reason: str, *, retryable: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class SourceConfigError(ValueError):
    """A declared or ad-hoc source cannot be built; the message says why."""


class Cancelled(FetchError):
    """The run is stopping or out of time: the item is left for the next run, not quarantined."""

    def __init__(self, reason: str = "the run stopped before this item was fetched") -> None:
        super().__init__(reason, retryable=True)


@dataclass(frozen=True)
class ItemMeta:
    """What a source knows about an item besides its bytes."""

    source_uri: str
    title: str | None = None
    description: str | None = None
    category: str | None = None
    published_at: str | None = None  # ISO 8601, UTC where the source says so

    def as_payload(self) -> dict[str, Any]:
        """The non-empty fields, for the point's payload."""
        return {k: v for k, v in self.__dict__.items() if v not in (None, "")}


@dataclass(frozen=True)
class SourceItem:
    """discover -> fetch: one thing a source offers, with a way to get its bytes."""

    source: str
    key: str  # stable identity inside the source (path, S3 key, image URL + page URL)
    version: str  # changes when the item changes (size+mtime, ETag, content hash)
    meta: ItemMeta
    fetch: Callable[[], bytes] = field(compare=False, repr=False)


@dataclass(frozen=True)
class Fetched:
    """fetch -> decode."""

    item: SourceItem
    data: bytes


@dataclass(frozen=True)
class Decoded:
    """decode -> store."""

    item: SourceItem
    data: bytes
    image: DecodedImage
    metadata: Mapping[str, Any] | None = None  # embed/metadata.py's as_dict; None: not read


@dataclass(frozen=True)
class Stored:
    """store -> embed: originals and thumbnail written, each descriptor's per-image work done."""

    item: SourceItem
    image: DecodedImage
    point_id: str
    image_key: str
    thumbnail_key: str
    prepared: Mapping[str, Any] = field(repr=False, compare=False)  # by descriptor name
    metadata: Mapping[str, Any] | None = None  # the file's own claims; None: not read


@dataclass(frozen=True)
class Skipped:
    """An item that needs no embedding: its image is already in the catalog."""

    item: SourceItem
    sha256: str
    point_id: str
    nbytes: int


@dataclass(frozen=True)
class Failed:
    """An item that failed at some stage; goes to the quarantine."""

    item: SourceItem
    stage: str
    reason: str
    retryable: bool = True


class Source(ABC):
    """Anything that can list items: a folder, an S3 prefix, a web feed.

    The pipeline calls every method declared here; the hooks besides `discover` have defaults
    that do nothing, so a source overrides only what it needs. A source that can be declared in
    the settings names its `kinds` (config's SourceKind) and builds itself in `from_spec`.
    """

    name: str
    kinds: ClassVar[tuple[SourceKind, ...]] = ()  # the declared kinds this class builds

    @classmethod
    def from_spec(cls, spec: SourceSettings, settings: Settings, *, s3_client: Any = None) -> Self:
        """Build the source a declaration names (its kind is one of `kinds`, never "auto")."""
        raise SourceConfigError(f"source {spec.name!r}: {cls.__name__} cannot be declared")

    @abstractmethod
    def discover(self) -> Iterator[SourceItem]:
        """Yield every item the source currently offers."""

    def warnings(self) -> Sequence[str]:
        """What the last discovery wants the run report to show (e.g. a capped feed)."""
        return ()

    def cancel(self) -> None:
        """Stop downloads in flight: the run is stopping or out of time (any thread)."""
        return None  # nothing in flight by default

    def close(self) -> None:
        """Release what the source holds, once the run that used it is over."""
        return None  # nothing held by default
