"""The descriptor registry: every vector an image's one point carries, defined in one place.

Each descriptor is a named vector of the point: its size, its distance, the model that builds it
(recorded in the collection, so a catalog is never queried with vectors from another model), and
how to compute it in two steps: `prepare` runs per image in the ingestion worker threads (cheap
hashes are finished there; model inputs are preprocessed there) and `compute` turns a batch of
prepared values into vectors on the embedding thread. Adding a descriptor means adding one
`Descriptor` in `build_descriptors` and one `VectorSpec` in `SPECS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from config import Settings
from embed import layout, pdq
from embed.clip import OFF, ClipEncoder, TextSearchUnavailable, declared_dim
from embed.encoder import Encoder
from embed.sscd import SscdEncoder
from store.index import VectorSpec

IMAGE = "image"  # ResNet50 ImageNet: "similar images"
PDQ = "pdq"  # Meta's perceptual hash as 256 floats of +1/-1: dot product = 256 - 2 x Hamming
SSCD = "sscd"  # learned copy-detection descriptor (optional weights)
LAYOUT = "layout"  # weight-free colour and structure: proposes copy candidates to verify
CLIP = "clip"  # CLIP image vector: text queries (CLIP's text vector) search it


# A copy's hash is found only if HNSW reaches it. Measured here on 100k random PDQ hashes, with
# queries 31 bits (the match threshold) from a stored hash, 200 queries: Qdrant's default search
# breadth found 182 to 183 of them, ef 256 197, ef 512 all 200 (1.2 ms a query, binary-quantized).
PDQ_SEARCH_EF = 512


def specs(settings: Settings) -> list[VectorSpec]:
    """Every named vector a collection declares, whether or not its model is loaded here.

    The clip vector's size is the configured model's, so it is declared only while text search
    is on; a catalog keeps the clip vectors it has while text search is off.
    """
    declared = [
        VectorSpec(IMAGE, 2048, settings.qdrant.distance),
        VectorSpec(PDQ, pdq.BITS, "dot", binary=True, search_ef=PDQ_SEARCH_EF),
        VectorSpec(SSCD, 512, "cosine"),
        VectorSpec(LAYOUT, layout.DIM, "cosine"),
    ]
    clip_dim = declared_dim(settings.text)
    if clip_dim is not None:
        declared.append(VectorSpec(CLIP, clip_dim, "cosine"))
    return declared


@dataclass(frozen=True)
class Descriptor:
    """One named vector this process can compute."""

    name: str
    label: str  # the model and weights that build it
    prepare: Callable[[Image.Image], Any]  # per image, thread-safe; None = no vector for it
    compute: Callable[[Sequence[Any]], np.ndarray]  # prepared values -> (n, size) float32
    queries: Callable[[Image.Image], list[np.ndarray]] | None = None  # query-side variants

    def query_vectors(self, image: Image.Image) -> list[np.ndarray]:
        """The vectors a query image searches with (PDQ: its 8 dihedral variants)."""
        if self.queries is not None:
            return self.queries(image)
        prepared = self.prepare(image)
        return [] if prepared is None else [self.compute([prepared])[0]]


def signed(bits: np.ndarray) -> np.ndarray:
    """PDQ bits (0/1) as the +1/-1 vector the index stores: a dot product is then 256 - 2H.

    A dot product is one matrix-vector product per query, where the Manhattan distance (which
    would give the Hamming distance directly) costs a subtraction and a sum over the catalog.
    """
    return np.asarray(bits, dtype=np.float32) * 2.0 - 1.0


def hamming_of(score: float) -> int:
    """The Hamming distance behind a dot product of two signed PDQ vectors."""
    return round((pdq.BITS - score) / 2)


def _stack(values: Sequence[Any]) -> np.ndarray:
    return np.stack([np.asarray(v, dtype=np.float32) for v in values])


class Descriptors:
    """The descriptors this process computes, in registry order, by name."""

    def __init__(
        self,
        items: Sequence[Descriptor],
        declared: Sequence[VectorSpec],
        text: Callable[[str], np.ndarray] | None = None,
    ) -> None:
        self._items = {d.name: d for d in items}
        self.declared = list(declared)
        self._text = text

    def __iter__(self) -> Iterator[Descriptor]:
        return iter(self._items.values())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __getitem__(self, name: str) -> Descriptor:
        return self._items[name]

    @property
    def has_text(self) -> bool:
        """Whether text queries can be encoded here (a CLIP model is loaded)."""
        return self._text is not None

    def encode_text(self, text: str) -> np.ndarray:
        """A text query as a unit vector of the "clip" named vector.

        Raises TextSearchUnavailable when no text model is enabled, ValueError on an empty text.
        """
        if self._text is None:
            raise TextSearchUnavailable(OFF)
        if not text.strip():
            raise ValueError("the text query is empty")
        return self._text(text.strip())

    @property
    def labels(self) -> dict[str, str]:
        """{name: model label} of every descriptor computed here."""
        return {d.name: d.label for d in self}

    def prepare(self, image: Image.Image, only: Sequence[str] | None = None) -> dict[str, Any]:
        """Per-image work of every descriptor (or of `only`); runs in worker threads."""
        out: dict[str, Any] = {}
        for d in self:
            if only is not None and d.name not in only:
                continue
            value = d.prepare(image)
            if value is not None:
                out[d.name] = value
        return out

    def compute(self, prepared: Sequence[Mapping[str, Any]]) -> list[dict[str, np.ndarray]]:
        """Vectors for a batch of prepared images: one {name: vector} per image."""
        out: list[dict[str, np.ndarray]] = [{} for _ in prepared]
        for d in self:
            rows = [i for i, p in enumerate(prepared) if d.name in p]
            if not rows:
                continue
            vectors = d.compute([prepared[i][d.name] for i in rows])
            for i, vector in zip(rows, vectors, strict=True):
                out[i][d.name] = vector
        return out


def build_descriptors(
    settings: Settings,
    encoder: Encoder,
    sscd: SscdEncoder | None = None,
    clip: ClipEncoder | None = None,
) -> Descriptors:
    """The registry for these settings and models (SSCD and CLIP only when loaded)."""
    v = settings.verdict
    tolerance = v.trim_tolerance

    def pdq_prepare(image: Image.Image) -> np.ndarray | None:
        hashed = pdq.pdq_hash(image, tolerance=tolerance)
        return signed(hashed.bits) if hashed.quality >= v.pdq_min_quality else None

    def pdq_queries(image: Image.Image) -> list[np.ndarray]:
        variants, quality = pdq.pdq_dihedral(image, tolerance=tolerance)
        if quality < v.pdq_min_quality:
            return []
        return [signed(bits) for bits in variants]

    items = [
        Descriptor(IMAGE, encoder.label, encoder.preprocess, encoder.embed_tensors),
        Descriptor(PDQ, "PDQ (pdqhash, borders trimmed)", pdq_prepare, _stack, pdq_queries),
        Descriptor(
            LAYOUT,
            "layout v1 (HSV histogram, gradient grid, 8x8 thumbnail)",
            lambda image: layout.layout_vector(image, tolerance=tolerance),
            _stack,
        ),
    ]
    if sscd is not None:
        items.append(Descriptor(SSCD, sscd.label, sscd.preprocess, sscd.embed_tensors))
    if clip is not None:
        items.append(Descriptor(CLIP, clip.label, clip.preprocess, clip.embed_tensors))
    return Descriptors(items, specs(settings), text=clip.embed_text if clip else None)
