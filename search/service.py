"""The search service used by the UI, the CLI and the HTTP API.

One entry point, `SearchService.search(Query)`, answers every query mode: one or several example
images (uploaded bytes, image URLs fetched through the guarded downloader, catalog ids for "More
like this"), "not like this" negatives (Qdrant's recommend API, average-vector or best-score),
text (the CLIP vector), payload filters and offset paging. The copy verdict runs only when the
query is exactly one image. `record`, `delete` and `stats` serve the catalog page and the API.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from config import DecodeSettings, FetchSettings, VerdictSettings
from embed.decode import DecodedImage, Fit, decode_image, decode_preview
from embed.descriptors import CLIP, IMAGE, PDQ, Descriptors, hamming_of
from embed.layout import SIDE as LAYOUT_SIDE
from embed.pdq import HASH_SIDE
from ingest.dates import to_iso
from ingest.decode import MODEL_SHORT_SIDE
from ingest.http import Downloader
from ingest.items import FetchError
from ingest.sightings import places
from search.verdict import CopyDetector, Verdict
from store.images import ImageStore
from store.index import BadFilter, Hit, VectorIndex
from store.keys import point_id

Strategy = Literal["average_vector", "best_score"]
STRATEGIES: tuple[Strategy, ...] = ("average_vector", "best_score")
MAX_EXAMPLES = 16  # positives plus negatives in one query: each image costs an embedding
NO_VERDICT = Verdict("none", [], [], {"verdict": "not run: it needs exactly one query image"})
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
        """The index's `where` mapping (store/index.py build_filter), None when empty."""
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
    strategy: Strategy = "average_vector"
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
        if positives + self.negatives > MAX_EXAMPLES:
            raise QueryError(f"A query takes at most {MAX_EXAMPLES} example images in all.")
        if not 1 <= self.top_k <= 1000:
            raise QueryError("top_k must be between 1 and 1000.")
        if self.offset < 0:
            raise QueryError("offset must be 0 or more.")
        if self.strategy not in STRATEGIES:
            raise QueryError(f"strategy must be one of {', '.join(STRATEGIES)}.")
        for pid in (*self.ids, *self.negative_ids):
            _check_id(pid)
        if (self.text or "").strip() and (
            self.images or self.urls or self.negative_images or self.negative_urls
        ):
            raise QueryError(
                "A text query can be combined with catalog ids, not with example images."
            )


@dataclass(frozen=True)
class Match:
    """One catalog image similar to the query."""

    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)
    exact: bool = False  # the very same bytes (same SHA-256) as the query
    copy: bool = False  # the verdict found it to be the query's picture (exact or edited)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: id, score, exact, copy, payload."""
        return {
            "id": self.id,
            "score": self.score,
            "exact": self.exact,
            "copy": self.copy,
            "payload": self.payload,
        }


@dataclass(frozen=True)
class Card:
    """One picture in the result grid: its best-ranked match and the copies folded under it."""

    lead: Match
    copies: list[Match] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: the lead match's id and the ids folded under it."""
        return {"id": self.lead.id, "copies": [m.id for m in self.copies]}


@dataclass(frozen=True)
class SearchResult:
    """The answer to one query: ranked matches, folded cards and (one image) the verdict."""

    query_sha256: str
    query_width: int
    query_height: int
    exact_match: Match | None
    matches: list[Match]
    verdict: Verdict  # NO_VERDICT unless the query was exactly one image (see has_verdict)
    cards: list[Card] = field(default_factory=list)
    higher_is_better: bool = True
    has_verdict: bool = True
    offset: int = 0

    @property
    def in_catalog(self) -> bool:
        """True when the exact image is already in the catalog."""
        return self.exact_match is not None

    def as_dict(self) -> dict[str, Any]:
        """The `POST /api/search` answer: matches, folded cards, and the verdict if it ran."""
        out: dict[str, Any] = {
            "matches": [m.as_dict() for m in self.matches],
            "cards": [c.as_dict() for c in self.cards],
            "offset": self.offset,
            "higher_is_better": self.higher_is_better,
        }
        if self.has_verdict:
            out["verdict"] = self.verdict.kind
            out["sha256"] = self.query_sha256
        return out

    def as_check(self, file: str) -> dict[str, Any]:
        """The `imgsearch check --json` / `POST /api/check` object for this query."""
        original = self.verdict.original
        return {
            "file": file,
            "sha256": self.query_sha256,
            "verdict": self.verdict.kind,
            "original": (
                {"id": original.id, "sha256": original.sha256, "payload": original.payload}
                if original
                else None
            ),
            "evidence": self.verdict.evidence_dict(),
            "copies": [m.as_dict() for m in self.verdict.members],
            "timeline": [
                {
                    k: place.get(k)
                    for k in (
                        "published_at",
                        "title",
                        "source",
                        "source_uri",
                        "sha256",
                        "first_seen",
                    )
                }
                for place in self.verdict.timeline
            ],
            "matches": [m.as_dict() for m in self.matches],
        }


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


class SearchService:
    """Answers queries against the catalog; also the record, delete and stats of one image."""

    def __init__(
        self,
        index: VectorIndex,
        images: ImageStore,
        descriptors: Descriptors,
        verdict: VerdictSettings | None = None,
        fetch: FetchSettings | None = None,
        decode: DecodeSettings | None = None,
    ) -> None:
        self.index = index
        self.images = images
        self.descriptors = descriptors
        self.detector = CopyDetector(index, images, descriptors, verdict or VerdictSettings())
        self.fetch_settings = fetch or FetchSettings()
        self.max_pixels = (decode or DecodeSettings()).max_pixels
        self.fit = query_fit(self.detector.settings)
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="search")
        self._downloader: Downloader | None = None
        self._downloader_lock = threading.Lock()

    # -- query modes ------------------------------------------------------------------------
    def search(self, query: Query) -> SearchResult:
        """Answer any query (QueryError, DecodeError or TextSearchUnavailable if it cannot)."""
        query.check()
        try:
            return self._search(query)
        except BadFilter as exc:
            raise QueryError(str(exc)) from exc

    def _search(self, query: Query) -> SearchResult:
        where = query.filters.where()
        if query.single_image:
            data = query.images[0] if query.images else self.fetch_image(query.urls[0])
            return self.search_image(
                self.decode(data),
                top_k=query.top_k,
                threshold=query.threshold,
                where=where,
                offset=query.offset,
            )
        self._check_ids_exist((*query.ids, *query.negative_ids))
        if (query.text or "").strip():
            hits = self._text_hits(query, where)
        else:
            positive: list[str | np.ndarray] = [
                *self._vectors(query.images, query.urls),
                *query.ids,
            ]
            negative: list[str | np.ndarray] = [
                *self._vectors(query.negative_images, query.negative_urls),
                *query.negative_ids,
            ]
            hits = self.index.recommend(
                positive,
                negative,
                using=IMAGE,
                strategy=query.strategy,
                top_k=query.top_k,
                offset=query.offset,
                threshold=query.threshold,
                where=where,
            )
        matches = [Match(h.id, h.score, h.payload) for h in hits]
        return SearchResult(
            query_sha256="",
            query_width=0,
            query_height=0,
            exact_match=None,
            matches=matches,
            verdict=NO_VERDICT,
            cards=self.fold(matches),
            higher_is_better=self.index.higher_is_better,
            has_verdict=False,
            offset=query.offset,
        )

    def _text_hits(self, query: Query, where: Mapping[str, Any] | None) -> list[Hit]:
        vector = self.descriptors.encode_text(str(query.text))
        if not query.ids and not query.negative_ids:
            return self.index.query(
                vector,
                using=CLIP,
                top_k=query.top_k,
                threshold=query.threshold,
                where=where,
                offset=query.offset,
            )
        return self.index.recommend(
            [vector, *query.ids],
            list(query.negative_ids),
            using=CLIP,
            strategy=query.strategy,
            top_k=query.top_k,
            offset=query.offset,
            threshold=query.threshold,
            where=where,
        )

    def _vectors(self, images: Sequence[bytes], urls: Sequence[str]) -> list[np.ndarray]:
        """The similarity vector of each example image (bytes, or fetched from its URL)."""
        datas = [*images, *(self.fetch_image(url) for url in urls)]
        return [self.descriptors[IMAGE].query_vectors(self.decode(data).image)[0] for data in datas]

    def _check_ids_exist(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        missing = sorted(set(ids) - self.index.existing(list(ids)))
        if missing:
            raise UnknownImage(f"No image with id {missing[0]} is in the catalog.")

    def fetch_image(self, url: str) -> bytes:
        """An example image's bytes from its URL, through the guarded downloader (FetchFailed)."""
        with self._downloader_lock:
            if self._downloader is None:
                self._downloader = Downloader(self.fetch_settings)
            downloader = self._downloader
        try:
            return downloader.image(url)
        except FetchError as exc:
            shown = url if len(url) <= 200 else url[:200] + "..."
            raise FetchFailed(f"The image at {shown} could not be fetched: {exc.reason}.") from exc

    def search_bytes(
        self,
        data: bytes,
        *,
        top_k: int = 12,
        threshold: float | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> SearchResult:
        """Decode (raising DecodeError for bad input) and search."""
        return self.search_image(self.decode(data), top_k=top_k, threshold=threshold, where=where)

    def decode(self, data: bytes) -> DecodedImage:
        """A query image decoded no larger than its consumers need (DecodeError if it is not one).

        The same reduced JPEG decoding as ingestion, so a re-upload of a catalog file hashes as
        its catalog copy did; the pixel cap is the ingestion one.
        """
        return decode_image(data, max_pixels=self.max_pixels, fit=self.fit)

    def search_image(
        self,
        image: DecodedImage,
        *,
        top_k: int = 12,
        threshold: float | None = None,
        where: Mapping[str, Any] | None = None,
        offset: int = 0,
    ) -> SearchResult:
        """The verdict for an already decoded image, and the catalog ranked by similarity."""

        def rank() -> list[Hit]:
            vector = self.descriptors[IMAGE].query_vectors(image.image)[0]
            return self.index.query(
                vector, top_k=top_k, threshold=threshold, where=where, offset=offset
            )

        # The model runs (in torch, without the GIL) while the hash layers run here.
        similar = self._pool.submit(rank)
        verdict = self.detector.check(image, similar.result)
        hits = similar.result()
        exact_id = point_id(image.sha256)
        members = {m.id: m for m in verdict.members}
        exact = (
            Match(exact_id, 1.0, members[exact_id].payload, exact=True, copy=True)
            if exact_id in members
            else None
        )
        matches = [
            Match(h.id, h.score, h.payload, exact=h.id == exact_id, copy=h.id in members)
            for h in hits
        ]
        return SearchResult(
            query_sha256=image.sha256,
            query_width=image.width,
            query_height=image.height,
            exact_match=exact,
            matches=matches,
            verdict=verdict,
            cards=self.fold(matches),
            higher_is_better=self.index.higher_is_better,
            offset=offset,
        )

    def fold(self, matches: list[Match]) -> list[Card]:
        """Group matches that are one picture: the query's own copies, and near-identical hashes.

        The verdict's members form one card; other matches fold together when their PDQ hashes
        are within the copy threshold of each other (the same picture re-saved or resized).
        """
        cards: list[Card] = []
        hashes = {
            hit.id: hit.vectors[PDQ]
            for hit in self.index.get([m.id for m in matches], with_vectors=[PDQ])
            if PDQ in hit.vectors
        }
        limit = self.detector.settings.pdq_max_distance
        own: Card | None = None
        for match in matches:
            if match.copy:
                if own is None:
                    own = Card(match)
                    cards.append(own)
                else:
                    own.copies.append(match)
                continue
            bits = hashes.get(match.id)
            home = None
            if bits is not None:
                home = next(
                    (
                        card
                        for card in cards
                        if card is not own
                        and card.lead.id in hashes
                        and hamming_of(float(np.dot(hashes[card.lead.id], bits))) <= limit
                    ),
                    None,
                )
            if home is None:
                cards.append(Card(match))
            else:
                home.copies.append(match)
        return cards

    # -- one catalog image ------------------------------------------------------------------
    def record(self, pid: str) -> Record:
        """An image's payload and timeline (UnknownImage when it is not in the catalog)."""
        _check_id(pid)
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

    # -- helpers the UI uses ----------------------------------------------------------------
    def count(self) -> int:
        """Number of images in the catalog."""
        return self.index.count()

    def thumbnail(self, match: Match) -> bytes:
        """The result-grid thumbnail of a match."""
        return self.images.get(str(match.payload["thumbnail_key"]))

    def original(self, match: Match) -> bytes:
        """The original bytes of a match."""
        return self.images.get(str(match.payload["image_key"]))

    def preview(self, payload: dict[str, Any], side: int = 640) -> Any:
        """A display-sized copy of a catalog image's original (DecodeError/StoreError if not)."""
        return decode_preview(self.images.get(str(payload["image_key"])), side)

    def original_link(self, match: Match) -> str | None:
        """A URL for the original where the store can give one (S3: presigned)."""
        return self.images.link(str(match.payload["image_key"]))

    def close(self) -> None:
        """Stop the worker threads and close the downloader's connections."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._downloader_lock:
            if self._downloader is not None:
                self._downloader.close()
                self._downloader = None


def query_fit(verdict: VerdictSettings) -> Fit:
    """What a query's consumers need: the models' short side (ResNet50, SSCD, CLIP); PDQ's,
    layout's and geometric verification's long side. A 12 MP JPEG upload is decoded at 1/4."""
    return Fit(short=MODEL_SHORT_SIDE, long=max(HASH_SIDE, LAYOUT_SIDE, verdict.verify_side))


def _check_id(pid: str) -> None:
    try:
        uuid.UUID(str(pid))
    except ValueError:
        shown = str(pid)[:80]
        raise QueryError(f"{shown!r} is not an image id (ids are UUIDs).") from None


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


def _bucket(value: int, buckets: Sequence[tuple[int | None, str]]) -> str:
    for bound, label in buckets:
        if bound is None or value < bound:
            return label
    return buckets[-1][1]
