"""Move a catalog that qdrant-client's local mode left in the index folder into Qdrant Edge.

Every point is copied with all its vectors and its payload; the local collection is dropped only
after every one of its ids is found in the shard, so a run killed at any moment simply copies
again on the next open (upserts by id are idempotent) and nothing is lost. Only the public
methods of the two engines are used: the local catalog is read through qdrant-client, the shard
written through `EdgeIndex`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from store.client import open_local_client
from store.edge import EdgeIndex
from store.index import IndexUnavailable, PointRecord

log = logging.getLogger(__name__)
PAGE = 256


def has_local_mode_catalog(index: EdgeIndex) -> bool:
    """Whether the folder holds qdrant-client local-mode data for this collection."""
    return (index.folder / "collection" / index.collection).exists()


def migrate_local_mode(index: EdgeIndex) -> None:
    """Copy the local-mode collection into the shard, verify, drop it; adopt its model record."""
    if not has_local_mode_catalog(index):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # local mode warns about large collections
        client = open_local_client(index.folder)
    try:
        if not client.collection_exists(index.collection):
            return
        info = client.get_collection(index.collection)
        vectors = info.config.params.vectors
        present = {
            name: (str(params.distance.value).lower(), int(params.size))
            for name, params in (dict(vectors) if isinstance(vectors, Mapping) else {}).items()
        }
        index.check_distances(present)
        for name, (distance, size) in present.items():
            index.add_vector(name, size, distance)  # one this process does not declare: kept
        recorded = dict(((info.config.metadata or {}).get("imgsearch") or {}).get("vectors") or {})
        total = client.count(index.collection, exact=True).count
        log.warning(
            "moving catalog %s (%d points) from qdrant-client local mode into Qdrant Edge at %s",
            index.collection,
            total,
            index.path,
        )
        ids: list[str] = []
        offset: Any = None
        with index.bulk_load():
            while True:
                points, offset = client.scroll(
                    index.collection,
                    limit=PAGE,
                    offset=offset,
                    with_payload=True,
                    with_vectors=True,
                )
                records = [
                    PointRecord(
                        str(p.id),
                        {
                            str(k): np.asarray(v, dtype=np.float32)
                            for k, v in dict(p.vector or {}).items()  # type: ignore[arg-type]
                        },
                        dict(p.payload or {}),
                    )
                    for p in points
                ]
                index.upsert(records)
                ids.extend(r.id for r in records)
                if offset is None:
                    break
            index.flush()
            found = sum(len(index.existing(ids[i : i + PAGE])) for i in range(0, len(ids), PAGE))
            if found != len(ids):
                raise IndexUnavailable(
                    f"moving catalog {index.collection} into Qdrant Edge found {found} of "
                    f"{len(ids)} points in the new shard, so the old catalog was kept; open it "
                    "again to retry"
                )
            client.delete_collection(index.collection)
            index.adopt_record(recorded)
        log.warning("moved %d points of catalog %s into Qdrant Edge", len(ids), index.collection)
    finally:
        client.close()
