"""Vector index over qdrant-client: one code path for embedded local mode and a server URL."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from config import Settings

log = logging.getLogger(__name__)

VECTOR_NAME = "image"  # the similarity vector (ResNet50), the default `using` of a query
DIM = 2048
SCHEMA = 2  # 1: one "image" vector and no metadata; 2: named descriptors recorded in metadata
DISTANCES = {
    "cosine": models.Distance.COSINE,
    "dot": models.Distance.DOT,
    "euclid": models.Distance.EUCLID,
    "manhattan": models.Distance.MANHATTAN,
}
T = TypeVar("T")


class IndexUnavailable(RuntimeError):
    """The index cannot be used right now (server down, folder locked); one sentence why."""


class IndexLocked(IndexUnavailable):
    """The embedded index folder is open in another process."""


class CatalogMismatch(IndexUnavailable):
    """The collection was built with another distance or model than this process uses."""


@dataclass(frozen=True)
class VectorSpec:
    """One named vector of every point: its size and distance."""

    name: str
    size: int
    distance: str  # cosine | dot | euclid | manhattan

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


def _guard(method: Callable[..., T]) -> Callable[..., T]:
    """Serialise calls (local mode is not thread-safe) and turn transport errors into one type."""

    @functools.wraps(method)
    def wrapper(self: VectorIndex, *args: Any, **kwargs: Any) -> T:
        with self._lock:
            try:
                return method(self, *args, **kwargs)
            except (ResponseHandlingException, UnexpectedResponse, ConnectionError) as exc:
                raise IndexUnavailable(
                    f"the Qdrant index at {self.where} did not answer ({_first_line(exc)}); "
                    "check that the server is running and IMGSEARCH_QDRANT__URL is right"
                ) from exc

    return wrapper


class VectorIndex:
    """The image collection: one point per image with a named vector per descriptor.

    The collection's metadata records each descriptor's size, distance and the model that built
    it; opening it with another distance or model refuses with one sentence (CatalogMismatch),
    and a collection that lacks a declared vector (made by an earlier version) is migrated.
    """

    def __init__(
        self,
        client: QdrantClient,
        collection: str,
        distance: str = "cosine",
        *,
        specs: Sequence[VectorSpec] | None = None,
        where: str = "",
        upsert_batch: int = 128,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.collection = collection
        self.specs = {s.name: s for s in (specs or [VectorSpec(VECTOR_NAME, DIM, distance)])}
        self.distance = self.specs[VECTOR_NAME].distance if VECTOR_NAME in self.specs else distance
        self.where = where or collection
        self.upsert_batch = upsert_batch
        self._lock = threading.RLock()
        self._on_close = on_close
        self._ready = False
        self._meta: dict[str, Any] = {}  # the collection's own record (schema, vectors)

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger score is closer for the similarity vector."""
        return self.specs[VECTOR_NAME].higher_is_better

    @_guard
    def ensure_collection(self) -> None:
        """Create the collection when missing; check or migrate it when present (never wipe)."""
        if self._ready:
            return
        migrating = f"{self.collection}{MIGRATING}"
        if not self.client.collection_exists(self.collection):
            if self.client.collection_exists(migrating):
                # Killed after dropping the old collection: its points are all in the copy.
                self._create(self.collection, {})
                self._copy(migrating, self.collection)
                self.client.delete_collection(migrating)
                log.info("finished an interrupted migration of %s", self.collection)
            else:
                self._create(self.collection, {})
                log.info("created collection %s at %s", self.collection, self.where)
        info = self.client.get_collection(self.collection)
        vectors = info.config.params.vectors
        present = dict(vectors) if isinstance(vectors, Mapping) else {}
        meta = dict((info.config.metadata or {}).get("imgsearch") or {})
        if self.client.collection_exists(migrating) and meta.get("schema") == SCHEMA:
            self._copy(migrating, self.collection)  # killed while copying back
            self.client.delete_collection(migrating)
        self._check_distances(present)
        missing = [name for name in self.specs if name not in present]
        if missing:
            meta = self._migrate(meta, missing)
        self._meta = dict(meta)
        self._ready = True

    def _create(self, name: str, recorded: Mapping[str, Any]) -> None:
        self.client.create_collection(
            name,
            vectors_config={
                s.name: models.VectorParams(size=s.size, distance=DISTANCES[s.distance])
                for s in self.specs.values()
            },
            metadata={"imgsearch": {"schema": SCHEMA, "vectors": dict(recorded)}},
        )

    def _check_distances(self, present: Mapping[str, Any]) -> None:
        for name, params in present.items():
            spec = self.specs.get(name)
            if spec is None:
                continue
            distance = str(params.distance.value).lower()
            if distance != spec.distance or int(params.size) != spec.size:
                raise CatalogMismatch(
                    f"The catalog {self.collection} at {self.where} stores its {name} vectors "
                    f"with {distance} distance and size {params.size}, but this configuration "
                    f"asks for {spec.distance} and {spec.size}; set IMGSEARCH_QDRANT__DISTANCE "
                    "back, or use a new IMGSEARCH_QDRANT__COLLECTION"
                )

    @_guard
    def recorded_labels(self) -> dict[str, str]:
        """{vector name: the model that built it}, as the collection records it."""
        self.ensure_collection()
        vectors = dict(self._meta.get("vectors") or {})
        return {n: str(e["label"]) for n, e in vectors.items() if (e or {}).get("label")}

    @_guard
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
            vectors = {
                name: {
                    "size": self.specs[name].size,
                    "distance": self.specs[name].distance,
                    "label": changed.get(name, recorded.get(name)),
                }
                for name in self.specs
                if name in recorded or name in changed
            }
            self._meta = {"schema": SCHEMA, "vectors": vectors}
            self.client.update_collection(self.collection, metadata={"imgsearch": self._meta})

    def _migrate(self, meta: Mapping[str, Any], missing: list[str]) -> dict[str, Any]:
        """Rebuild the collection with every declared vector, keeping every point and vector."""
        log.warning(
            "migrating catalog %s at %s: adding the %s vector(s); points and payloads are kept, "
            "and `imgsearch reindex` computes the new vectors from the stored originals",
            self.collection,
            self.where,
            ", ".join(missing),
        )
        # Schema 1 recorded no model: the first check_labels records the configured one.
        recorded = dict(meta.get("vectors") or {})
        temp = f"{self.collection}{MIGRATING}"
        if self.client.collection_exists(temp):
            self.client.delete_collection(temp)
        self._create(temp, recorded)
        self._copy(self.collection, temp)
        self.client.delete_collection(self.collection)
        self._create(self.collection, recorded)
        self._copy(temp, self.collection)
        self.client.delete_collection(temp)
        log.info("migrated catalog %s (%d points)", self.collection, self._count())
        return {"schema": SCHEMA, "vectors": recorded}

    def _copy(self, source: str, target: str) -> None:
        offset: Any = None
        while True:
            points, offset = self.client.scroll(
                source, limit=256, offset=offset, with_payload=True, with_vectors=True
            )
            if points:
                self.client.upsert(
                    target,
                    points=[
                        models.PointStruct(
                            id=p.id,
                            vector=dict(p.vector) if isinstance(p.vector, Mapping) else {},
                            payload=p.payload or {},
                        )
                        for p in points
                    ],
                    wait=True,
                )
            if offset is None:
                return

    def _count(self) -> int:
        return int(self.client.count(self.collection, exact=True).count)

    @_guard
    def upsert(self, records: Sequence[PointRecord]) -> None:
        """Insert or replace points in batches; ids are content-derived so repeats are harmless."""
        self.ensure_collection()
        for start in range(0, len(records), self.upsert_batch):
            chunk = records[start : start + self.upsert_batch]
            self.client.upsert(
                self.collection,
                points=[
                    models.PointStruct(
                        id=record.id,
                        vector={
                            name: np.asarray(vector, dtype=np.float32).tolist()
                            for name, vector in record.vectors.items()
                        },
                        payload=dict(record.payload),
                    )
                    for record in chunk
                ],
                wait=True,
            )

    @_guard
    def update_vectors(self, vectors: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        """Set some named vectors of existing points ({point id: {name: vector}})."""
        if not vectors:
            return
        self.ensure_collection()
        self.client.update_vectors(
            self.collection,
            points=[
                models.PointVectors(
                    id=pid,
                    vector={n: np.asarray(v, dtype=np.float32).tolist() for n, v in named.items()},
                )
                for pid, named in vectors.items()
            ],
            wait=True,
        )

    @_guard
    def query(
        self,
        vector: np.ndarray,
        *,
        using: str = VECTOR_NAME,
        top_k: int = 10,
        threshold: float | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """Nearest points to vector; threshold is a minimum score (a maximum distance)."""
        return self.query_many(
            [vector], using=using, top_k=top_k, threshold=threshold, where=where
        )[0]

    @_guard
    def query_many(
        self,
        vectors: Sequence[np.ndarray],
        *,
        using: str = VECTOR_NAME,
        top_k: int = 10,
        threshold: float | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> list[list[Hit]]:
        """One round trip for several query vectors of one named vector."""
        if not vectors:
            return []
        self.ensure_collection()
        flt = build_filter(where)
        responses = self.client.query_batch_points(
            self.collection,
            requests=[
                models.QueryRequest(
                    query=np.asarray(vector, dtype=np.float32).tolist(),
                    using=using,
                    limit=top_k,
                    score_threshold=threshold,
                    filter=flt,
                    with_payload=True,
                )
                for vector in vectors
            ],
        )
        return [
            [
                Hit(id=str(point.id), score=float(point.score), payload=dict(point.payload or {}))
                for point in response.points
            ]
            for response in responses
        ]

    @_guard
    def get(self, ids: Sequence[str], *, with_vectors: Sequence[str] = ()) -> list[Hit]:
        """The points with these ids that exist (score 1.0), with the named vectors asked for."""
        if not ids:
            return []
        self.ensure_collection()
        points = self.client.retrieve(
            self.collection,
            ids=list(ids),
            with_payload=True,
            with_vectors=list(with_vectors) if with_vectors else False,
        )
        return [
            Hit(
                id=str(p.id),
                score=1.0,
                payload=dict(p.payload or {}),
                vectors=_named(p.vector),
            )
            for p in points
        ]

    def existing(self, ids: Sequence[str]) -> set[str]:
        """The subset of ids already in the index."""
        return {hit.id for hit in self.get(ids)}

    @_guard
    def count(self, where: Mapping[str, Any] | None = None) -> int:
        """Exact number of points (matching the filter, if any)."""
        self.ensure_collection()
        return int(
            self.client.count(self.collection, count_filter=build_filter(where), exact=True).count
        )

    def scroll(self, page_size: int = 256, *, with_vectors: Sequence[str] = ()) -> Iterator[Hit]:
        """Every point with its payload (and the named vectors asked for), page by page."""
        offset: Any = None
        while True:
            points, offset = self._scroll_page(page_size, offset, with_vectors)
            yield from points
            if offset is None:
                return

    @_guard
    def _scroll_page(
        self, page_size: int, offset: Any, with_vectors: Sequence[str] = ()
    ) -> tuple[list[Hit], Any]:
        self.ensure_collection()
        points, next_offset = self.client.scroll(
            self.collection,
            limit=page_size,
            offset=offset,
            with_payload=True,
            with_vectors=list(with_vectors) if with_vectors else False,
        )
        hits = [
            Hit(id=str(p.id), score=1.0, payload=dict(p.payload or {}), vectors=_named(p.vector))
            for p in points
        ]
        return hits, next_offset

    @_guard
    def set_payload(self, point: str, payload: Mapping[str, Any]) -> None:
        """Merge keys into one point's payload."""
        self.ensure_collection()
        self.client.set_payload(self.collection, payload=dict(payload), points=[point], wait=True)

    @_guard
    def overwrite_payload(self, point: str, payload: Mapping[str, Any]) -> None:
        """Replace one point's whole payload."""
        self.ensure_collection()
        self.client.overwrite_payload(
            self.collection, payload=dict(payload), points=[point], wait=True
        )

    @_guard
    def delete(self, ids: Sequence[str]) -> None:
        """Remove points by id."""
        if ids:
            self.ensure_collection()
            self.client.delete(self.collection, points_selector=list(ids), wait=True)

    def close(self) -> None:
        """Release the client (and the embedded folder's lock)."""
        with self._lock:
            self.client.close()
            if self._on_close:
                self._on_close()
                self._on_close = None


MIGRATING = "__migrating"


def _named(vector: Any) -> dict[str, np.ndarray]:
    if isinstance(vector, Mapping):
        return {str(k): np.asarray(v, dtype=np.float32) for k, v in vector.items()}
    return {}


def build_filter(where: Mapping[str, Any] | None) -> models.Filter | None:
    """A payload filter from {field: value | [values] | {"gte": .., "lte": ..}}."""
    if not where:
        return None
    must: list[models.Condition] = []
    for key, value in where.items():
        if isinstance(value, Mapping):
            must.append(
                models.FieldCondition(
                    key=key,
                    range=models.DatetimeRange(**value)
                    if any(isinstance(v, str) for v in value.values())
                    else models.Range(**value),
                )
            )
        elif isinstance(value, list | tuple | set):
            must.append(models.FieldCondition(key=key, match=models.MatchAny(any=list(value))))
        else:
            must.append(models.FieldCondition(key=key, match=models.MatchValue(value=value)))
    return models.Filter(must=must)


def open_index(
    settings: Settings,
    specs: Sequence[VectorSpec] | None = None,
) -> VectorIndex:
    """Open the configured index: a Qdrant server when a URL is set, else the embedded folder."""
    q = settings.qdrant
    if q.url:
        client = QdrantClient(
            url=q.url,
            api_key=q.api_key.get_secret_value() if q.api_key else None,
            timeout=int(q.timeout_s),
            check_compatibility=False,  # no start-up round trip; errors surface on first use
        )
        return VectorIndex(
            client,
            q.collection,
            q.distance,
            specs=specs,
            where=q.url,
            upsert_batch=q.upsert_batch,
        )
    return open_local_index(
        settings.qdrant_path,
        q.collection,
        q.distance,
        q.upsert_batch,
        specs=specs,
    )


def open_local_index(
    path: Path | str,
    collection: str,
    distance: str = "cosine",
    upsert_batch: int = 128,
    *,
    specs: Sequence[VectorSpec] | None = None,
) -> VectorIndex:
    """Open an embedded index folder (or ":memory:"); a held folder raises IndexLocked."""
    options: dict[str, Any] = {
        "specs": specs,
        "upsert_batch": upsert_batch,
    }
    if str(path) == ":memory:":
        client = QdrantClient(location=":memory:")
        return VectorIndex(client, collection, distance, where=":memory:", **options)
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    owner_file = folder.with_name(folder.name + ".owner")
    try:
        client = QdrantClient(path=str(folder))
    except RuntimeError as exc:
        if "already accessed" not in str(exc):
            raise
        raise IndexLocked(_locked_sentence(folder, owner_file)) from exc
    owner_file.write_text(json.dumps({"pid": os.getpid(), "command": _command_line()}))

    def release() -> None:
        owner_file.unlink(missing_ok=True)

    return VectorIndex(client, collection, distance, where=str(folder), on_close=release, **options)


def _locked_sentence(folder: Path, owner_file: Path) -> str:
    holder = "another imgsearch process"
    try:
        owner = json.loads(owner_file.read_text())
        holder = f"process {owner['pid']} ({owner['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return (
        f"The embedded index at {folder} is held by {holder}; only one process can open it, so "
        "stop that process (e.g. the app) first, or run a Qdrant server and set "
        "IMGSEARCH_QDRANT__URL."
    )


def _command_line() -> str:
    argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else ["python"]
    return " ".join(argv)[:200]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
