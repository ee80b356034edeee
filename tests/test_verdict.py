"""The copy verdict on real photos: same file, edited copy or none, the evidence, the timeline."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.present import verdict_line
from app.runtime import Runtime
from config import Settings
from embed.decode import decode_image
from ingest.sources.folder import FolderSource
from search.edits import EDITS
from store.keys import point_id
from tests.conftest import make_settings, photo

# Behaviour tests on real photos (the verifier's thresholds were calibrated separately:
# README, "Where the verification defaults come from").
CATALOG = ("coffee", "rocket", "astronaut", "immunohistochemistry")
ELSEWHERE = ("chelsea", "hubble_deep_field")


def jpeg(image: Image.Image, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write(folder: Path, name: str, data: bytes, **sidecar: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.jpg"
    path.write_bytes(data)
    if sidecar:
        path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, Path]]:
    """A catalog of four photos, each with a published date, ingested through the pipeline."""
    root = tmp_path_factory.mktemp("verdict")
    folder = root / "news"
    for i, name in enumerate(CATALOG):
        write(
            folder,
            name,
            jpeg(photo(name)),
            title=f"{name} story",
            published_at=f"2023-0{i + 1}-01T00:00:00Z",
            source_uri=f"https://news.example/{name}",
        )
    settings = make_settings(root / "data", verdict={"sscd_weights": "off"})
    runtime = Runtime(settings)
    report = runtime.pipeline.run([FolderSource("news", folder)])
    assert report.total().new == len(CATALOG)
    yield runtime, folder
    runtime.close()


def check(runtime: Runtime, data: bytes) -> dict[str, object]:
    return runtime.search.search_bytes(data, top_k=4).as_check("query.jpg")


def test_a_catalog_photo_resaved_at_three_quarters_size_is_an_edited_copy(
    catalog: tuple[Runtime, Path],
) -> None:
    runtime, folder = catalog
    original = folder / "coffee.jpg"
    image = Image.open(original).convert("RGB")
    smaller = image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.Resampling.LANCZOS)
    answer = check(runtime, jpeg(smaller, 80))
    assert answer["verdict"] == "copy"
    original_entry = answer["original"]
    assert isinstance(original_entry, dict)
    assert original_entry["id"] == point_id(decode_image(original.read_bytes()).sha256)
    evidence = answer["evidence"]
    assert isinstance(evidence, dict)
    assert evidence["text"].startswith("edited copy: ")
    assert evidence["layers"]["sscd"].startswith("off")


def test_the_same_file_is_exact_and_its_timeline_starts_with_its_publication(
    catalog: tuple[Runtime, Path],
) -> None:
    runtime, folder = catalog
    answer = check(runtime, (folder / "rocket.jpg").read_bytes())
    assert answer["verdict"] == "exact"
    assert answer["evidence"]["text"] == "same file"  # type: ignore[index]
    timeline = answer["timeline"]
    assert isinstance(timeline, list)
    assert timeline[0]["published_at"] == "2023-02-01T00:00:00Z"
    assert timeline[0]["source_uri"] == "https://news.example/rocket"


@pytest.mark.parametrize("edit", ["mirror+caption", "grayscale+brightness", "crop+border+rotate"])
def test_edited_copies_are_recognised(catalog: tuple[Runtime, Path], edit: str) -> None:
    runtime, folder = catalog
    image = Image.open(folder / "astronaut.jpg").convert("RGB")
    answer = check(runtime, EDITS[edit](image, 1))
    assert answer["verdict"] == "copy", answer["evidence"]
    assert answer["original"]["payload"]["title"] == "astronaut story"  # type: ignore[index]


@pytest.mark.parametrize("name", ELSEWHERE)
@pytest.mark.parametrize("edit", ["resize", "crop+border+rotate", "mirror+caption"])
def test_a_photo_that_is_not_in_the_catalog_is_no_copy(
    catalog: tuple[Runtime, Path], name: str, edit: str
) -> None:
    runtime, _ = catalog
    answer = check(runtime, EDITS[edit](photo(name), 2))
    assert answer["verdict"] == "none", answer["evidence"]
    assert answer["original"] is None and answer["timeline"] == []
    assert len(answer["matches"]) == 4  # type: ignore[arg-type]  # similar pictures still listed


def test_a_flat_picture_skips_the_hash_and_says_so(catalog: tuple[Runtime, Path]) -> None:
    runtime, _ = catalog
    answer = check(runtime, jpeg(Image.new("RGB", (300, 200), (40, 90, 200))))
    assert answer["verdict"] == "none"
    assert answer["evidence"]["layers"]["pdq"].startswith("skipped")  # type: ignore[index]


def test_the_timeline_of_a_copy_lists_an_earlier_copy_first(tmp_path: Path) -> None:
    # The wire published a cropped version first; the paper later ran the full photo.
    base = photo("coffee")
    wire = tmp_path / "wire"
    paper = tmp_path / "paper"
    write(
        paper,
        "full",
        jpeg(base),
        title="Paper: coffee",
        published_at="2024-05-01T00:00:00Z",
        source_uri="https://paper.example/coffee",
    )
    write(
        wire,
        "cropped",
        EDITS["crop"](base, 3),
        title="Wire: coffee",
        published_at="2021-01-01T00:00:00Z",
        source_uri="https://wire.example/coffee",
    )
    settings: Settings = make_settings(tmp_path / "data", verdict={"sscd_weights": "off"})
    runtime = Runtime(settings)
    try:
        runtime.pipeline.run([FolderSource("paper", paper), FolderSource("wire", wire)])
        answer = check(runtime, EDITS["resize+caption+recompress"](base, 4))
    finally:
        runtime.close()
    assert answer["verdict"] == "copy"
    timeline = answer["timeline"]
    assert isinstance(timeline, list)
    assert [t["source_uri"] for t in timeline] == [
        "https://wire.example/coffee",
        "https://paper.example/coffee",
    ]
    assert len(answer["copies"]) == 2  # type: ignore[arg-type]


def test_every_point_carries_each_descriptor_and_the_model_that_built_it(
    catalog: tuple[Runtime, Path],
) -> None:
    runtime, _ = catalog
    hits = list(runtime.index.scroll(with_vectors=["image", "pdq", "layout"]))
    assert len(hits) == len(CATALOG)
    for hit in hits:
        assert set(hit.vectors) == {"image", "pdq", "layout"}
        assert set(np.unique(hit.vectors["pdq"])) <= {-1.0, 1.0}
        assert hit.payload["descriptors"]["image"] == "ResNet50 random (seeded)"
    assert runtime.index.recorded_labels()["image"] == "ResNet50 random (seeded)"


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_reindex_backfills_a_new_descriptor_resumably(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from embed import model as model_module
    from embed import sscd as sscd_module
    from ingest.reindex import reindex
    from tests.test_sscd import TinySscd, save_scripted

    folder = tmp_path / "news"
    for name in CATALOG:
        write(folder, name, jpeg(photo(name)))
    runtime = Runtime(make_settings(tmp_path / "data", verdict={"sscd_weights": "off"}))
    try:
        runtime.pipeline.run([FolderSource("news", folder)])
    finally:
        runtime.close()

    # SSCD weights become available: the catalog's points lack the descriptor until reindexed.
    weights = save_scripted(TinySscd(), tmp_path / "models" / "sscd_disc_mixup.torchscript.pt")
    monkeypatch.setitem(model_module._cache, sscd_module.SscdEncoder, {})  # type: ignore[misc]
    runtime = Runtime(make_settings(tmp_path / "data", verdict={"sscd_weights": str(weights)}))
    try:
        descriptors = runtime.descriptors
        assert "sscd" in descriptors
        before = list(runtime.index.scroll(with_vectors=["sscd"]))
        assert all("sscd" not in hit.vectors for hit in before)
        stop_after_first = __import__("threading").Event()
        first = reindex(
            runtime.index,
            runtime.images,
            descriptors,
            ["sscd"],
            batch_size=2,
            stop=stop_after_first,
            progress=lambda n: stop_after_first.set(),
        )
        assert first.updated == 2  # stopped after one batch
        rest = reindex(runtime.index, runtime.images, descriptors, ["sscd"], batch_size=2)
        assert rest.updated == len(CATALOG) - 2 and not rest.failed
        after = list(runtime.index.scroll(with_vectors=["sscd"]))
        assert all(hit.vectors["sscd"].shape == (512,) for hit in after)
        assert all(hit.payload["descriptors"]["sscd"] == descriptors["sscd"].label for hit in after)
        assert reindex(runtime.index, runtime.images, descriptors).updated == 0
        answer = check(runtime, jpeg(photo("rocket")))
        assert answer["evidence"]["layers"]["sscd"] == "ran"  # type: ignore[index]
    finally:
        runtime.close()


def test_eval_copies_reports_recall_per_edit_and_held_out_false_positives(tmp_path: Path) -> None:
    from app.evaluate import evaluate_copies

    folder = tmp_path / "photos"
    for name in ("coffee", "rocket", "chelsea", "astronaut"):
        write(folder, name, jpeg(photo(name)))
    settings = make_settings(tmp_path / "unused", verdict={"sscd_weights": "off"})
    figures = evaluate_copies(settings, folder, edits=["resize", "crop+border+rotate"])
    assert figures["photos"] == 4 and figures["catalog"] == 2 and figures["held_out"] == 2
    for edit in ("resize", "crop+border+rotate"):
        tally = figures["edits"][edit]
        assert tally["queries"] == 2
        assert tally["verdict"] == 2 and tally["wrong"] == 0
        assert tally["layers"]["geometry"] == 2
    assert figures["edits"]["resize"]["layers"]["pdq"] == 2
    assert figures["false_positives"]["queries"] == 4
    assert figures["false_positives"]["verdict"] == 0
    assert not (tmp_path / "unused").exists()  # a throw-away catalog


def test_a_previous_version_catalog_is_migrated_and_reindexed_from_its_originals(
    tmp_path: Path,
) -> None:
    from qdrant_client import QdrantClient, models

    from ingest.reindex import reindex

    folder = tmp_path / "news"
    for name in CATALOG[:2]:
        write(folder, name, jpeg(photo(name)))
    settings = make_settings(tmp_path / "data", verdict={"sscd_weights": "off"})
    runtime = Runtime(settings)
    try:
        runtime.pipeline.run([FolderSource("news", folder)])
        points = list(runtime.index.scroll(with_vectors=["image"]))
    finally:
        runtime.close()
    # Rewrite the catalog as the previous version kept it: one "image" vector, no record.
    client = QdrantClient(path=str(settings.qdrant_path))
    client.delete_collection("images")
    client.create_collection(
        "images",
        vectors_config={"image": models.VectorParams(size=2048, distance=models.Distance.COSINE)},
    )
    client.upsert(
        "images",
        points=[
            models.PointStruct(
                id=p.id,
                vector={"image": p.vectors["image"].tolist()},
                payload={k: v for k, v in p.payload.items() if k != "descriptors"},
            )
            for p in points
        ],
    )
    client.close()

    runtime = Runtime(settings)
    try:
        before = check(runtime, EDITS["mirror"](photo(CATALOG[0]), 0))
        report = reindex(runtime.index, runtime.images, runtime.descriptors)
        assert report.updated == 2 and not report.failed
        hits = list(runtime.index.scroll(with_vectors=["pdq", "layout", "image"]))
        assert all(set(h.vectors) == {"image", "pdq", "layout"} for h in hits)
        after = check(runtime, EDITS["mirror"](photo(CATALOG[0]), 0))
    finally:
        runtime.close()
    assert before["matches"]  # the migrated catalog answers at once (similar images)
    assert after["verdict"] == "copy"
    assert after["evidence"]["layer"] == "pdq"  # type: ignore[index]


def test_a_doctored_copy_says_what_changed_and_where_in_the_upload(
    catalog: tuple[Runtime, Path],
) -> None:
    runtime, folder = catalog
    image = Image.open(folder / "astronaut.jpg").convert("RGB")
    doctored = image.copy()
    doctored.paste(photo("chelsea").resize((120, 100)), (300, 60))  # a face-sized patch
    upload = doctored.resize((410, 410), Image.Resampling.LANCZOS)  # the upload's pixels
    answer = check(runtime, jpeg(upload, 85))
    assert answer["verdict"] == "copy"
    changes = answer["changes"]
    assert isinstance(changes, dict)
    assert changes["against"] == answer["original"]["id"]  # type: ignore[index]
    [region] = changes["regions"]
    x0, y0, x1, y1 = region["box"]
    true = (240, 48, 336, 128)  # the patch, scaled from 512 to 410 pixels
    inter = max(0, min(x1, true[2]) - max(x0, true[0])) * max(
        0, min(y1, true[3]) - max(y0, true[1])
    )
    area = (true[2] - true[0]) * (true[3] - true[1])
    assert inter >= 0.5 * area and (x1 - x0) * (y1 - y0) - inter <= 1.5 * area
    assert "resized" in changes["global"]
    result = runtime.search.search_bytes(jpeg(upload, 85), top_k=4)
    line = verdict_line(result.verdict, result.changes)
    assert "a region of" in line and "changed" in line


def test_a_resaved_copy_reports_no_changed_region(catalog: tuple[Runtime, Path]) -> None:
    runtime, folder = catalog
    image = Image.open(folder / "rocket.jpg").convert("RGB")
    answer = check(runtime, jpeg(image.resize((image.width * 4 // 5, image.height * 4 // 5)), 75))
    assert answer["verdict"] == "copy"
    changes = answer["changes"]
    assert isinstance(changes, dict) and changes["regions"] == []
    same = check(runtime, (folder / "rocket.jpg").read_bytes())
    assert same["verdict"] == "exact" and same["changes"] is None
