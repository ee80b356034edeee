"""Provenance: every place one image was seen, kept on its point, earliest first.

The model:
- One point per distinct image (its id derives from the bytes' SHA-256), however many sources,
  articles or files carry it. A *place* is where it appeared, identified by its `source_uri`
  (the article, feed entry, page, row link or file), with what that place says about it: title,
  description, category, published_at, and the source that found it.
- The main record (the payload's top-level title, description, category, published_at,
  source_uri, source, and ingested_at as its first-seen time) is the EARLIEST place: the earliest
  published, or, for a place that gives no date, the moment the catalog first saw it. A place
  that arrives later but was published earlier takes the main record over, and the old main
  record becomes a sighting; no key of the old main record lingers on the new one.
- `also_seen` lists the other places, earliest first, each with `seen_at` (when first seen). It
  keeps the MAX_SIGHTINGS earliest: "where was this first published" is the question it answers,
  so a late republication is what gets dropped.
- A place that arrives again (same `source_uri`) updates its metadata where it is: an edited
  sidecar, row or feed entry corrects that place and may move it in the order.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ingest.items import SourceItem
from ingest.state import iso, utcnow
from store.index import VectorIndex

MAX_SIGHTINGS = 50
# What belongs to one place; the rest of a payload (hash, storage keys, size) is the image's.
PLACE_KEYS = ("source_uri", "title", "description", "category", "published_at", "source")
_LAST = datetime.max.replace(tzinfo=UTC)


def record_sighting(index: VectorIndex, point: str, item: SourceItem) -> None:
    """An image already in the catalog arrived again: keep where, and any edited metadata."""
    hits = index.get([point])
    if not hits:
        return
    payload = hits[0].payload
    updated = with_place(payload, {**item.meta.as_payload(), "source": item.source}, iso(utcnow()))
    if updated == payload:
        return
    if set(payload) - set(updated):  # the main record moved to a place lacking some keys
        index.overwrite_payload(point, updated)
    else:
        index.set_payload(point, {k: v for k, v in updated.items() if payload.get(k) != v})


def with_place(payload: dict[str, Any], place: dict[str, Any], seen_at: str) -> dict[str, Any]:
    """The payload once `place` (its PLACE_KEYS) is recorded, first seen at `seen_at` if new."""
    main = {k: payload[k] for k in PLACE_KEYS if k in payload}
    if "ingested_at" in payload:
        main["seen_at"] = payload["ingested_at"]
    every = [main, *(dict(entry) for entry in payload.get("also_seen") or [])]
    known = next((p for p in every if p.get("source_uri") == place.get("source_uri")), None)
    if known is not None:
        known.update(place)  # the same place with new metadata (an edited sidecar, row or entry)
    else:
        every.append({**place, "seen_at": seen_at})
    # Stable: on equal dates the current main record stays main, then the order already kept.
    first, *others = sorted(every, key=_order)
    updated = {
        k: v
        for k, v in payload.items()
        if k not in PLACE_KEYS and k not in ("ingested_at", "also_seen")
    }
    updated.update({k: first[k] for k in PLACE_KEYS if k in first})
    if "seen_at" in first:
        updated["ingested_at"] = first["seen_at"]
    if others or "also_seen" in payload:
        updated["also_seen"] = others[:MAX_SIGHTINGS]
    return updated


def places(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Every place of one point (main record and also_seen), earliest first, undated last."""
    main = {**payload, "seen_at": payload.get("ingested_at")}
    every = [main, *(payload.get("also_seen") or [])]
    return [
        {
            "published_at": place.get("published_at"),
            "title": place.get("title"),
            "source": place.get("source"),
            "source_uri": place.get("source_uri"),
            "first_seen": place.get("seen_at"),
        }
        for place in sorted(every, key=_order)
    ]


def _order(place: dict[str, Any]) -> tuple[bool, datetime]:
    """Sort key: published date, else first seen; places with neither go last."""
    moment = _moment(place.get("published_at")) or _moment(place.get("seen_at"))
    return moment is None, moment or _LAST


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
