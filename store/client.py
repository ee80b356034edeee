"""The qdrant-client engine: a Qdrant server (gRPC preferred) or qdrant-client's local mode."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from config import QdrantSettings
from store.filters import AnyOf, Between, Exact, Words, parse_where
from store.folder import claim_folder, locked_sentence
from store.index import (
    OVERSAMPLING,
    PAYLOAD_INDEXES,
    SCHEMA,
    Hit,
    IndexLocked,
    IndexUnavailable,
    PointRecord,
    Strategy,
    VectorIndex,
    VectorSpec,
    first_line,
    guarded,
    named_vectors,
)

log = logging.getLogger(__name__)

DISTANCES = {
    "cosine": models.Distance.COSINE,
    "dot": models.Distance.DOT,
    "euclid": models.Distance.EUCLID,
    "manhattan": models.Distance.MANHATTAN,
}
SCHEMAS: dict[str, models.PayloadSchemaType | models.TextIndexParams] = {
    "keyword": models.PayloadSchemaType.KEYWORD,
    "datetime": models.PayloadSchemaType.DATETIME,
    "text": models.TextIndexParams(
        type=models.TextIndexType.TEXT, tokenizer=models.TokenizerType.WORD, lowercase=True
    ),
}
MIGRATING = "__migrating"
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    ResponseHandlingException,
    UnexpectedResponse,
    ConnectionError,
)
try:  # gRPC is how qdrant-client talks to a server when prefer_grpc is on
    import grpc

    TRANSPORT_ERRORS = (*TRANSPORT_ERRORS, grpc.RpcError)
except ImportError:  # pragma: no cover - grpcio ships with qdrant-client
    pass


INT8 = models.ScalarQuantization(
    scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, always_ram=True)
)
# A +-1 vector (VectorSpec.binary) loses nothing to one bit per component.
BINARY = models.BinaryQuantization(binary=models.BinaryQuantizationConfig(always_ram=True))


class ClientIndex(VectorIndex):
    """VectorIndex over qdrant-client: one code path for a server URL and local mode."""

    engine = "qdrant-client"

    def __init__(
        self,
        client: QdrantClient,
        collection: str,
        specs: Sequence[VectorSpec],
        *,
        payload_indexes: bool = False,
        quantization: bool = False,
        search_params: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(collection, specs, **options)
        self.client = client
        self.payload_indexes = payload_indexes  # local mode has none (it warns)
        self.quantization = quantization
        self.search_params = search_params  # local mode searches exactly (and warns on them)

    def _unavailable(self, exc: Exception) -> IndexUnavailable | None:
        if isinstance(exc, TRANSPORT_ERRORS):
            return IndexUnavailable(
                f"the Qdrant index at {self.where} did not answer ({first_line(exc)}); "
                "check that the server is running and IMGSEARCH_QDRANT__URL is right"
            )
        return None

    # -- the collection -----------------------------------------------------------------------
    def _open(self) -> dict[str, Any]:
        migrating = f"{self.collection}{MIGRATING}"
        if not self.client.collection_exists(self.collection):
            if self.client.collection_exists(migrating):
                # Killed after dropping the old collection: its points are all in the copy.
                self._create(self.collection, {}, self._vector_params(migrating))
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
        self.check_distances(
            {n: (str(p.distance.value).lower(), int(p.size)) for n, p in present.items()}
        )
        self._quantize(info.config.quantization_config, present)
        missing = [name for name in self.specs if name not in present]
        if missing:
            undeclared = {n: p for n, p in present.items() if n not in self.specs}
            meta = self._migrate(meta, missing, undeclared)
        if self.payload_indexes:
            schema = info.payload_schema or {}
            for key, kind in PAYLOAD_INDEXES.items():
                if key not in schema:
                    self.client.create_payload_index(
                        self.collection, key, field_schema=SCHEMAS[kind], wait=True
                    )
        return meta

    def _quantize(self, current: Any, present: Mapping[str, models.VectorParams]) -> None:
        """Bring a collection made with other settings to this quantization: int8 on or off,
        binary on each binary vector (the server re-indexes in the background; local mode
        ignores the change)."""
        if self.quantization != isinstance(current, models.ScalarQuantization):
            changed = self.client.update_collection(
                self.collection,
                quantization_config=INT8 if self.quantization else models.Disabled.DISABLED,
            )
            if changed:
                log.info(
                    "%s: int8 quantization %s",
                    self.collection,
                    "on" if self.quantization else "off",
                )
        for name, spec in self.specs.items():
            params = present.get(name)
            if spec.binary and params is not None and params.quantization_config is None:
                changed = self.client.update_collection(
                    self.collection,
                    vectors_config={name: models.VectorParamsDiff(quantization_config=BINARY)},
                )
                if changed:
                    log.info("%s: binary quantization of the %s vectors", self.collection, name)

    def _search_params(
        self, using: str, queries: Sequence[np.ndarray] | None
    ) -> models.SearchParams | None:
        """The vector's search breadth, if it sets one; with int8 the nearest (twice as many as
        asked for, as store/edge.py measured) are rescored with the full vectors, asked for
        rather than left to the server's choice, so a score (and a threshold) means the same
        with quantization as without.

        A binary vector is searched on its bits only for queries of +-1 components (None: the
        server computes the query, e.g. a recommend's average); others are searched on the full
        vectors, as store/edge.py does (the bits would pick the candidates by the signs alone).
        """
        spec = self.specs.get(using)
        ef = spec.search_ef if spec is not None else None
        exact = (
            spec is not None
            and spec.binary
            and (queries is None or not all(_signs_only(q) for q in queries))
        )
        if not self.search_params or (ef is None and not self.quantization and not exact):
            return None
        quantization = None
        if exact:
            quantization = models.QuantizationSearchParams(ignore=True)
        elif self.quantization:
            quantization = models.QuantizationSearchParams(rescore=True, oversampling=OVERSAMPLING)
        return models.SearchParams(hnsw_ef=ef, quantization=quantization)

    def _write_meta(self, meta: dict[str, Any]) -> None:
        self.client.update_collection(self.collection, metadata={"imgsearch": meta})

    @guarded
    def stored_vectors(self) -> dict[str, tuple[str, int]]:
        """{name: (distance, size)} of every vector the collection holds, declared here or not."""
        self.ensure_collection()
        return {
            name: (str(params.distance.value).lower(), int(params.size))
            for name, params in self._vector_params(self.collection).items()
        }

    def _vector_params(self, name: str) -> dict[str, models.VectorParams]:
        vectors = self.client.get_collection(name).config.params.vectors
        return dict(vectors) if isinstance(vectors, Mapping) else {}

    def _create(
        self,
        name: str,
        recorded: Mapping[str, Any],
        keep: Mapping[str, models.VectorParams] | None = None,
    ) -> None:
        """A collection with every declared vector, plus `keep`: vectors the catalog holds that
        this process does not declare (text search off for a while), so no vector is lost."""
        quantization = INT8 if self.quantization else None
        self.client.create_collection(
            name,
            vectors_config={
                **{
                    n: models.VectorParams(size=p.size, distance=p.distance)
                    for n, p in (keep or {}).items()
                },
                **{
                    s.name: models.VectorParams(
                        size=s.size,
                        distance=DISTANCES[s.distance],
                        quantization_config=BINARY if s.binary else None,
                    )
                    for s in self.specs.values()
                },
            },
            quantization_config=quantization,
            metadata={"imgsearch": {"schema": SCHEMA, "vectors": dict(recorded)}},
        )

    def _migrate(
        self,
        meta: Mapping[str, Any],
        missing: list[str],
        undeclared: Mapping[str, models.VectorParams],
    ) -> dict[str, Any]:
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
        self._create(temp, recorded, undeclared)
        self._copy(self.collection, temp)
        self.client.delete_collection(self.collection)
        self._create(self.collection, recorded, undeclared)
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

    # -- writes -------------------------------------------------------------------------------
    @guarded
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
                        vector={name: _floats(v) for name, v in record.vectors.items()},
                        payload=dict(record.payload),
                    )
                    for record in chunk
                ],
                wait=True,
            )

    @guarded
    def update_vectors(self, vectors: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        """Set some named vectors of existing points ({point id: {name: vector}})."""
        if not vectors:
            return
        self.ensure_collection()
        self.client.update_vectors(
            self.collection,
            points=[
                models.PointVectors(id=pid, vector={n: _floats(v) for n, v in named.items()})
                for pid, named in vectors.items()
            ],
            wait=True,
        )

    @guarded
    def set_payload(self, point: str, payload: Mapping[str, Any]) -> None:
        """Merge keys into one point's payload."""
        self.ensure_collection()
        self.client.set_payload(self.collection, payload=dict(payload), points=[point], wait=True)

    @guarded
    def overwrite_payload(self, point: str, payload: Mapping[str, Any]) -> None:
        """Replace one point's whole payload."""
        self.ensure_collection()
        self.client.overwrite_payload(
            self.collection, payload=dict(payload), points=[point], wait=True
        )

    @guarded
    def delete(self, ids: Sequence[str]) -> None:
        """Remove points by id."""
        if ids:
            self.ensure_collection()
            self.client.delete(self.collection, points_selector=list(ids), wait=True)

    # -- reads --------------------------------------------------------------------------------
    @guarded
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
        if not vectors:
            return []
        self.ensure_collection()
        flt = build_filter(where)
        responses = self.client.query_batch_points(
            self.collection,
            requests=[
                models.QueryRequest(
                    query=_floats(vector),
                    using=using,
                    limit=top_k,
                    offset=offset or None,
                    score_threshold=threshold,
                    filter=flt,
                    with_payload=True,
                    params=self._search_params(using, [vector]),
                )
                for vector in vectors
            ],
        )
        return [[_hit(point) for point in response.points] for response in responses]

    @guarded
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
        """Points like the positive examples and unlike the negative ones (Qdrant's recommend)."""
        self.ensure_collection()
        pos_ids, _ = self._split_examples(positive)
        neg_ids, _ = self._split_examples(negative)
        if pos_ids or neg_ids:
            # An example must have the searched vector (the engine would fail on it otherwise).
            found = self.get(pos_ids + neg_ids, with_vectors=[using])
            usable = {h.id for h in found if using in h.vectors}
            unknown = sorted(set(pos_ids + neg_ids) - usable)
            if unknown:
                raise KeyError(
                    f"no image with id {unknown[0]} (and a {using} vector) in the catalog"
                )
        response = self.client.query_points(
            self.collection,
            query=models.RecommendQuery(
                recommend=models.RecommendInput(
                    positive=[_example(e) for e in positive],
                    negative=[_example(e) for e in negative],
                    strategy=models.RecommendStrategy(strategy),
                )
            ),
            using=using,
            limit=top_k,
            offset=offset or None,
            score_threshold=threshold,
            query_filter=build_filter(where),
            with_payload=True,
            search_params=self._search_params(
                using, _recommend_queries(positive, negative, strategy)
            ),
        )
        return [_hit(point) for point in response.points]

    @guarded
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
                vectors=named_vectors(p.vector),
            )
            for p in points
        ]

    @guarded
    def count(self, where: Mapping[str, Any] | None = None) -> int:
        """Exact number of points (matching the filter, if any)."""
        self.ensure_collection()
        return int(
            self.client.count(self.collection, count_filter=build_filter(where), exact=True).count
        )

    @guarded
    def facet(
        self, key: str, *, where: Mapping[str, Any] | None = None, limit: int = 100
    ) -> list[tuple[Any, int]]:
        """(payload value, number of points) for one key, largest first."""
        self.ensure_collection()
        response = self.client.facet(
            self.collection, key, facet_filter=build_filter(where), limit=limit, exact=True
        )
        return sorted(((h.value, int(h.count)) for h in response.hits), key=lambda vc: -vc[1])

    @guarded
    def _scroll_page(
        self,
        page_size: int,
        offset: Any,
        with_vectors: Sequence[str] = (),
        where: Mapping[str, Any] | None = None,
    ) -> tuple[list[Hit], Any]:
        self.ensure_collection()
        points, next_offset = self.client.scroll(
            self.collection,
            scroll_filter=build_filter(where),
            limit=page_size,
            offset=offset,
            with_payload=True,
            with_vectors=list(with_vectors) if with_vectors else False,
        )
        hits = [
            Hit(
                id=str(p.id),
                score=1.0,
                payload=dict(p.payload or {}),
                vectors=named_vectors(p.vector),
            )
            for p in points
        ]
        return hits, next_offset

    def close(self) -> None:
        """Release the client (and the embedded folder's lock)."""
        with self._lock:
            self.client.close()
            super().close()


def _signs_only(vector: np.ndarray) -> bool:
    """Whether every component is +1 or -1 (what a binary vector's bits keep exactly)."""
    return bool(np.all(np.abs(np.asarray(vector, dtype=np.float32)) == 1.0))


def _recommend_queries(
    positive: Sequence[str | np.ndarray], negative: Sequence[str | np.ndarray], strategy: Strategy
) -> list[np.ndarray] | None:
    """The vectors a recommend searches with, where they are known here: best_score scores each
    example (an id stands for its stored vector, +-1 on a binary vector); average_vector searches
    one computed average (known only when it is the one positive example), else None."""
    vectors = [np.asarray(e) for e in [*positive, *negative] if not isinstance(e, str)]
    if strategy == Strategy.BEST_SCORE or (len(positive) == 1 and not negative):
        return vectors
    return None


def _floats(vector: np.ndarray) -> list[float]:
    floats: list[float] = np.asarray(vector, dtype=np.float32).tolist()
    return floats


def _example(example: str | np.ndarray) -> str | list[float]:
    return example if isinstance(example, str) else _floats(example)


def _hit(point: models.ScoredPoint) -> Hit:
    return Hit(id=str(point.id), score=float(point.score), payload=dict(point.payload or {}))


def build_filter(where: Mapping[str, Any] | None) -> models.Filter | None:
    """A qdrant-client payload filter from a `where` mapping (see store.filters.parse_where)."""
    conditions = parse_where(where)
    if not conditions:
        return None
    must: list[models.Condition] = []
    for c in conditions:
        if isinstance(c, Exact):
            must.append(models.FieldCondition(key=c.key, match=models.MatchValue(value=c.value)))
        elif isinstance(c, AnyOf):
            must.append(
                models.FieldCondition(key=c.key, match=models.MatchAny(any=list(c.values)))  # type: ignore[arg-type]
            )
        elif isinstance(c, Between):
            bounds = models.DatetimeRange(**c.bounds) if c.dates else models.Range(**c.bounds)
            must.append(models.FieldCondition(key=c.key, range=bounds))
        elif isinstance(c, Words):
            must.append(models.FieldCondition(key=c.key, match=models.MatchText(text=c.text)))
    return models.Filter(must=must)


def open_server_index(q: QdrantSettings, specs: Sequence[VectorSpec]) -> ClientIndex:
    """A Qdrant server or cluster (gRPC when prefer_grpc), with payload indexes."""
    client = QdrantClient(
        url=q.url,
        api_key=q.api_key.get_secret_value() if q.api_key else None,
        timeout=int(q.timeout_s),
        prefer_grpc=q.prefer_grpc,
        grpc_port=q.grpc_port,
        check_compatibility=False,  # no start-up round trip; errors surface on first use
    )
    return ClientIndex(
        client,
        q.collection,
        specs,
        where=q.url,
        upsert_batch=q.upsert_batch,
        payload_indexes=True,
        quantization=q.quantization == "int8",
        search_params=True,
    )


def open_local_mode_index(
    path: Path | str,
    collection: str,
    specs: Sequence[VectorSpec],
    *,
    upsert_batch: int = 128,
) -> ClientIndex:
    """qdrant-client's local mode in a folder (or ":memory:"); a held folder raises IndexLocked."""
    if str(path) == ":memory:":
        client = QdrantClient(location=":memory:")
        return ClientIndex(client, collection, specs, where=":memory:", upsert_batch=upsert_batch)
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    client = open_local_client(folder)
    release = claim_folder(folder)
    return ClientIndex(
        client, collection, specs, where=str(folder), on_close=release, upsert_batch=upsert_batch
    )


def open_local_client(folder: Path) -> QdrantClient:
    """QdrantClient(path=folder); IndexLocked when another process holds the folder."""
    try:
        return QdrantClient(path=str(folder))
    except RuntimeError as exc:
        if "already accessed" not in str(exc):
            raise
        raise IndexLocked(locked_sentence(folder)) from exc
