"""Ingest a folder, re-ingest it, find each image first, and keep every place it was seen."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.runtime import Runtime
from config import Settings
from embed.encoder import Encoder
from ingest.pipeline import Pipeline
from ingest.sightings import MAX_SIGHTINGS, places
from ingest.sources.folder import FolderSource
from ingest.state import StateStore
from search.catalog import Catalog
from search.service import SearchService
from store.images import LocalImageStore
from tests.conftest import image_bytes, make_descriptors, make_settings, open_catalog


def make_folder(root: Path, n: int = 12) -> Path:
    (root / "nested" / "deeper").mkdir(parents=True)
    for i in range(n):
        folder = root if i % 3 == 0 else root / "nested" if i % 3 == 1 else root / "nested/deeper"
        fmt = ["JPEG", "PNG", "WEBP"][i % 3]
        (folder / f"img{i:02d}.{fmt.lower()}").write_bytes(image_bytes(i, fmt))
    (root / "img00.json").write_text(
        json.dumps(
            {
                "title": "Harbour at dawn",
                "published_at": "Tue, 02 Jan 2024 10:00:00 GMT",
                "source_uri": "https://news.example/harbour",
            }
        )
    )
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (root / "empty.png").write_bytes(b"")
    return root


def make_pipeline(settings: Settings, encoder: Encoder, tmp_path: Path) -> Pipeline:
    return Pipeline(
        settings,
        open_catalog(":memory:", settings),
        LocalImageStore(tmp_path / "images"),
        make_descriptors(settings, encoder),
        StateStore(tmp_path / "state.sqlite", backoff_s=0),
    )


@pytest.fixture
def pipeline(settings: Settings, encoder: Encoder, tmp_path: Path) -> Pipeline:
    return make_pipeline(settings, encoder, tmp_path)


def copies(folder: Path, seed: int, sidecars: dict[str, dict[str, str] | None]) -> FolderSource:
    """A folder source holding the same image under each name, with the given sidecars."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, sidecar in sidecars.items():
        (folder / f"{name}.jpg").write_bytes(image_bytes(seed))
        if sidecar is not None:
            (folder / f"{name}.json").write_text(json.dumps(sidecar))
    return FolderSource(folder.name, folder)


def only_point(pipeline: Pipeline) -> dict[str, Any]:
    [hit] = list(pipeline.index.scroll())
    return hit.payload


def test_ingest_then_reingest_adds_nothing_and_bad_files_are_reported(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    folder = make_folder(tmp_path / "photos")
    failures: list[str] = []
    first = pipeline.run(
        [FolderSource("photos", folder)],
        on_failure=lambda f: failures.append(f"{f.item.key}: {f.reason}"),
    )
    total = first.total()
    assert (total.seen, total.new, total.failed) == (14, 12, 2)
    assert sorted(f.split(":")[0] for f in failures) == ["broken.jpg", "empty.png"]
    assert pipeline.index.count() == 12
    second = pipeline.run([FolderSource("photos", folder)]).total()
    assert (second.new, second.unchanged, second.duplicate) == (0, 12, 0)
    assert pipeline.index.count() == 12


def test_same_image_under_two_names_is_one_point(pipeline: Pipeline, tmp_path: Path) -> None:
    folder = tmp_path / "dupes"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (folder / name).write_bytes(image_bytes(42))
    total = pipeline.run([FolderSource("dupes", folder)]).total()
    assert (total.new, total.duplicate) == (1, 2)
    assert pipeline.index.count() == 1
    other = tmp_path / "other"
    other.mkdir()
    (other / "copy.jpg").write_bytes(image_bytes(42))
    (other / "copy.json").write_text(
        '{"title": "Republished", "source_uri": "https://b.example/x"}'
    )
    assert pipeline.run([FolderSource("other", other)]).total().duplicate == 1
    # Every other place the image appeared is kept on its one point, once each.
    pipeline.run([FolderSource("other", other)])
    [hit] = list(pipeline.index.scroll())
    seen = hit.payload["also_seen"]
    assert sorted(s["source_uri"].rsplit("/", 1)[-1] for s in seen) == ["b.jpg", "c.jpg", "x"]
    assert next(s for s in seen if s["source"] == "other")["title"] == "Republished"


def test_each_image_finds_itself_first_with_the_exact_verdict(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    folder = make_folder(tmp_path / "photos", n=9)
    pipeline.run([FolderSource("photos", folder)])
    search = SearchService(pipeline.index, pipeline.images, pipeline.descriptors)
    catalog = Catalog(pipeline.index, pipeline.images)
    for path in sorted(folder.rglob("img*.*")):
        if path.suffix == ".json":
            continue
        result = search.search_bytes(path.read_bytes(), top_k=5)
        assert result.in_catalog, path
        assert result.matches[0].exact
        assert result.matches[0].score >= 0.999
        assert result.matches[0].payload["sha256"] == result.query_sha256
        assert catalog.thumbnail(result.matches[0].payload)[:2] == b"\xff\xd8"
        assert catalog.original(result.matches[0].payload) == path.read_bytes()


def test_payload_has_metadata_from_the_sidecar(pipeline: Pipeline, tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "photos", n=3)
    pipeline.run([FolderSource("photos", folder)])
    result = SearchService(pipeline.index, pipeline.images, pipeline.descriptors).search_bytes(
        (folder / "img00.jpeg").read_bytes()
    )
    payload = result.exact_match.payload if result.exact_match else {}
    assert payload["title"] == "Harbour at dawn"
    assert payload["published_at"] == "2024-01-02T10:00:00Z"
    assert payload["source_uri"] == "https://news.example/harbour"
    for key in (
        "sha256",
        "image_key",
        "thumbnail_key",
        "width",
        "height",
        "format",
        "bytes",
        "source",
        "ingested_at",
    ):
        assert key in payload
    assert (payload["width"], payload["height"], payload["format"]) == (160, 120, "JPEG")


def test_an_edited_sidecar_updates_the_payload(pipeline: Pipeline, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(image_bytes(77))
    (folder / "a.json").write_text('{"title": "First caption"}')
    pipeline.run([FolderSource("photos", folder)])
    (folder / "a.json").write_text('{"title": "Corrected caption"}')
    assert pipeline.run([FolderSource("photos", folder)]).total().duplicate == 1
    [hit] = list(pipeline.index.scroll())
    assert hit.payload["title"] == "Corrected caption"
    assert "also_seen" not in hit.payload


def test_an_unknown_image_is_not_in_the_catalog(pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.run([FolderSource("photos", make_folder(tmp_path / "photos", n=3))])
    result = SearchService(pipeline.index, pipeline.images, pipeline.descriptors).search_bytes(
        image_bytes(999)
    )
    assert not result.in_catalog
    assert not any(m.exact for m in result.matches)


def test_a_failed_item_is_retried_after_it_is_fixed(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "later.jpg").write_bytes(b"garbage")
    runtime = Runtime(settings)
    try:
        source = FolderSource("photos", folder)
        assert runtime.pipeline.run([source]).total().failed == 1
        assert [e.key for e in runtime.state.quarantine_list()] == ["later.jpg"]
        (folder / "later.jpg").write_bytes(image_bytes(5))
        second = runtime.pipeline.run([source]).total()
        assert (second.new, second.retried) == (1, 1)
        assert runtime.state.quarantine_list() == []
    finally:
        runtime.close()


# -- where an image was seen --------------------------------------------------------------------
def test_the_same_image_in_a_later_batch_of_one_run_keeps_every_place(
    encoder: Encoder, tmp_path: Path
) -> None:
    # One image per batch: the copies are fetched before the first one's point lands.
    pipeline = make_pipeline(
        make_settings(tmp_path / "data", embed={"batch_size": 1}), encoder, tmp_path
    )
    source = copies(
        tmp_path / "wire",
        7,
        {
            f"copy{i}": {"title": f"Copy {i}", "source_uri": f"https://news.example/{i}"}
            for i in range(4)
        },
    )
    total = pipeline.run([source]).total()
    assert (total.new, total.duplicate) == (1, 3)
    assert pipeline.state.pending() == []
    assert sorted(p["source_uri"] for p in places(only_point(pipeline))) == [
        f"https://news.example/{i}" for i in range(4)
    ]
    assert pipeline.run([source]).total().unchanged == 4


def test_the_earliest_published_place_becomes_the_main_record(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    archive = copies(tmp_path / "archive", 8, {"scan": None})  # no date: first seen now
    late = copies(
        tmp_path / "late",
        8,
        {
            "x": {
                "title": "Republished",
                "description": "A later caption",
                "category": "culture",
                "published_at": "2024-05-01T00:00:00Z",
                "source_uri": "https://b.example/late",
            }
        },
    )
    early = copies(
        tmp_path / "early",
        8,
        {
            "x": {
                "title": "First published",
                "published_at": "2020-01-01T09:00:00Z",
                "source_uri": "https://a.example/first",
            }
        },
    )
    pipeline.run([archive])
    archived = only_point(pipeline)
    pipeline.run([late])
    assert only_point(pipeline)["source_uri"] == "https://b.example/late"
    pipeline.run([early])

    payload = only_point(pipeline)
    assert (payload["title"], payload["published_at"], payload["source"]) == (
        "First published",
        "2020-01-01T09:00:00Z",
        "early",
    )
    # Nothing of the places it replaced lingers on the main record.
    assert "description" not in payload and "category" not in payload
    assert payload["sha256"] == archived["sha256"]
    assert payload["image_key"] == archived["image_key"]
    late_place, archive_place = payload["also_seen"]
    assert (late_place["source_uri"], late_place["description"]) == (
        "https://b.example/late",
        "A later caption",
    )
    assert archive_place["source_uri"] == archived["source_uri"]
    assert archive_place["seen_at"] == archived["ingested_at"]
    assert all(place["seen_at"] for place in payload["also_seen"])
    timeline = places(payload)
    assert [p["source"] for p in timeline] == ["early", "late", "archive"]
    assert timeline[2] == {
        "published_at": None,
        "title": None,
        "source": "archive",
        "source_uri": archived["source_uri"],
        "first_seen": archived["ingested_at"],
    }


def test_also_seen_keeps_the_earliest_places_earliest_first(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    # Listed latest first, so keeping the last arrivals would keep the wrong ones.
    years = list(range(2060, 2060 - MAX_SIGHTINGS - 5, -1))
    source = copies(
        tmp_path / "many",
        9,
        {
            f"c{i:02d}": {
                "published_at": f"{year}-01-01",
                "source_uri": f"https://x.example/{year}",
            }
            for i, year in enumerate(years)
        },
    )
    pipeline.run([source])
    payload = only_point(pipeline)
    earliest = sorted(years)
    assert payload["published_at"] == f"{earliest[0]}-01-01T00:00:00Z"
    assert [p["published_at"][:4] for p in payload["also_seen"]] == [
        str(year) for year in earliest[1 : MAX_SIGHTINGS + 1]
    ]


def test_places_put_undated_places_last() -> None:
    payload = {
        "source_uri": "https://a.example/main",
        "source": "a",
        "ingested_at": "2024-03-01T00:00:00Z",
        "also_seen": [
            {"source_uri": "https://b.example/undated"},
            {"source_uri": "https://c.example/old", "published_at": "2001-01-01T00:00:00Z"},
            {"source_uri": "https://d.example/seen", "seen_at": "2023-01-01T00:00:00Z"},
        ],
    }
    assert [p["source_uri"].split("/")[2] for p in places(payload)] == [
        "c.example",
        "d.example",
        "a.example",
        "b.example",
    ]


def test_a_run_ended_by_an_unexpected_error_is_recorded_as_failed_with_the_reason(
    pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(prepared: object) -> object:
        raise RuntimeError("the model ran out of memory")

    monkeypatch.setattr(pipeline.descriptors, "compute", explode)
    with pytest.raises(RuntimeError, match="out of memory"):
        pipeline.run([FolderSource("photos", make_folder(tmp_path / "photos"))])
    (run,) = pipeline.state.runs(5)
    assert run.status == "failed"
    assert run.report.error == "RuntimeError: the model ran out of memory"
    assert run.finished_at is not None
