"""Sources: where items come from. Each yields SourceItems; `make_source` builds one by kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from config import Settings, SourceSettings
from ingest.items import Source
from ingest.sources.folder import FolderSource


class SourceConfigError(ValueError):
    """A declared or ad-hoc source cannot be built; the message says why."""


def make_source(spec: SourceSettings, settings: Settings, *, s3_client: Any = None) -> Source:
    """Build the source a declaration names."""
    kind = spec.kind
    if kind == "auto":
        kind = detect_kind(spec.location)
    if kind == "folder":
        return FolderSource(spec.name, Path(spec.location))
    raise SourceConfigError(f"source {spec.name!r}: kind {kind!r} is not supported")


def detect_kind(location: str) -> str:
    """folder for paths, s3 for s3:// URLs, feed for http(s) URLs (refined from content later)."""
    if location.startswith("s3://"):
        return "s3"
    if location.startswith(("http://", "https://")):
        return "feed"
    return "folder"


def adhoc_source(location: str) -> SourceSettings:
    """A source declaration for a path or URL given on the command line."""
    kind = detect_kind(location)
    if kind == "folder":
        location = str(Path(location).expanduser().resolve())
    return SourceSettings(name=location, kind="auto", location=location)
