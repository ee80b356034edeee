"""The search service used by the UI, the CLI and any HTTP front end."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from embed.decode import DecodedImage, decode_image
from embed.encoder import Encoder
from store.images import ImageStore
from store.index import VectorIndex
from store.keys import point_id


@dataclass(frozen=True)
class Match:
    """One catalog image similar to the query."""

    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)
    exact: bool = False  # the very same bytes (same SHA-256) as the query

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: id, score, exact, payload."""
        return {"id": self.id, "score": self.score, "exact": self.exact, "payload": self.payload}


@dataclass(frozen=True)
class SearchResult:
    """The answer to one query image."""

    query_sha256: str
    query_width: int
    query_height: int
    exact_match: Match | None
    matches: list[Match]
    higher_is_better: bool = True

    @property
    def in_catalog(self) -> bool:
        """True when the exact image is already in the catalog."""
        return self.exact_match is not None


class SearchService:
    """Embeds a query image and ranks the catalog by similarity."""

    def __init__(self, index: VectorIndex, images: ImageStore, encoder: Encoder) -> None:
        self.index = index
        self.images = images
        self.encoder = encoder

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
        """Rank the catalog against an already decoded image and look up the exact copy."""
        vector = self.encoder.embed([image.image])[0]
        hits = self.index.query(vector, top_k=top_k, threshold=threshold, where=where)
        exact_id = point_id(image.sha256)
        exact_hits = self.index.get([exact_id])
        exact = (
            Match(exact_hits[0].id, 1.0, exact_hits[0].payload, exact=True) if exact_hits else None
        )
        matches = [Match(h.id, h.score, h.payload, exact=h.id == exact_id) for h in hits]
        return SearchResult(
            query_sha256=image.sha256,
            query_width=image.width,
            query_height=image.height,
            exact_match=exact,
            matches=matches,
            higher_is_better=self.index.higher_is_better,
        )

    def count(self) -> int:
        """Number of images in the catalog."""
        return self.index.count()

    def thumbnail(self, match: Match) -> bytes:
        """The result-grid thumbnail of a match."""
        return self.images.get(str(match.payload["thumbnail_key"]))

    def original(self, match: Match) -> bytes:
        """The original bytes of a match."""
        return self.images.get(str(match.payload["image_key"]))

    def original_link(self, match: Match) -> str | None:
        """A URL for the original where the store can give one (S3: presigned)."""
        return self.images.link(str(match.payload["image_key"]))
