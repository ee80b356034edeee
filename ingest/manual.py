"""Adding one image by hand (UI, API, CLI): through the same pipeline as the daily job.

The image becomes a one-item source run by `Pipeline.run`, so it is decoded by the same decoder,
deduplicated by content hash, stored, embedded and timelined (an image already in the catalog
gains this place in its timeline) exactly like a feed item, and the run is recorded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from embed.decode import decode_image
from ingest.dates import to_iso
from ingest.items import ItemMeta, Source, SourceItem
from ingest.pipeline import Pipeline
from store.keys import point_id

SOURCE = "manual"  # the source name of images added by hand
MAX_TEXT = 10_000  # characters of a title, description or link


class ManualAddError(ValueError):
    """The image could not be added as given; the message is one sentence for the user."""


@dataclass(frozen=True)
class ManualImage:
    """An image and what the person adding it says about it."""

    data: bytes
    title: str | None = None
    description: str | None = None
    source_uri: str | None = None  # where it was published (an article link)
    published_at: str | None = None  # any date the feeds accept (ISO 8601, RFC 822)
    category: str | None = None


@dataclass(frozen=True)
class Added:
    """The outcome: the image's id, and whether it was new to the catalog."""

    id: str
    sha256: str
    status: Literal["new", "known"]  # known: already in the catalog, this place recorded

    @property
    def new(self) -> bool:
        """True when the image was not in the catalog before."""
        return self.status == "new"


class _OneItem(Source):
    """A source that offers one item."""

    def __init__(self, name: str, item: SourceItem) -> None:
        self.name = name
        self.item = item

    def discover(self) -> Iterator[SourceItem]:
        """Yield the item."""
        yield self.item


def manual_item(image: ManualImage, sha256: str, *, source: str = SOURCE) -> SourceItem:
    """The SourceItem of a hand-added image (ManualAddError for unusable metadata)."""
    fields = {
        "title": image.title,
        "description": image.description,
        "source_uri": image.source_uri,
        "category": image.category,
    }
    for name, value in fields.items():
        if value is not None and len(value) > MAX_TEXT:
            raise ManualAddError(f"The {name} is longer than {MAX_TEXT} characters.")
    published = None
    if image.published_at and image.published_at.strip():
        published = to_iso(image.published_at.strip())
        if published is None:
            raise ManualAddError(
                f"The date {image.published_at.strip()[:40]!r} is not readable; use ISO 8601 "
                "such as 2024-05-01 or 2024-05-01T12:00:00Z."
            )
    meta = ItemMeta(
        # A place is identified by its link; without one, the image itself stands for it.
        source_uri=(image.source_uri or "").strip() or f"manual:{sha256}",
        title=(image.title or "").strip() or None,
        description=(image.description or "").strip() or None,
        category=(image.category or "").strip() or None,
        published_at=published,
    )
    # The item is this image at this place; an edited caption is a new version of it.
    version = hashlib.sha256(json.dumps(meta.as_payload(), sort_keys=True).encode()).hexdigest()
    data = image.data
    return SourceItem(
        source=source,
        key=f"{sha256}|{meta.source_uri}",
        version=version,
        meta=meta,
        fetch=lambda: data,
    )


def add_image(pipeline: Pipeline, image: ManualImage, *, source: str = SOURCE) -> Added:
    """Ingest one image with its metadata; DecodeError, ManualAddError or the run's errors.

    The bytes are decoded first, so a file that is not an image is refused with its reason
    instead of landing in the quarantine.
    """
    sha256 = decode_image(image.data).sha256  # the pixels are dropped: the pipeline decodes
    item = manual_item(image, sha256, source=source)
    pid = point_id(sha256)
    existed = bool(pipeline.index.existing([pid]))
    report = pipeline.run([_OneItem(source, item)])
    counts = report.source(source)
    if counts.failed:
        # The person adding it gets the reason now; a quarantined hand-added item has no
        # source to be retried from.
        pipeline.state.release(source, item.key)
        failures = report.failures_of(source, item.key)
        reason = failures[0].reason if failures else "it could not be stored"
        raise ManualAddError(f"The image could not be added: {reason}.")
    if not pipeline.index.existing([pid]):
        raise ManualAddError("The image could not be added: the ingestion run stopped first.")
    return Added(pid, sha256, "known" if existed else "new")
