"""Backfill or rebuild descriptors of catalog points from their stored originals, resumably;
and read the own metadata of points ingested before it was read (`backfill_metadata`).

Each point records in its payload which model built each of its descriptors
(`descriptors: {name: label}`). A point is due when a target descriptor's label differs from
the one this process computes (missing, or made by another model). Each batch writes its vectors
and then its labels, so a run stopped at any moment resumes where it left off.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from embed.decode import DecodeError, decode_image
from embed.descriptors import IMAGE, Descriptors
from embed.metadata import MetadataReader
from store.images import ImageStore, StoreError
from store.index import Hit, VectorIndex

log = logging.getLogger(__name__)


@dataclass
class ReindexReport:
    """What a reindex run did."""

    checked: int = 0
    updated: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        """One line for people."""
        return f"checked {self.checked}, updated {self.updated}, failed {len(self.failed)}"


def point_labels(hit: Hit, recorded: dict[str, str]) -> dict[str, str]:
    """The models that built a point's descriptors (schema-1 points: the recorded image model)."""
    labels = hit.payload.get("descriptors")
    if isinstance(labels, dict):
        return {str(k): str(v) for k, v in labels.items()}
    return {IMAGE: recorded[IMAGE]} if IMAGE in recorded else {}


def due(index: VectorIndex, descriptors: Descriptors, targets: Sequence[str]) -> Iterator[Hit]:
    """Points whose target descriptors were not built by this process's models."""
    recorded = index.recorded_labels()
    for hit in index.scroll():
        labels = point_labels(hit, recorded)
        if any(labels.get(name) != descriptors[name].label for name in targets):
            yield hit


def reindex(
    index: VectorIndex,
    images: ImageStore,
    descriptors: Descriptors,
    targets: Sequence[str] | None = None,
    *,
    batch_size: int = 16,
    workers: int = 4,
    stop: threading.Event | None = None,
    progress: Callable[[int], object] | None = None,
) -> ReindexReport:
    """Compute the target descriptors (default: all) of every point that lacks this model's."""
    names = list(targets) if targets else [d.name for d in descriptors]
    unknown = [n for n in names if n not in descriptors]
    if unknown:
        raise ValueError(
            f"cannot compute {', '.join(unknown)} here (computed: "
            f"{', '.join(d.name for d in descriptors)})"
        )
    report = ReindexReport()
    recorded = index.recorded_labels()
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="reindex") as pool:
        for chunk in _chunks(due(index, descriptors, names), batch_size):
            if stop is not None and stop.is_set():
                break
            report.checked += len(chunk)
            prepared = list(pool.map(lambda hit: _prepare(hit, images, descriptors, names), chunk))
            ok = [(hit, p) for hit, p in zip(chunk, prepared, strict=True) if isinstance(p, dict)]
            for hit, p in zip(chunk, prepared, strict=True):
                if isinstance(p, str):
                    report.failed.append({"id": hit.id, "reason": p})
                    log.warning("reindex: %s: %s", hit.id, p)
            vectors = descriptors.compute([p for _, p in ok])
            index.update_vectors({hit.id: v for (hit, _), v in zip(ok, vectors, strict=True) if v})
            for hit, _ in ok:
                labels = {**point_labels(hit, recorded), **{n: descriptors[n].label for n in names}}
                index.set_payload(hit.id, {"descriptors": labels})
            report.updated += len(ok)
            if progress:
                progress(len(chunk))
    return report


def backfill_metadata(
    index: VectorIndex,
    images: ImageStore,
    reader: MetadataReader,
    *,
    stop: threading.Event | None = None,
    progress: Callable[[int], object] | None = None,
) -> ReindexReport:
    """Read the own metadata of every point ingested before it was read (no `metadata` key)."""
    report = ReindexReport()
    if not reader.settings.enabled:
        return report
    for hit in index.scroll(where=None):
        if "metadata" in hit.payload:
            continue
        if stop is not None and stop.is_set():
            break
        report.checked += 1
        key = hit.payload.get("image_key")
        try:
            data = images.get(str(key)) if key else None
        except StoreError as exc:
            data = None
            log.warning("metadata of %s: the stored original cannot be read: %s", hit.id, exc)
        if data is None:
            report.failed.append({"id": hit.id, "reason": "the stored original cannot be read"})
            continue
        kind = str(hit.payload.get("content_type") or "image/jpeg")
        index.set_payload(hit.id, {"metadata": reader.read(data, kind).as_dict()})
        report.updated += 1
        if progress:
            progress(1)
    return report


def _chunks(hits: Iterator[Hit], size: int) -> Iterator[list[Hit]]:
    chunk: list[Hit] = []
    for hit in hits:
        chunk.append(hit)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _prepare(
    hit: Hit, images: ImageStore, descriptors: Descriptors, names: Sequence[str]
) -> dict[str, Any] | str:
    key = hit.payload.get("image_key")
    if not key:
        return "the point has no stored original"
    try:
        image = decode_image(images.get(str(key))).image
    except (StoreError, DecodeError) as exc:
        return f"the stored original cannot be read: {exc}"
    return descriptors.prepare(image, only=names)
