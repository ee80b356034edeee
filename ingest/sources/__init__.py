"""Sources: where items come from. Each yields SourceItems; `make_source` builds one by kind.

The kinds are config's SourceKind; SOURCE_CLASSES is the one table of the classes that build
them, each naming its kinds. Adding a kind: its name in SourceKind, its module with a Source
subclass (kinds, from_spec), and the class here. A kind without a class, or claimed twice,
fails on import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from config import SOURCE_KINDS, Settings, SourceKind, SourceSettings
from ingest.items import Source, SourceConfigError
from ingest.sources.folder import FolderSource
from ingest.sources.s3 import S3Source
from ingest.sources.web import WebSource

__all__ = [
    "SOURCE_CLASSES",
    "SourceConfigError",
    "adhoc_source",
    "detect_kind",
    "kind_table",
    "make_source",
    "source_class",
]

SOURCE_CLASSES: tuple[type[Source], ...] = (FolderSource, S3Source, WebSource)


def kind_table(classes: tuple[type[Source], ...]) -> dict[str, type[Source]]:
    """kind -> class; every declarable kind but "auto" exactly once, nothing else."""
    table: dict[str, type[Source]] = {}
    for cls in classes:
        for kind in cls.kinds:
            if kind in table:
                raise TypeError(f"source kind {kind!r}: {table[kind].__name__} and {cls.__name__}")
            table[kind] = cls
    wanted = set(SOURCE_KINDS) - {"auto"}
    if set(table) != wanted:
        missing = sorted(wanted - set(table))
        unknown = sorted(set(table) - wanted)
        raise TypeError(f"source kinds without a class: {missing}; not in SourceKind: {unknown}")
    return table


_BY_KIND = kind_table(SOURCE_CLASSES)


def source_class(kind: str) -> type[Source]:
    """The class that builds a declared kind ("auto" is resolved first by detect_kind)."""
    try:
        return _BY_KIND[kind]
    except KeyError:
        raise SourceConfigError(f"kind {kind!r} is not supported") from None


def make_source(spec: SourceSettings, settings: Settings, *, s3_client: Any = None) -> Source:
    """Build the source a declaration names."""
    if spec.kind == "auto":
        spec = spec.model_copy(update={"kind": detect_kind(spec.location)})
    try:
        cls = source_class(spec.kind)
    except SourceConfigError as exc:
        raise SourceConfigError(f"source {spec.name!r}: {exc}") from None
    return cls.from_spec(spec, settings, s3_client=s3_client)


def detect_kind(location: str) -> SourceKind:
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
