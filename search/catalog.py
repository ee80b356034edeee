"""Catalog operations beside search: one image's record, its files, a takedown, and counts.

The page's Catalog and Add views, the API's /images and /stats, and `imgsearch delete` use these.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image

from embed.decode import decode_preview
from ingest.sightings import places
from search.query import UnknownImage, check_id
from store.images import ImageStore
from store.index import VectorIndex

# File-size buckets of the catalog page (upper bound in bytes, label).
SIZE_BUCKETS = (
    (100_000, "< 100 kB"),
    (1_000_000, "100 kB - 1 MB"),
    (5_000_000, "1 - 5 MB"),
    (None, "> 5 MB"),
)
PIXEL_BUCKETS = (
    (500_000, "< 0.5 MP"),
    (2_000_000, "0.5 - 2 MP"),
    (8_000_000, "2 - 8 MP"),
    (None, "> 8 MP"),
)


@dataclass(frozen=True)
class Record:
    """One catalog image: its payload and every place it was published, earliest first."""

    id: str
    payload: dict[str, Any]
    timeline: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: id, payload, timeline."""
        return {"id": self.id, "payload": self.payload, "timeline": self.timeline}


@dataclass(frozen=True)
class CatalogStats:
    """Counts for the catalog page: per source, category, month, format, size."""

    total: int
    sources: list[tuple[str, int]]
    categories: list[tuple[str, int]]
    months: list[tuple[str, int]]  # published month (YYYY-MM), chronological
    ingested: list[tuple[str, int]]  # ingestion day (YYYY-MM-DD), chronological
    formats: list[tuple[str, int]]
    sizes: list[tuple[str, int]]  # file-size buckets
    pixels: list[tuple[str, int]]  # megapixel buckets
    total_bytes: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: each breakdown as a {label: count} object, in order."""
        return {
            "total": self.total,
            "total_bytes": self.total_bytes,
            **{
                name: dict(getattr(self, name))
                for name in (
                    "sources",
                    "categories",
                    "months",
                    "ingested",
                    "formats",
                    "sizes",
                    "pixels",
                )
            },
        }


class Catalog:
    """The catalog's images one by one: record, files, delete, counts."""

    def __init__(self, index: VectorIndex, images: ImageStore) -> None:
        self.index = index
        self.images = images

    def record(self, pid: str) -> Record:
        """An image's payload and timeline (UnknownImage when it is not in the catalog)."""
        check_id(pid)
        hits = self.index.get([pid])
        if not hits:
            raise UnknownImage(f"No image with id {pid} is in the catalog.")
        payload = hits[0].payload
        return Record(pid, payload, places(payload))

    def delete(self, pid: str) -> Record:
        """Remove an image (a takedown): its point, then its original and thumbnail.

        The point goes first, so no search returns an image whose files are gone; the
        ingestion state still knows the item, so the daily job does not bring it back unless
        its source changes it.
        """
        record = self.record(pid)
        self.index.delete([pid])
        for key in ("image_key", "thumbnail_key"):
            if record.payload.get(key):
                self.images.delete(str(record.payload[key]))
        return record

    def image_bytes(self, pid: str, kind: Literal["original", "thumbnail"]) -> tuple[bytes, str]:
        """(bytes, content type) of an image's original or thumbnail (UnknownImage/StoreError)."""
        payload = self.record(pid).payload
        if kind == "thumbnail":
            return self.images.get(str(payload["thumbnail_key"])), "image/jpeg"
        content_type = str(payload.get("content_type") or "application/octet-stream")
        return self.images.get(str(payload["image_key"])), content_type

    def stats(self) -> CatalogStats:
        """Counts per source, category (facets), month, ingestion day, format and size."""
        months: Counter[str] = Counter()
        ingested: Counter[str] = Counter()
        formats: Counter[str] = Counter()
        sizes: Counter[str] = Counter()
        pixels: Counter[str] = Counter()
        total_bytes = 0
        for hit in self.index.scroll():
            p = hit.payload
            published = str(p.get("published_at") or "")
            months[published[:7] if len(published) >= 7 else "undated"] += 1
            if p.get("ingested_at"):
                ingested[str(p["ingested_at"])[:10]] += 1
            formats[str(p.get("format") or "unknown")] += 1
            size = int(p.get("bytes") or 0)
            total_bytes += size
            sizes[_bucket(size, SIZE_BUCKETS)] += 1
            area = int(p.get("width") or 0) * int(p.get("height") or 0)
            pixels[_bucket(area, PIXEL_BUCKETS)] += 1
        return CatalogStats(
            total=self.index.count(),
            sources=[(str(k), n) for k, n in self.index.facet("source")],
            categories=[(str(k), n) for k, n in self.index.facet("category")],
            months=sorted(months.items()),
            ingested=sorted(ingested.items()),
            formats=formats.most_common(),
            sizes=[(label, sizes[label]) for _, label in SIZE_BUCKETS if sizes[label]],
            pixels=[(label, pixels[label]) for _, label in PIXEL_BUCKETS if pixels[label]],
            total_bytes=total_bytes,
        )

    def count(self) -> int:
        """Number of images in the catalog."""
        return self.index.count()

    # -- the files behind a payload (the page) -------------------------------------------------
    def thumbnail(self, payload: Mapping[str, Any]) -> bytes:
        """The result-grid thumbnail of a catalog image."""
        return self.images.get(str(payload["thumbnail_key"]))

    def original(self, payload: Mapping[str, Any]) -> bytes:
        """The original bytes of a catalog image."""
        return self.images.get(str(payload["image_key"]))

    def preview(self, payload: Mapping[str, Any], side: int = 640) -> Image.Image:
        """A display-sized copy of a catalog image's original (DecodeError/StoreError if not)."""
        return decode_preview(self.images.get(str(payload["image_key"])), side)

    def original_link(self, payload: Mapping[str, Any]) -> str | None:
        """A URL for the original where the store can give one (S3: presigned)."""
        return self.images.link(str(payload["image_key"]))


def _bucket(value: int, buckets: Sequence[tuple[int | None, str]]) -> str:
    for bound, label in buckets:
        if bound is None or value < bound:
            return label
    return buckets[-1][1]
