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

VECTOR_NAME = "image"
DIM = 2048
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


@dataclass(frozen=True)
class PointRecord:
    """One image's vector and payload, ready to upsert."""

    id: str
    vector: np.ndarray
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class Hit:
    """A point returned by a query or lookup."""

    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)


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
    """The image collection: create, upsert in batches, query, get, count, scroll, delete."""

    def __init__(
        self,
        client: QdrantClient,
        collection: str,
        distance: str = "cosine",
        *,
        where: str = "",
        upsert_batch: int = 128,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.collection = collection
        self.distance = distance
        self.where = where or collection
        self.upsert_batch = upsert_batch
        self._lock = threading.RLock()
        self._on_close = on_close
        self._ready = False

    @property
    def higher_is_better(self) -> bool:
        """Cosine and dot are similarities; euclid and manhattan are distances."""
        return self.distance in ("cosine", "dot")

    @_guard
    def ensure_collection(self) -> None:
        """Create the collection with its named vector when it is missing (never recreate)."""
        if self._ready:
            return
        if not self.client.collection_exists(self.collection):
            self.client.create_collection(
                self.collection,
                vectors_config={
                    VECTOR_NAME: models.VectorParams(size=DIM, distance=DISTANCES[self.distance])
                },
            )
            log.info("created collection %s (%s) at %s", self.collection, self.distance, self.where)
        self._ready = True

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
                        vector={VECTOR_NAME: record.vector.astype(np.float32).tolist()},
                        payload=dict(record.payload),
                    )
                    for record in chunk
                ],
                wait=True,
            )

    @_guard
    def query(
        self,
        vector: np.ndarray,
        *,
        top_k: int = 10,
        threshold: float | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """Nearest points to vector; threshold is a minimum score (a maximum distance)."""
        self.ensure_collection()
        response = self.client.query_points(
            self.collection,
            query=vector.astype(np.float32).tolist(),
            using=VECTOR_NAME,
            limit=top_k,
            score_threshold=threshold,
            query_filter=build_filter(where),
            with_payload=True,
        )
        return [
            Hit(id=str(point.id), score=float(point.score), payload=dict(point.payload or {}))
            for point in response.points
        ]

    @_guard
    def get(self, ids: Sequence[str]) -> list[Hit]:
        """The points with these ids that exist (score 1.0)."""
        if not ids:
            return []
        self.ensure_collection()
        points = self.client.retrieve(self.collection, ids=list(ids), with_payload=True)
        return [Hit(id=str(p.id), score=1.0, payload=dict(p.payload or {})) for p in points]

    def existing(self, ids: Sequence[str]) -> set[str]:
        """The subset of ids already in the index."""
        return {hit.id for hit in self.get(ids)}

    @_guard
    def count(self) -> int:
        """Exact number of points."""
        self.ensure_collection()
        return int(self.client.count(self.collection, exact=True).count)

    def scroll(self, page_size: int = 256) -> Iterator[Hit]:
        """Every point with its payload, streamed page by page."""
        offset: Any = None
        while True:
            points, offset = self._scroll_page(page_size, offset)
            yield from points
            if offset is None:
                return

    @_guard
    def _scroll_page(self, page_size: int, offset: Any) -> tuple[list[Hit], Any]:
        self.ensure_collection()
        points, next_offset = self.client.scroll(
            self.collection, limit=page_size, offset=offset, with_payload=True, with_vectors=False
        )
        return [Hit(id=str(p.id), score=1.0, payload=dict(p.payload or {})) for p in points], (
            next_offset
        )

    @_guard
    def set_payload(self, point: str, payload: Mapping[str, Any]) -> None:
        """Merge keys into one point's payload."""
        self.ensure_collection()
        self.client.set_payload(self.collection, payload=dict(payload), points=[point], wait=True)

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


def open_index(settings: Settings) -> VectorIndex:
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
            client, q.collection, q.distance, where=q.url, upsert_batch=q.upsert_batch
        )
    return open_local_index(settings.qdrant_path, q.collection, q.distance, q.upsert_batch)


def open_local_index(
    path: Path | str, collection: str, distance: str = "cosine", upsert_batch: int = 128
) -> VectorIndex:
    """Open an embedded index folder (or ":memory:"); a held folder raises IndexLocked."""
    if str(path) == ":memory:":
        client = QdrantClient(location=":memory:")
        return VectorIndex(
            client, collection, distance, where=":memory:", upsert_batch=upsert_batch
        )
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

    return VectorIndex(
        client,
        collection,
        distance,
        where=str(folder),
        upsert_batch=upsert_batch,
        on_close=release,
    )


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
