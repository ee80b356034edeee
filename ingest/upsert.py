"""Stage upsert: embedded Stored items -> points in the index, then state marked seen.

A point's first payload is its first place; later places are kept by ingest/sightings.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ingest.items import Stored
from ingest.state import StateStore, iso, utcnow
from store.index import PointRecord, VectorIndex


def payload_of(stored: Stored) -> dict[str, Any]:
    """The point's payload: identity, storage keys, image facts and where it came from."""
    image = stored.image
    return {
        **stored.item.meta.as_payload(),
        "sha256": image.sha256,
        "image_key": stored.image_key,
        "thumbnail_key": stored.thumbnail_key,
        "width": image.width,
        "height": image.height,
        "format": image.format,
        "content_type": image.content_type,
        "bytes": image.nbytes,
        "source": stored.item.source,
        "ingested_at": iso(utcnow()),
        # {} when the file says nothing; absent when it was not read (`imgsearch reindex` reads it)
        **({"metadata": dict(stored.metadata)} if stored.metadata is not None else {}),
    }


def upsert(
    batch: Sequence[Stored],
    vectors: Sequence[Mapping[str, np.ndarray]],
    labels: Mapping[str, str],
    index: VectorIndex,
    state: StateStore,
) -> None:
    """Upsert one batch, then record each item as seen and its pending writes as done."""
    index.upsert(
        [
            PointRecord(
                stored.point_id,
                named,
                {**payload_of(stored), "descriptors": dict(labels)},
            )
            for stored, named in zip(batch, vectors, strict=True)
        ]
    )
    for stored in batch:
        item = stored.item
        state.mark_seen(item.source, item.key, item.version, stored.image.sha256, stored.point_id)
    state.clear_pending([stored.image.sha256 for stored in batch])
