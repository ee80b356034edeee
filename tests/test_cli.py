"""The `imgsearch` command as a user runs it: ingest, search --json, the lock sentence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import OFFLINE_URL, image_bytes, make_settings, open_catalog

IMGSEARCH = [sys.executable, "-m", "app.cli"]
ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IMGSEARCH_")}
    environ.update(
        IMGSEARCH_DATA_DIR=str(data_dir),
        IMGSEARCH_EMBED__WEIGHTS="random",
        IMGSEARCH_EMBED__BATCH_SIZE="4",
        IMGSEARCH_EMBED__PRECISION="fp32",  # int8 has its own tests (test_int8.py)
        IMGSEARCH_VERDICT__SSCD_BASE_URL=OFFLINE_URL,
        IMGSEARCH_TEXT__BASE_URL=OFFLINE_URL,
        IMGSEARCH_LOG_LEVEL="WARNING",
        **env,
    )
    return subprocess.run(
        [*IMGSEARCH, *args], capture_output=True, text=True, env=environ, cwd=ROOT, timeout=300
    )


def test_ingest_and_search_json_end_to_end(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):
        (photos / f"p{i}.jpg").write_bytes(image_bytes(100 + i))
    (photos / "bad.jpg").write_bytes(b"nope")
    data = tmp_path / "data"

    first = run(["ingest", str(photos)], data)
    assert first.returncode == 0, first.stderr
    assert "seen 7, new 6" in first.stdout and "failed 1" in first.stdout
    assert "bad.jpg" in first.stderr and "not an image" in first.stderr
    assert "Traceback" not in first.stderr

    again = run(["ingest", str(photos)], data)
    assert "new 0" in again.stdout and "unchanged 6" in again.stdout

    found = run(["search", str(photos / "p3.jpg"), "--json", "--top-k", "3"], data)
    assert found.returncode == 0, found.stderr
    results = json.loads(found.stdout)
    assert len(results) == 3
    assert {"id", "score", "payload"} <= set(results[0])
    assert results[0]["payload"]["source_uri"].endswith("p3.jpg")
    assert results[0]["score"] >= 0.999 and results[0]["exact"] is True
    assert "is in the catalog" in found.stderr

    text = run(["search", str(photos / "p3.jpg")], data)
    assert "Published before: the same file is in the catalog" in text.stdout

    catalog = run(["catalog", "--json"], data)
    lines = [json.loads(line) for line in catalog.stdout.splitlines()]
    assert len(lines) == 6 and all({"id", "payload"} <= set(x) for x in lines)


def test_searching_with_a_broken_file_is_one_sentence(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    result = run(["search", str(bad)], tmp_path / "data")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("That file is not a usable image")
    assert "Traceback" not in result.stderr


def test_a_held_embedded_index_gives_one_sentence_and_what_to_do(tmp_path: Path) -> None:
    data = tmp_path / "data"
    holder = open_catalog(data / "qdrant", make_settings(data))
    try:
        result = run(["count"], data)
    finally:
        holder.close()
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert "is held by process" in last and str(os.getpid()) in last
    assert "IMGSEARCH_QDRANT__URL" in last
    assert "Traceback" not in result.stderr


def test_demo_data_drawings_writes_groups_with_sidecars(tmp_path: Path) -> None:
    args = ["demo-data", str(tmp_path / "demo"), "--drawings", "--per-group", "2"]
    result = run(args, tmp_path / "data")
    assert result.returncode == 0, result.stderr
    images = sorted((tmp_path / "demo").rglob("*.jpg"))
    assert len(images) == 16
    sidecar = json.loads(images[0].with_suffix(".json").read_text())
    assert {"title", "published_at", "source_uri"} <= set(sidecar)


def test_check_answers_each_image_as_one_json_line_and_a_bad_file_does_not_stop_it(
    tmp_path: Path,
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        (photos / f"p{i}.png").write_bytes(image_bytes(200 + i, fmt="PNG", size=(320, 240)))
    data = tmp_path / "data"
    assert run(["ingest", str(photos)], data).returncode == 0
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 nope")
    done = run(
        [
            "check",
            "--json",
            str(photos / "p1.png"),
            str(tmp_path / "broken.jpg"),
            str(tmp_path / "missing.jpg"),
        ],
        data,
    )
    assert done.returncode == 1  # some files could not be checked
    assert "Traceback" not in done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["file"] for line in lines] == [
        str(photos / "p1.png"),
        str(tmp_path / "broken.jpg"),
        str(tmp_path / "missing.jpg"),
    ]
    first = lines[0]
    assert first["verdict"] == "exact"
    assert first["original"]["payload"]["source_uri"].endswith("p1.png")
    assert first["evidence"]["text"] == "same file"
    assert set(first["timeline"][0]) >= {"published_at", "title", "source", "source_uri", "sha256"}
    assert first["matches"] and "score" in first["matches"][0]
    assert "not a usable image" in lines[1]["error"]
    assert "Cannot read the file" in lines[2]["error"]

    text = run(["check", str(photos / "p2.png")], data)
    assert text.returncode == 0
    assert "Published before: the same file is in the catalog (same file)" in text.stdout
