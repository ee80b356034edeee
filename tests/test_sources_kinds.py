"""Every registered source kind through the same checks, against real servers on loopback.

For each kind of config's SourceKind: a minimal declaration parses as settings, `make_source`
builds the class the registry names for it, and that source keeps the contract the pipeline
relies on (discover yields this source's items whose bytes can be fetched; warnings, cancel and
close are callable). A kind added to SourceKind without a class fails here and on import.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from config import SOURCE_KINDS, Settings, SourceSettings
from ingest.items import Source, SourceConfigError, SourceItem
from ingest.sources import (
    SOURCE_CLASSES,
    adhoc_source,
    detect_kind,
    kind_table,
    make_source,
    source_class,
)
from ingest.sources.folder import FolderSource
from ingest.sources.s3 import S3Source
from ingest.sources.web import WebSource
from store.images import make_s3_client
from tests.conftest import image_bytes, make_settings
from tests.feed_server import FeedServer

IMAGE = image_bytes(7)
HTML = '<html><head><title>Harbour</title></head><body><img src="/a.jpg" alt="A"></body></html>'


@pytest.fixture(scope="module")
def server() -> Iterator[FeedServer]:
    """One image, and one document of each web kind that shows it."""
    with FeedServer() as running:
        image = running.add("/a.jpg", IMAGE, "image/jpeg")
        rss = (
            '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>T</title>'
            f"<item><title>A</title><link>{running.url('/story')}</link>"
            f'<enclosure url="{image}" type="image/jpeg" length="1"/></item></channel></rss>'
        )
        running.add("/feed.xml", rss, "application/rss+xml")
        running.add("/rss.xml", rss, "application/rss+xml")
        running.add("/table.csv", f"image_url,title\n{image},A\n", "text/csv")
        running.add("/rows.jsonl", json.dumps({"image_url": image, "title": "A"}) + "\n", None)
        running.add("/page.html", HTML, "text/html")
        yield running


@pytest.fixture
def settings(tmp_path: Path, server: FeedServer, s3_endpoint: str) -> Settings:
    return make_settings(
        tmp_path / "data",
        fetch={"allowed_private_hosts": [server.host_port], "retries": 0},
        s3={"endpoint_url": s3_endpoint, "region": "us-east-1", "addressing_style": "path"},
    )


@pytest.fixture
def location(
    tmp_path: Path, server: FeedServer, settings: Settings, s3_bucket: str
) -> Callable[[str], str]:
    """A place serving one image, for a kind ("auto": a folder)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(IMAGE)
    make_s3_client(settings.s3).put_object(Bucket=s3_bucket, Key="photos/a.jpg", Body=IMAGE)
    places = {
        "auto": str(folder),
        "folder": str(folder),
        "s3": f"s3://{s3_bucket}/photos",
        "feed": server.url("/feed.xml"),
        "rss": server.url("/rss.xml"),
        "csv": server.url("/table.csv"),
        "jsonl": server.url("/rows.jsonl"),
        "html": server.url("/page.html"),
    }
    assert set(places) == set(SOURCE_KINDS), "a new kind needs a place to be checked against"
    return places.__getitem__


# -- the registry -------------------------------------------------------------------------------
def test_every_declarable_kind_has_exactly_one_class_and_every_class_a_distinct_name() -> None:
    assert len(set(SOURCE_KINDS)) == len(SOURCE_KINDS)
    claimed = [kind for cls in SOURCE_CLASSES for kind in cls.kinds]
    assert sorted(claimed) == sorted(set(SOURCE_KINDS) - {"auto"})
    assert len({cls.__name__ for cls in SOURCE_CLASSES}) == len(SOURCE_CLASSES)
    for cls in SOURCE_CLASSES:
        assert issubclass(cls, Source) and cls.kinds
        assert "from_spec" in vars(cls) and "discover" in vars(cls), cls.__name__
        for kind in cls.kinds:
            assert source_class(kind) is cls


def test_the_registry_refuses_a_kind_without_a_class_or_claimed_twice() -> None:
    with pytest.raises(TypeError, match="without a class"):
        kind_table((FolderSource, S3Source))
    with pytest.raises(TypeError, match="'folder'"):
        kind_table((FolderSource, S3Source, WebSource, FolderSource))
    with pytest.raises(SourceConfigError, match="not supported"):
        source_class("auto")


def test_a_kind_outside_source_kind_is_refused_by_the_settings() -> None:
    with pytest.raises(ValidationError, match="kind"):
        Settings.model_validate({"sources": [{"name": "x", "kind": "ftp", "location": "/"}]})


# -- each kind, the same checks ------------------------------------------------------------------
@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_each_kind_parses_builds_and_keeps_the_source_contract(
    kind: str,
    settings: Settings,
    location: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    declared = {"name": f"the-{kind}", "kind": kind, "location": location(kind)}
    monkeypatch.setenv("IMGSEARCH_SOURCES", json.dumps([declared]))  # as a deployment declares
    [spec] = Settings(_env_file=None).sources  # type: ignore[call-arg]
    assert spec == SourceSettings.model_validate(declared)
    assert spec.kind == kind and spec.options == {}

    source = make_source(spec, settings)
    resolved = detect_kind(spec.location) if kind == "auto" else kind
    assert type(source) is source_class(resolved) and resolved in type(source).kinds
    assert source.name == f"the-{kind}"
    try:
        items = list(source.discover())
        assert len(items) == 1 and isinstance(items[0], SourceItem)
        [item] = items
        assert item.source == source.name and item.key and item.version
        assert item.fetch() == IMAGE
        warnings = source.warnings()
        assert all(isinstance(w, str) for w in warnings) and not warnings
        source.cancel()  # declared by every source: callable without effect on a finished one
    finally:
        source.close()
    # A second discovery gives the same identity and version (what incremental runs rely on).
    again = make_source(spec, settings)
    try:
        assert [(i.key, i.version) for i in again.discover()] == [(item.key, item.version)]
    finally:
        again.close()


@pytest.mark.parametrize("kind", ["folder", "s3", "feed"])
def test_a_location_given_on_the_command_line_builds_the_kind_it_looks_like(
    kind: str, settings: Settings, location: Callable[[str], str]
) -> None:
    source = make_source(adhoc_source(location(kind)), settings)
    try:
        assert type(source) is source_class(kind)
        assert len(list(source.discover())) == 1
    finally:
        source.close()


def test_a_source_built_in_code_gets_the_optional_hooks_from_the_base() -> None:
    class One(Source):
        name = "one"

        def discover(self) -> Iterator[SourceItem]:
            yield from ()

    one: Any = One()
    assert (list(one.discover()), one.warnings(), one.cancel(), one.close()) == ([], (), None, None)
    with pytest.raises(SourceConfigError, match="cannot be declared"):
        One.from_spec(SourceSettings(name="one", location="/"), make_settings(Path("data")))
