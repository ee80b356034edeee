"""The search service used by the UI, the CLI and any HTTP front end."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from config import VerdictSettings
from embed.decode import DecodedImage, decode_image, decode_preview
from embed.descriptors import IMAGE, PDQ, Descriptors, hamming_of
from search.verdict import CopyDetector, Verdict
from store.images import ImageStore
from store.index import Hit, VectorIndex
from store.keys import point_id


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


@dataclass(frozen=True)
class SearchResult:
    """The answer to one query image."""

    query_sha256: str
    query_width: int
    query_height: int
    exact_match: Match | None
    matches: list[Match]
    verdict: Verdict
    cards: list[Card] = field(default_factory=list)
    higher_is_better: bool = True

    @property
    def in_catalog(self) -> bool:
        """True when the exact image is already in the catalog."""
        return self.exact_match is not None

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


class SearchService:
    """Answers a query image: the copy verdict and the most similar catalog images."""

    def __init__(
        self,
        index: VectorIndex,
        images: ImageStore,
        descriptors: Descriptors,
        verdict: VerdictSettings | None = None,
    ) -> None:
        self.index = index
        self.images = images
        self.descriptors = descriptors
        self.detector = CopyDetector(index, images, descriptors, verdict or VerdictSettings())
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="search")

    def search_bytes(
        self,
        data: bytes,
        *,
        top_k: int = 12,
        threshold: float | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> SearchResult:
        """Decode (raising DecodeError for bad input) and search."""
        return self.search_image(decode_image(data), top_k=top_k, threshold=threshold, where=where)

    def search_image(
        self,
        image: DecodedImage,
        *,
        top_k: int = 12,
        threshold: float | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> SearchResult:
        """The verdict for an already decoded image, and the catalog ranked by similarity."""

        def rank() -> list[Hit]:
            vector = self.descriptors[IMAGE].query_vectors(image.image)[0]
            return self.index.query(vector, top_k=top_k, threshold=threshold, where=where)

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
