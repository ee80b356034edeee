"""Stage upsert: embedded Stored items -> points in the index, then state marked seen."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ingest.items import SourceItem, Stored
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
    }


def upsert(
    batch: Sequence[Stored], vectors: np.ndarray, index: VectorIndex, state: StateStore
) -> None:
    """Upsert one batch, then record each item as seen and its pending writes as done."""
    index.upsert(
        [
            PointRecord(stored.point_id, vector, payload_of(stored))
            for stored, vector in zip(batch, vectors, strict=True)
        ]
    )
    for stored in batch:
        item = stored.item
        state.mark_seen(item.source, item.key, item.version, stored.image.sha256, stored.point_id)
    state.clear_pending([stored.image.sha256 for stored in batch])


MAX_SIGHTINGS = 50


def record_sighting(index: VectorIndex, point: str, item: SourceItem) -> None:
    """An image already in the catalog arrived again: keep where, and any edited metadata."""
    hits = index.get([point])
    if not hits:
        return
    payload = hits[0].payload
    meta = item.meta.as_payload()
    uri = item.meta.source_uri
    if uri == payload.get("source_uri"):
        # The same place with new metadata (an edited sidecar, row or feed entry).
        changed = {k: v for k, v in meta.items() if payload.get(k) != v}
        if changed:
            index.set_payload(point, changed)
        return
    sightings: list[dict[str, Any]] = list(payload.get("also_seen", []))
    entry = {**meta, "source": item.source}
    for existing in sightings:
        if existing.get("source_uri") == uri:
            if any(existing.get(k) != v for k, v in entry.items()):
                existing.update(entry)
                index.set_payload(point, {"also_seen": sightings})
            return
    sightings.append({**entry, "seen_at": iso(utcnow())})
    index.set_payload(point, {"also_seen": sightings[-MAX_SIGHTINGS:]})
