"""The "pdq" vector: Meta's PDQ hash as 256 floats of +1/-1, and its copy rule.

The dot product of two such vectors is 256 - 2 x their Hamming distance; a copy is at most
`pdq_max_distance` bits away (Meta's 31). A query searches with its 8 dihedral variants, so
mirrored and rotated copies are found; flat pictures (hash quality below `pdq_min_quality`)
have no hash.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from config import Settings, VerdictSettings
from embed import pdq
from embed.decode import Fit
from embed.descriptors.base import CopyLayer, Match
from store.index import VectorSpec

# A copy's hash is found only if HNSW reaches it. Measured here on 100k random PDQ hashes, with
# queries 31 bits (the match threshold) from a stored hash, 200 queries: Qdrant's default search
# breadth found 182 to 183 of them, ef 256 197, ef 512 all 200 (1.2 ms a query, binary-quantized).
PDQ_SEARCH_EF = 512


def signed(bits: np.ndarray) -> np.ndarray:
    """PDQ bits (0/1) as the +1/-1 vector the index stores: a dot product is then 256 - 2H.

    A dot product is one matrix-vector product per query, where the Manhattan distance (which
    would give the Hamming distance directly) costs a subtraction and a sum over the catalog.
    """
    return np.asarray(bits, dtype=np.float32) * 2.0 - 1.0


def hamming_of(score: float) -> int:
    """The Hamming distance behind a dot product of two signed PDQ vectors."""
    return round((pdq.BITS - score) / 2)


class PdqDescriptor(CopyLayer):
    """The perceptual hash of the border-trimmed picture (embed/pdq.py)."""

    name = "pdq"
    pixels = Fit(short=0, long=pdq.HASH_SIDE)

    @classmethod
    def spec(cls, settings: Settings) -> VectorSpec:
        return VectorSpec(cls.name, pdq.BITS, "dot", binary=True, search_ef=PDQ_SEARCH_EF)

    @property
    def label(self) -> str:
        return "PDQ (pdqhash, borders trimmed)"

    def prepare(self, image: Image.Image) -> np.ndarray | None:
        v = self.settings.verdict
        hashed = pdq.pdq_hash(image, tolerance=v.trim_tolerance)
        return signed(hashed.bits) if hashed.quality >= v.pdq_min_quality else None

    def query_vectors(self, image: Image.Image) -> list[np.ndarray]:
        """The 8 dihedral variants of the query's hash (none for a flat picture)."""
        v = self.settings.verdict
        variants, quality = pdq.pdq_dihedral(image, tolerance=v.trim_tolerance)
        if quality < v.pdq_min_quality:
            return []
        return [signed(bits) for bits in variants]

    @classmethod
    def off(cls, settings: VerdictSettings) -> str:
        return "off"

    @classmethod
    def skipped(cls, settings: VerdictSettings) -> str:
        return (
            "skipped: the picture is too flat for a reliable hash "
            f"(quality below {settings.pdq_min_quality})"
        )

    @classmethod
    def match(cls, score: float, settings: VerdictSettings) -> Match | None:
        distance = hamming_of(score)
        if distance > settings.pdq_max_distance:
            return None
        return Match(
            f"edited copy: {distance} of {pdq.BITS} hash bits differ",
            {"distance": distance, "max_distance": settings.pdq_max_distance},
        )

    @classmethod
    def strength(cls, figures: Mapping[str, Any]) -> float:
        """Fewer differing bits is stronger."""
        return -float(figures.get("distance", pdq.BITS))
