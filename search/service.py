"""The search service used by the UI, the CLI and the HTTP API.

One entry point, `SearchService.search(Query)`, answers every query mode: one or several example
images (uploaded bytes, image URLs fetched through the guarded downloader, catalog ids for "More
like this"), "not like this" negatives (Qdrant's recommend API, average-vector or best-score),
text (the CLIP vector), payload filters and offset paging. The copy verdict runs only when the
query is exactly one image. Queries are built in search/query.py; one image's record, files
and deletion are search/catalog.py's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from config import DecodeSettings, FetchSettings, VerdictSettings
from embed.decode import DecodedImage, DecodeError, Fit, decode_image
from embed.descriptors import CLIP, IMAGE, PDQ, Descriptors, hamming_of, needed_fit
from embed.metadata import Metadata, MetadataReader
from ingest.http import Downloader
from ingest.items import FetchError
from search.banks import BankMatch, Banks
from search.changes import FIT_SIDE, Changes, what_changed
from search.provenance import Caution, warnings_for
from search.query import Examples, FetchFailed, Query, QueryError, UnknownImage, build_query
from search.verdict import CopyDetector, Verdict
from store.images import ImageStore, StoreError
from store.index import BadFilter, Hit, VectorIndex
from store.keys import point_id

log = logging.getLogger(__name__)
# What changed is measured on both pictures decoded this large (the transform's fitting side).
CHANGES_FIT = Fit(short=1, long=FIT_SIDE)
NO_VERDICT = Verdict("none", [], [], {"verdict": "not run: it needs exactly one query image"})


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
    changes: Changes | None = None  # an edited copy: what differs from its original
    metadata: Metadata | None = None  # what the query file says about itself
    warnings: list[Caution] = field(default_factory=list)  # search/provenance.py
    banks: list[BankMatch] = field(default_factory=list)  # banked pictures it is (search/banks.py)

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
            out["banks"] = [b.as_dict() for b in self.banks]
            out["verdict"] = self.verdict.kind
            out["sha256"] = self.query_sha256
            out["changes"] = self.changes.as_dict() if self.changes else None
            out["metadata"] = self.metadata.as_dict() if self.metadata else {}
            out["warnings"] = [w.as_dict() for w in self.warnings]
        return out

    def as_check(self, file: str) -> dict[str, Any]:
        """The `imgsearch check --json` / `POST /api/check` object for this query."""
        original = self.verdict.original
        return {
            "file": file,
            "banks": [b.as_dict() for b in self.banks],
            "sha256": self.query_sha256,
            "verdict": self.verdict.kind,
            "original": (
                {"id": original.id, "sha256": original.sha256, "payload": original.payload}
                if original
                else None
            ),
            "evidence": self.verdict.evidence_dict(),
            "warnings": [w.as_dict() for w in self.warnings],
            "metadata": self.metadata.as_dict() if self.metadata else {},
            "changes": self.changes.as_dict() if self.changes else None,
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


class SearchService:
    """Answers queries against the catalog: the ranked matches, folded cards and the verdict."""

    def __init__(
        self,
        index: VectorIndex,
        images: ImageStore,
        descriptors: Descriptors,
        verdict: VerdictSettings | None = None,
        fetch: FetchSettings | None = None,
        decode: DecodeSettings | None = None,
        metadata: MetadataReader | None = None,
        banks: Banks | None = None,
    ) -> None:
        self.index = index
        self.banks = banks  # every one-image query is matched against them too
        self.images = images
        self.descriptors = descriptors
        self.detector = CopyDetector(index, images, descriptors, verdict or VerdictSettings())
        self.fetch_settings = fetch or FetchSettings()
        self.max_pixels = (decode or DecodeSettings()).max_pixels
        self.metadata = metadata or MetadataReader()
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
            decoded = self.decode(data)
            result = self.search_image(
                decoded,
                top_k=query.top_k,
                threshold=query.threshold,
                where=where,
                offset=query.offset,
            )
            return self.with_provenance(self.with_changes(result, data), data, decoded)
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
            higher_is_better=self.index.specs[IMAGE].higher_is_better,
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

    def search_bytes(self, data: bytes, *, top_k: int = 12) -> SearchResult:
        """The verdict and the similar images for one image file (`imgsearch check`, /check)."""
        return self.search(build_query(positive=Examples(images=(data,)), top_k=top_k))

    def with_changes(self, result: SearchResult, data: bytes) -> SearchResult:
        """An edited copy's result with what changed against its original (search/changes.py).

        Both pictures are decoded again at the side the changes are measured on; an original
        that cannot be read leaves the verdict as it is, with a line in the log.
        """
        original = result.verdict.original
        if result.verdict.kind != "copy" or original is None:
            return result
        try:
            query = decode_image(data, max_pixels=self.max_pixels, fit=CHANGES_FIT)
            stored = self.images.get(str(original.payload["image_key"]))
            before = decode_image(stored, max_pixels=self.max_pixels, fit=CHANGES_FIT)
        except (KeyError, StoreError, DecodeError) as exc:
            log.warning("what changed against %s is unknown: %s", original.id, exc)
            return result
        changes = what_changed(
            query.image, before.image, against=original.id, query_size=(query.width, query.height)
        )
        return replace(result, changes=changes)

    def with_provenance(
        self, result: SearchResult, data: bytes, decoded: DecodedImage
    ) -> SearchResult:
        """The result with the query file's own metadata and the warnings it raises against the
        catalog's timeline of the picture (search/provenance.py)."""
        metadata = self.metadata.read(data, decoded.content_type)
        return replace(
            result, metadata=metadata, warnings=warnings_for(metadata, result.verdict.timeline)
        )

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

        def rank() -> tuple[np.ndarray, list[Hit]]:
            vector = self.descriptors[IMAGE].query_vectors(image.image)[0]
            return vector, self.index.query(
                vector, using=IMAGE, top_k=top_k, threshold=threshold, where=where, offset=offset
            )

        # The model runs (in torch, without the GIL) while the hash layers run here.
        similar = self._pool.submit(rank)
        verdict = self.detector.check(image, lambda: similar.result()[1])
        vector, hits = similar.result()
        banked = self.banks.match(image, vector) if self.banks is not None else []
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
            higher_is_better=self.index.specs[IMAGE].higher_is_better,
            offset=offset,
            banks=banked,
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

    def close(self) -> None:
        """Stop the worker threads and close the downloader's connections."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._downloader_lock:
            if self._downloader is not None:
                self._downloader.close()
                self._downloader = None


def query_fit(verdict: VerdictSettings) -> Fit:
    """What a query's consumers need: every descriptor's input (the models' short side, the
    hashes' long side) and geometric verification's long side. A 12 MP JPEG is decoded at 1/4."""
    return needed_fit(long=verdict.verify_side)
