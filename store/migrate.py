"""Move a catalog that qdrant-client's local mode left in the index folder into Qdrant Edge.

Every point is copied with all its vectors and its payload; the local collection is dropped only
after every one of its ids is found in the shard, so a run killed at any moment simply copies
again on the next open (upserts by id are idempotent) and nothing is lost.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import qdrant_edge as qe

from store.client import open_local_client
from store.index import IndexUnavailable

if TYPE_CHECKING:
    from store.edge import EdgeIndex

log = logging.getLogger(__name__)
PAGE = 256


def has_local_mode_catalog(index: EdgeIndex) -> bool:
    """Whether the folder holds qdrant-client local-mode data for this collection."""
    return (index.folder / "collection" / index.collection).exists()


def migrate_local_mode(index: EdgeIndex) -> dict[str, Any]:
    """Copy the local-mode collection into the shard, verify, drop it; return its model record."""
    if not has_local_mode_catalog(index):
        return {}
    from store.edge import DISTANCES, _point_id

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # local mode warns about large collections
        client = open_local_client(index.folder)
    try:
        if not client.collection_exists(index.collection):
            return {}
        info = client.get_collection(index.collection)
        vectors = info.config.params.vectors
        present = dict(vectors) if isinstance(vectors, Mapping) else {}
        index.check_distances(
            {n: (str(p.distance.value).lower(), int(p.size)) for n, p in present.items()}
        )
        stored = index._stored_vectors()
        for name, params in present.items():
            if name not in stored:  # a vector this configuration does not declare: keep it
                distance = str(params.distance.value).lower()
                index.shard.update(
                    qe.UpdateOperation.create_dense_vector(
                        name, int(params.size), DISTANCES[distance]
                    )
                )
        recorded = dict(((info.config.metadata or {}).get("imgsearch") or {}).get("vectors") or {})
        total = client.count(index.collection, exact=True).count
        log.warning(
            "moving catalog %s (%d points) from qdrant-client local mode into Qdrant Edge at %s",
            index.collection,
            total,
            index.path,
        )
        ids: list[Any] = []
        offset: Any = None
        while True:
            points, offset = client.scroll(
                index.collection, limit=PAGE, offset=offset, with_payload=True, with_vectors=True
            )
            if points:
                index.shard.update(
                    qe.UpdateOperation.upsert_points(
                        [
                            qe.Point(
                                _point_id(str(p.id)),
                                {
                                    str(k): np.asarray(v, dtype=np.float32).tolist()
                                    for k, v in dict(p.vector or {}).items()  # type: ignore[arg-type]
                                },
                                dict(p.payload or {}),
                            )
                            for p in points
                        ]
                    )
                )
                ids.extend(_point_id(str(p.id)) for p in points)
            if offset is None:
                break
        index.shard.flush()
        found = sum(
            len(index.shard.retrieve(ids[i : i + PAGE], False, False))
            for i in range(0, len(ids), PAGE)
        )
        if found != len(ids):
            raise IndexUnavailable(
                f"moving catalog {index.collection} into Qdrant Edge found {found} of {len(ids)} "
                "points in the new shard, so the old catalog was kept; open it again to retry"
            )
        client.delete_collection(index.collection)
        log.warning("moved %d points of catalog %s into Qdrant Edge", len(ids), index.collection)
        return recorded
    finally:
        client.close()
