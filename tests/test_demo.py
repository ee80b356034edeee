"""The demo `make run` builds: real photos from several sources, and doctored copies that show
a verdict, what changed and a timeline, through the commands a newcomer runs (random weights).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from app.cli import main
from app.demo import OUTLETS, PHOTOS, TRY_THESE, UNRELATED, write_demo_catalog
from tests.test_cli import run

# Offline: no CLIP model to fetch (the demo is about copies, not text search).
OFFLINE = {"IMGSEARCH_TEXT__ENABLED": "false"}
KINDS = {  # manipulation -> the region kind what-changed reports
    "paste": "content replaced",
    "text": "text added",
    "inpaint": "content removed or smoothed",
}


def digests(root: Path) -> dict[str, str]:
    """{relative path: SHA-256} of every file under root."""
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The demo written, ingested and each try-these file checked, as `make demo` then a user do."""
    root = tmp_path_factory.mktemp("demo")
    data = root / "data"
    wrote = run(["demo-data", str(root / "demo")], data, **OFFLINE)
    assert wrote.returncode == 0, wrote.stderr
    lines = wrote.stdout.strip().splitlines()
    assert len(lines) == 2 and "try-these" in lines[1], wrote.stdout
    sources = (root / "demo" / "sources.json").read_text()
    ingested = run(["ingest", "--quiet"], data, IMGSEARCH_SOURCES=sources, **OFFLINE)
    assert ingested.returncode == 0, ingested.stderr
    photos, outlets = len(PHOTOS), len(OUTLETS)
    assert ingested.stdout.startswith(f"seen {photos * outlets}, new {photos * 3}, unchanged 0, ")
    uploads = sorted((root / "demo" / "try-these").iterdir())
    done = run(["check", "--json", *map(str, uploads)], data, **OFFLINE)
    assert done.returncode == 0, done.stderr
    return {Path(line["file"]).name: line for line in map(json.loads, done.stdout.splitlines())}


def test_the_demo_is_the_same_bytes_every_time_and_its_uploads_lie_outside_the_catalog(
    tmp_path: Path,
) -> None:
    first = write_demo_catalog(tmp_path / "a")
    second = write_demo_catalog(tmp_path / "b")
    assert digests(first.catalog) == digests(second.catalog)
    assert digests(tmp_path / "a" / "try-these") == digests(tmp_path / "b" / "try-these")
    assert (first.files, first.images) == (len(PHOTOS) * len(OUTLETS), len(PHOTOS) * 3)
    assert all(first.catalog not in path.parents for path in first.try_these)
    declared = json.loads(first.sources.read_text())
    assert [d["name"] for d in declared] == [o.name for o in OUTLETS]
    assert all(Path(d["location"]).parent == first.catalog for d in declared)
    sidecar = json.loads((first.catalog / "daily-paper" / "coffee.json").read_text())
    assert sidecar["published_at"] == "2022-06-02T08:00:00Z"
    assert {"title", "description", "category", "source_uri"} <= set(sidecar)


@pytest.mark.parametrize("doctored", TRY_THESE, ids=lambda d: d.file)
def test_each_doctored_copy_reads_copy_with_what_changed_and_a_timeline(
    checked: dict[str, dict[str, Any]], doctored: Any
) -> None:
    answer = checked[doctored.file]
    assert answer["verdict"] == "copy", answer["evidence"]
    regions = answer["changes"]["regions"]
    assert [r["kind"] for r in regions] == [KINDS[doctored.manipulation]]
    timeline = answer["timeline"]
    assert [place["source"] for place in timeline] == [o.name for o in OUTLETS]  # earliest first
    dates = [place["published_at"] for place in timeline]
    assert dates == sorted(dates)
    photo = next(p for p in PHOTOS if p.name == doctored.photo)
    assert timeline[0]["title"] == photo.title


def test_the_unrelated_photo_is_not_in_the_catalog(checked: dict[str, dict[str, Any]]) -> None:
    answer = checked[UNRELATED[0]]
    assert answer["verdict"] == "none"
    assert answer["changes"] is None and answer["timeline"] == []


def test_without_scikit_image_the_demo_says_so_in_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage now raises ImportError
    assert main(["demo-data", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "scikit-image" in err and "Traceback" not in err
    assert not (tmp_path / "demo").exists()
