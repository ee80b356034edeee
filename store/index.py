"""The vector index: one interface, two engines (Qdrant Edge embedded, qdrant-client).

`VectorIndex` is what the rest of imgsearch uses; this module knows neither engine. The engines
implement it: `store.edge.EdgeIndex` runs Qdrant's own Rust engine in-process (the embedded
default); `store.client.ClientIndex` talks to a Qdrant server (gRPC preferred) or runs
qdrant-client's local mode. Both answer the same calls the same way (tests/test_index_congruence.py
compares them). `store.factory` opens the configured one; `store.filters` is the `where` language.
The index knows no descriptor: its vectors are the specs it is opened with, and every query names
the vector it searches.
"""

from __future__ import annotations

import functools
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, TypeVar

import numpy as np

SCHEMA = 2  # 1: one "image" vector and no metadata; 2: named descriptors recorded in metadata
DISTANCE_NAMES = ("cosine", "dot", "euclid", "manhattan")
# Payload indexes (where the engine has them): keyword filters and facets, date ranges, words.
PAYLOAD_INDEXES: dict[str, Literal["keyword", "datetime", "text"]] = {
    "source": "keyword",
    "category": "keyword",
    "published_at": "datetime",
    "title": "text",
}


class Strategy(StrEnum):
    """How several examples combine in a recommend query (Qdrant's two strategies)."""

    AVERAGE_VECTOR = "average_vector"  # one query at avg(+) + (avg(+) - avg(-)): fast
    BEST_SCORE = "best_score"  # every candidate scored against each example: slower

    @property
    def label(self) -> str:
        """The strategy as the page names it ("average vector")."""
        return self.value.replace("_", " ")


T = TypeVar("T")


class IndexUnavailable(RuntimeError):
    """The index cannot be used right now (server down, folder locked); one sentence why."""


class IndexLocked(IndexUnavailable):
    """The embedded index folder is open in another process."""


class CatalogMismatch(IndexUnavailable):
    """The collection was built with another distance or model than this process uses."""


class BadFilter(ValueError):
    """A `where` filter of a shape the index does not understand; one sentence why."""


# With int8 quantization, this many times the asked-for nearest are rescored with the full
# vectors (recall measured in store/edge.py's _vector_params).
OVERSAMPLING = 2.0


@dataclass(frozen=True)
class VectorSpec:
    """One named vector of every point: its size and distance."""

    name: str
    size: int
    distance: str  # cosine | dot | euclid | manhattan
    # Every component is +1 or -1 (PDQ's bits): binary quantization keeps one bit of each, which
    # loses nothing, so both engines index and search it as bits.
    binary: bool = False
    # HNSW's search breadth (ef) for this vector, where the engine's default finds too few of
    # the true nearest; None: the engine's default.
    search_ef: int | None = None

    @property
    def higher_is_better(self) -> bool:
        """Cosine and dot are similarities; euclid and manhattan are distances."""
        return self.distance in ("cosine", "dot")


@dataclass(frozen=True)
class PointRecord:
    """One image's vectors (by descriptor name) and payload, ready to upsert."""

    id: str
    vectors: Mapping[str, np.ndarray]
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class Hit:
    """A point returned by a query or lookup (vectors only when asked for)."""

    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)


def average_vector(positive: Sequence[np.ndarray], negative: Sequence[np.ndarray]) -> np.ndarray:
    """Qdrant's average_vector recommend target: avg(+) + (avg(+) - avg(-)), or avg(+)."""
    pos = np.mean(np.stack(positive), axis=0)
    if not negative:
        return pos
    return pos + (pos - np.mean(np.stack(negative), axis=0))


def guarded(method: Callable[..., T]) -> Callable[..., T]:
    """Serialise calls on one index and turn the engine's failures into IndexUnavailable."""

    @functools.wraps(method)
    def wrapper(self: VectorIndex, *args: Any, **kwargs: Any) -> T:
        with self._lock:
            try:
                return method(self, *args, **kwargs)
            except IndexUnavailable:
                raise
            except Exception as exc:
                translated = self._unavailable(exc)
                if translated is None:
                    raise
                raise translated from exc

    return wrapper


class VectorIndex(ABC):
    """The image collection: one point per image with a named vector per descriptor.

    The collection's record keeps each descriptor's size, distance and the model that built
    it; opening it with another distance or model refuses with one sentence (CatalogMismatch),
    and a collection that lacks a declared vector (made by an earlier version) gains it.
    Engines (store/edge.py, store/client.py) implement the abstract methods.
    """

    engine = "abstract"

    def __init__(
        self,
        collection: str,
        specs: Sequence[VectorSpec],
        *,
        where: str = "",
        upsert_batch: int = 128,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        if not specs:
            raise ValueError(f"the index {collection} needs at least one named vector")
        self.collection = collection
        self.specs = {s.name: s for s in specs}
        self.where = where or collection
        self.upsert_batch = upsert_batch
        self._lock = threading.RLock()
        self._on_close = on_close
        self._ready = False
        self._meta: dict[str, Any] = {}  # the collection's own record (schema, vectors)

    # -- engine hooks ---------------------------------------------------------------------
    def _unavailable(self, exc: Exception) -> IndexUnavailable | None:
        """The one-sentence error for an engine failure, or None to let exc through."""
        return None

    @abstractmethod
    def _open(self) -> dict[str, Any]:
        """Create or check the collection; return its record."""

    @abstractmethod
    def _write_meta(self, meta: dict[str, Any]) -> None: ...

    def _opened(self) -> None:
        """Runs once the collection is open and usable, before the call that opened it."""
        return None

    # -- the collection's record ------------------------------------------------------------
    @guarded
    def ensure_collection(self) -> None:
        """Create the collection when missing; check or migrate it when present (never wipe)."""
        if not self._ready:
            self._meta = dict(self._open())
            self._ready = True
            try:
                self._opened()
            except BaseException:
                self._ready = False  # the next call opens (and checks) again
                raise

    @abstractmethod
    def stored_vectors(self) -> dict[str, tuple[str, int]]:
        """{name: (distance, size)} of every vector the collection holds, declared here or not."""

    def check_distances(self, present: Mapping[str, tuple[str, int]]) -> None:
        """CatalogMismatch when a stored vector's (distance, size) differs from the spec."""
        for name, (distance, size) in present.items():
            spec = self.specs.get(name)
            if spec is None:
                continue
            if distance != spec.distance or size != spec.size:
                raise CatalogMismatch(
                    f"The catalog {self.collection} at {self.where} stores its {name} vectors "
                    f"with {distance} distance and size {size}, but this configuration "
                    f"asks for {spec.distance} and {spec.size}; set IMGSEARCH_QDRANT__DISTANCE "
                    "back, or use a new IMGSEARCH_QDRANT__COLLECTION"
                )

    @guarded
    def recorded_labels(self) -> dict[str, str]:
        """{vector name: the model that built it}, as the collection records it."""
        self.ensure_collection()
        vectors = dict(self._meta.get("vectors") or {})
        return {n: str(e["label"]) for n, e in vectors.items() if (e or {}).get("label")}

    @guarded
    def check_labels(self, labels: Mapping[str, str], accept_relabel: Sequence[str] = ()) -> None:
        """Refuse models other than those that built the catalog; record new ones."""
        recorded: dict[str, str | None] = dict(self.recorded_labels())
        for name, label in labels.items():
            old = recorded.get(name)
            if old and old != label and name not in accept_relabel:
                raise CatalogMismatch(
                    f"The catalog's {name} vectors were made by {old}, but this process loads "
                    f"{label}; configure the same model again, or run `imgsearch reindex "
                    f"--rebuild {name}` to recompute them"
                )
        changed = {n: lbl for n, lbl in labels.items() if recorded.get(n) != lbl}
        if changed:
            # Records of vectors this process does not declare (text search off for a while)
            # are kept, so the model that made them is still checked when they come back.
            vectors = dict(self._meta.get("vectors") or {})
            vectors.update(
                {
                    name: {
                        "size": self.specs[name].size,
                        "distance": self.specs[name].distance,
                        "label": changed.get(name, recorded.get(name)),
                    }
                    for name in self.specs
                    if name in recorded or name in changed
                }
            )
            self._meta = {"schema": SCHEMA, "vectors": vectors}
            self._write_meta(self._meta)

    @guarded
    def adopt_record(self, vectors: Mapping[str, Any]) -> None:
        """Take the vector record ({name: size, distance, label}) of a catalog moved in from
        elsewhere, unless this collection records its own."""
        self.ensure_collection()
        if vectors and not self._meta.get("vectors"):
            self._meta = {**self._meta, "schema": SCHEMA, "vectors": dict(vectors)}
            self._write_meta(self._meta)

    # -- writes -------------------------------------------------------------------------------
    @abstractmethod
    def upsert(self, records: Sequence[PointRecord]) -> None:
        """Insert or replace points in batches; ids are content-derived so repeats are harmless."""

    @abstractmethod
    def update_vectors(self, vectors: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        """Set some named vectors of existing points ({point id: {name: vector}})."""

    @abstractmethod
    def set_payload(self, point: str, payload: Mapping[str, Any]) -> None:
        """Merge keys into one point's payload."""

    @abstractmethod
    def overwrite_payload(self, point: str, payload: Mapping[str, Any]) -> None:
        """Replace one point's whole payload."""

    @abstractmethod
    def delete(self, ids: Sequence[str]) -> None:
        """Remove points by id."""

    # -- reads --------------------------------------------------------------------------------
    def query(
        self,
        vector: np.ndarray,
        *,
        using: str,
        top_k: int = 10,
        threshold: float | None = None,
        where: Mapping[str, Any] | None = None,
        offset: int = 0,
    ) -> list[Hit]:
        """Nearest points to vector; threshold is a minimum score (a maximum distance)."""
        return self.query_many(
            [vector], using=using, top_k=top_k, threshold=threshold, where=where, offset=offset
        )[0]

    @abstractmethod
    def query_many(
        self,
        vectors: Sequence[np.ndarray],
        *,
        using: str,
        top_k: int = 10,
        threshold: float | None = None,
        where: Mapping[str, Any] | None = None,
        offset: int = 0,
    ) -> list[list[Hit]]:
        """One round trip for several query vectors of one named vector (offset: skip that many)."""

    @abstractmethod
    def recommend(
        self,
        positive: Sequence[str | np.ndarray],
        negative: Sequence[str | np.ndarray] = (),
        *,
        using: str,
        strategy: Strategy = Strategy.AVERAGE_VECTOR,
        top_k: int = 10,
        offset: int = 0,
        threshold: float | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """Points like the positive examples and unlike the negative ones (Qdrant's recommend).

        An example is a point id (its stored `using` vector; the examples themselves are left
        out of the results) or a vector. An unknown id raises KeyError.
        """

    @abstractmethod
    def get(self, ids: Sequence[str], *, with_vectors: Sequence[str] = ()) -> list[Hit]:
        """The points with these ids that exist (score 1.0), with the named vectors asked for."""

    def existing(self, ids: Sequence[str]) -> set[str]:
        """The subset of ids already in the index."""
        return {hit.id for hit in self.get(ids)}

    @abstractmethod
    def count(self, where: Mapping[str, Any] | None = None) -> int:
        """Exact number of points (matching the filter, if any)."""

    @abstractmethod
    def facet(
        self, key: str, *, where: Mapping[str, Any] | None = None, limit: int = 100
    ) -> list[tuple[Any, int]]:
        """(payload value, number of points) for one key, largest first."""

    def scroll(
        self,
        page_size: int = 256,
        *,
        with_vectors: Sequence[str] = (),
        where: Mapping[str, Any] | None = None,
    ) -> Iterator[Hit]:
        """Every point (matching the filter) with its payload and the vectors asked for."""
        offset: Any = None
        while True:
            points, offset = self._scroll_page(page_size, offset, with_vectors, where)
            yield from points
            if offset is None:
                return

    @abstractmethod
    def _scroll_page(
        self,
        page_size: int,
        offset: Any,
        with_vectors: Sequence[str] = (),
        where: Mapping[str, Any] | None = None,
    ) -> tuple[list[Hit], Any]: ...

    def _split_examples(
        self, examples: Sequence[str | np.ndarray]
    ) -> tuple[list[str], list[np.ndarray]]:
        ids = [e for e in examples if isinstance(e, str)]
        vectors = [np.asarray(e, dtype=np.float32) for e in examples if not isinstance(e, str)]
        return ids, vectors

    def close(self) -> None:
        """Release the engine (and the embedded folder's lock)."""
        with self._lock:
            if self._on_close:
                self._on_close()
                self._on_close = None


def named_vectors(vector: Any) -> dict[str, np.ndarray]:
    """{name: float32 array} from an engine's named-vector mapping (empty for anything else)."""
    if isinstance(vector, Mapping):
        return {str(k): np.asarray(v, dtype=np.float32) for k, v in vector.items()}
    return {}


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (for one-sentence errors)."""
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
