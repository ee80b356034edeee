"""Sources: where items come from. Each yields SourceItems; `make_source` builds one by kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from config import Settings, SourceSettings
from ingest.items import Source
from ingest.sources.folder import FolderSource
from ingest.sources.s3 import S3Source
from ingest.sources.web import WebSource
from store.images import make_s3_client, parse_s3_url


class SourceConfigError(ValueError):
    """A declared or ad-hoc source cannot be built; the message says why."""


def make_source(spec: SourceSettings, settings: Settings, *, s3_client: Any = None) -> Source:
    """Build the source a declaration names."""
    kind: str = spec.kind
    if kind == "auto":
        kind = detect_kind(spec.location)
    if kind == "folder":
        return FolderSource(spec.name, Path(spec.location))
    if kind == "s3":
        return _s3_source(spec, settings, s3_client)
    if kind in ("feed", "rss", "csv", "jsonl", "html"):
        if not spec.location.startswith(("http://", "https://")):
            raise SourceConfigError(f"source {spec.name!r}: {kind} needs an http(s) URL")
        try:
            return WebSource(
                spec.name,
                spec.location,
                settings.fetch,
                kind=None if kind == "feed" else kind,  # "feed": decided from the content
                options=spec.options,
            )
        except (TypeError, ValueError) as exc:
            raise SourceConfigError(f"source {spec.name!r}: {exc}") from exc
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


def _s3_source(spec: SourceSettings, settings: Settings, s3_client: Any) -> S3Source:
    try:
        bucket, prefix = parse_s3_url(spec.location)
    except ValueError as exc:
        raise SourceConfigError(f"source {spec.name!r}: {exc}") from exc
    page_size = spec.options.get("max_keys") or spec.options.get("page_size")
    try:
        page_size = int(page_size) if page_size else None
    except (TypeError, ValueError) as exc:
        raise SourceConfigError(f"source {spec.name!r}: max_keys must be a number") from exc
    return S3Source(
        spec.name,
        s3_client or make_s3_client(settings.s3),
        bucket,
        prefix,
        max_bytes=settings.fetch.max_bytes,
        page_size=page_size,
    )
