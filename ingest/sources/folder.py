"""Folder source: image files under a path (recursive), with optional NAME.json sidecars."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Self

from config import Settings, SourceKind, SourceSettings
from ingest.dates import to_iso
from ingest.items import FetchError, ItemMeta, Source, SourceItem

log = logging.getLogger(__name__)
SIDECAR_FIELDS = ("title", "description", "source_uri", "published_at", "category")


class FolderSource(Source):
    """Files under a folder (or one file); an item changes when its size or mtime does."""

    kinds: ClassVar[tuple[SourceKind, ...]] = ("folder",)

    def __init__(self, name: str, root: Path | str) -> None:
        self.name = name
        self.root = Path(root).expanduser()

    @classmethod
    def from_spec(cls, spec: SourceSettings, settings: Settings, *, s3_client: Any = None) -> Self:
        """The folder (or file) the declaration's location names."""
        return cls(spec.name, Path(spec.location))

    def discover(self) -> Iterator[SourceItem]:
        """Yield every candidate file; a missing root is a listing error."""
        if not self.root.exists():
            raise FetchError(f"{self.root} does not exist", retryable=False)
        if self.root.is_file():
            yield self._item(self.root, self.root.name)
            return
        for path in sorted(self.root.rglob("*")):
            relative = path.relative_to(self.root)
            if any(part.startswith(".") for part in relative.parts) or not path.is_file():
                continue
            if path.suffix.lower() == ".json":  # sidecar metadata, not an image
                continue
            yield self._item(path, relative.as_posix())

    def _item(self, path: Path, key: str) -> SourceItem:
        stat = path.stat()
        meta = read_sidecar(path)
        version = f"{stat.st_size}:{stat.st_mtime_ns}"
        sidecar = sidecar_path(path)
        if sidecar is not None:  # an edited caption is a change too
            version += f":{sidecar.stat().st_mtime_ns}"
        return SourceItem(
            source=self.name,
            key=key,
            version=version,
            meta=ItemMeta(
                source_uri=meta.get("source_uri") or path.resolve().as_uri(),
                title=meta.get("title"),
                description=meta.get("description"),
                category=meta.get("category"),
                published_at=to_iso(meta.get("published_at")),
            ),
            fetch=path.read_bytes,
        )


def sidecar_path(path: Path) -> Path | None:
    """The `NAME.json` (or `NAME.ext.json`) beside an image, if there is one."""
    for candidate in (path.with_suffix(".json"), path.with_name(path.name + ".json")):
        if candidate.is_file():
            return candidate
    return None


def read_sidecar(path: Path) -> dict[str, Any]:
    """Metadata from the image's sidecar; {} when absent or unreadable."""
    candidate = sidecar_path(path)
    if candidate is None:
        return {}
    try:
        data = json.loads(candidate.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable sidecar %s: %s", candidate, exc)
        return {}
    if not isinstance(data, dict):
        log.warning("ignoring sidecar %s: not a JSON object", candidate)
        return {}
    return {k: str(data[k]) for k in SIDECAR_FIELDS if data.get(k) not in (None, "")}
