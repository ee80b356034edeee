"""`imgsearch eval labels` and `eval text`: the printed figures follow from the printed rankings.

The metrics are recomputed here from each query's ranking with a separate, literal reading of
the definitions (README "Evaluating search"), R counted from the folder itself.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.cli import main
from embed import clip as clip_module
from embed import model as model_module
from tests.conftest import photo
from tests.test_clip import save_tiny_clip

PHOTOS = ("coffee", "rocket", "chelsea", "astronaut")


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def variants(image: Image.Image) -> list[bytes]:
    """Three versions of one photo: resized, recompressed, slightly cropped."""
    w, h = image.size
    small = image.resize((w * 3 // 4, h * 3 // 4))
    return [
        jpeg(small),
        jpeg(small, quality=40),
        jpeg(small.crop((w // 40, h // 40, w * 3 // 4 - w // 40, h * 3 // 4 - h // 40))),
    ]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four classes of three versions of a photo, a class of one, a loose distractor, a note."""
    root = tmp_path_factory.mktemp("labelled")
    for name in PHOTOS:
        (root / name).mkdir()
        for i, data in enumerate(variants(photo(name))):
            (root / name / f"{name}-{i}.jpg").write_bytes(data)
    (root / "solo").mkdir()
    (root / "solo" / "camera.jpg").write_bytes(jpeg(photo("camera")))
    (root / "distractor.jpg").write_bytes(jpeg(photo("hubble_deep_field")))
    (root / "coffee" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's settings: random weights, no SSCD, a data dir the evaluation must not touch."""
    monkeypatch.setitem(model_module._cache, clip_module.ClipEncoder, {})  # type: ignore[misc]
    data = tmp_path / "my-catalog"
    for key, value in {
        "IMGSEARCH_DATA_DIR": str(data),
        "IMGSEARCH_EMBED__WEIGHTS": "random",
        "IMGSEARCH_EMBED__DEVICE": "cpu",
        "IMGSEARCH_EMBED__BATCH_SIZE": "8",
        "IMGSEARCH_VERDICT__SSCD_WEIGHTS": "off",
        "IMGSEARCH_LOG_LEVEL": "WARNING",
    }.items():
        monkeypatch.setenv(key, value)
    return data


def enable_text(monkeypatch: pytest.MonkeyPatch, model: Path) -> None:
    monkeypatch.setenv("IMGSEARCH_TEXT__ENABLED", "true")
    monkeypatch.setenv("IMGSEARCH_TEXT__MODEL", str(model))


def run_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    figures: dict[str, Any] = json.loads(out[-1])
    return figures


def recompute(rankings: list[tuple[list[bool], int]], k: int) -> dict[str, float]:
    """The definitions, read literally, over queries with at least one relevant image."""
    rows = [(rels, r) for rels, r in rankings if r > 0]
    figures: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        figures.setdefault(name, []).append(value)

    for rels, r in rows:
        rel = [bool(x) for x in rels[:k]] + [False] * (k - len(rels[:k]))
        for c in sorted({1, 5, k}):
            if c <= k:
                add(f"p@{c}", sum(rel[:c]) / c)
        add(f"r@{k}", sum(rel) / r)
        precision_at_i = [sum(rel[:i]) / i for i in range(1, k + 1)]
        add(f"map@{k}", sum(p for p, x in zip(precision_at_i, rel, strict=True) if x) / min(r, k))
        dcg = sum(1 / math.log2(i + 1) for i in range(1, k + 1) if rel[i - 1])
        ideal = sum(1 / math.log2(i + 1) for i in range(1, min(r, k) + 1))
        add(f"ndcg@{k}", dcg / ideal)
    return {name: sum(values) / len(values) for name, values in figures.items()}


def images_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))


# --- eval labels -------------------------------------------------------------------------------


def test_eval_labels_json_figures_match_the_definitions_on_its_own_rankings(
    labelled: Path, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = run_json(["eval", "labels", str(labelled), "--k", "5", "--json"], capsys)
    assert figures["k"] == 5
    assert set(figures["metrics"]) == {"p@1", "p@5", "r@5", "map@5", "ndcg@5"}
    images = images_under(labelled)
    classed = [p for p in images if "/" in p]
    # Every labelled image is a query once; the loose distractor never is.
    assert sorted(q["query"] for q in figures["queries"]) == classed
    judged = []
    for entry in figures["queries"]:
        query, ranked = entry["query"], entry["ranked"]
        assert query not in ranked  # never against itself
        assert len(ranked) == 5 and len(set(ranked)) == 5
        assert set(ranked) <= set(images)
        cls = query.split("/")[0]
        others = [p for p in classed if p.split("/")[0] == cls and p != query]
        judged.append(([p.split("/")[0] == cls and "/" in p for p in ranked], len(others)))
    expected = recompute(judged, 5)
    assert figures["metrics"] == pytest.approx(expected, abs=1e-9)
    assert figures["without_relevant"] == 1  # solo/camera.jpg has no other image of its class
    assert figures["failed"] == [] and figures["images"] == len(images)
    assert not cli_env.exists()  # the user's catalog is untouched: a throw-away one was used


def test_versions_of_one_photo_find_each_other_first(
    labelled: Path, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Near-identical versions are each other's nearest images even with random weights; what a
    # model is worth on different pictures of one subject needs real weights (README).
    figures = run_json(["eval", "labels", str(labelled), "--k", "2", "--json"], capsys)
    assert figures["metrics"]["p@1"] == 1.0
    assert figures["metrics"]["r@2"] == 1.0
    assert figures["metrics"]["map@2"] == 1.0 and figures["metrics"]["ndcg@2"] == 1.0


def test_eval_labels_prints_a_table_for_people(
    labelled: Path, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", "labels", str(labelled)]) == 0
    out = capsys.readouterr().out
    assert "13 queries, 14 images in the catalog, ranked by image (ResNet50 random" in out
    assert "1 queries have no relevant image" in out
    metric_line = out.strip().splitlines()[-1]
    for name in ("P@1", "P@5", "P@10", "R@10", "mAP@10", "nDCG@10"):
        assert f"{name} " in metric_line


def test_a_folder_without_classes_is_refused_in_one_sentence(
    tmp_path: Path, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.jpg").write_bytes(jpeg(photo("coffee")))
    assert main(["eval", "labels", str(flat)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"{flat} has no class subfolder with 2 or more images: put the images of each class in a "
        "subfolder of their own."
    )
    assert main(["eval", "labels", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip() == f"{tmp_path / 'missing'} is not a folder."


def test_clip_ranking_without_text_search_is_one_sentence(
    labelled: Path, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", "labels", str(labelled), "--descriptor", "clip"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Text search is off")


def test_eval_labels_ranks_by_clip_image_vectors(
    labelled: Path,
    cli_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    enable_text(monkeypatch, save_tiny_clip(tmp_path / "tiny-clip"))
    figures = run_json(
        ["eval", "labels", str(labelled), "--descriptor", "clip", "--k", "3", "--json"], capsys
    )
    assert figures["descriptor"] == "clip" and figures["model"].startswith("CLIP ViT patch8")
    classed = [p for p in images_under(labelled) if "/" in p]
    judged = []
    for entry in figures["queries"]:
        cls = entry["query"].split("/")[0]
        assert entry["query"] not in entry["ranked"] and len(entry["ranked"]) == 3
        others = sum(p.split("/")[0] == cls for p in classed) - 1
        judged.append(([p.startswith(f"{cls}/") for p in entry["ranked"]], others))
    assert figures["metrics"] == pytest.approx(recompute(judged, 3), abs=1e-9)


# --- eval text ---------------------------------------------------------------------------------


def test_eval_text_figures_match_the_definitions_on_its_own_rankings(
    labelled: Path,
    cli_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    enable_text(monkeypatch, save_tiny_clip(tmp_path / "tiny-clip"))
    queries = tmp_path / "queries.tsv"
    queries.write_text(
        "# text<TAB>relevant\n"
        "a cat\tchelsea\n"
        "a red car\trocket/rocket-0.jpg\n"
        "a red car\tcoffee\n"
        "\n"
        "the hills\tsolo\n"
    )
    figures = run_json(
        ["eval", "text", str(queries), "--dir", str(labelled), "--k", "3", "--json"], capsys
    )
    relevant = {
        "a cat": {f"chelsea/chelsea-{i}.jpg" for i in range(3)},
        "a red car": {"rocket/rocket-0.jpg"} | {f"coffee/coffee-{i}.jpg" for i in range(3)},
        "the hills": {"solo/camera.jpg"},
    }
    assert [q["query"] for q in figures["queries"]] == list(relevant)
    judged = []
    for entry in figures["queries"]:
        assert len(entry["ranked"]) == 3 and set(entry["ranked"]) <= set(images_under(labelled))
        rel = relevant[entry["query"]]
        judged.append(([p in rel for p in entry["ranked"]], len(rel)))
    # "a red car" has 4 relevant images: AP@3 and nDCG@3 are normalised by min(R, k) = 3.
    assert figures["metrics"] == pytest.approx(recompute(judged, 3), abs=1e-9)
    assert set(figures["metrics"]) == {"p@1", "p@3", "r@3", "map@3", "ndcg@3"}


def test_eval_text_reads_paths_relative_to_the_files_folder_by_default(
    labelled: Path,
    cli_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    enable_text(monkeypatch, save_tiny_clip(tmp_path / "tiny-clip"))
    folder = tmp_path / "set"
    (folder / "cars").mkdir(parents=True)
    (folder / "cars" / "a.jpg").write_bytes(jpeg(photo("rocket")))
    (folder / "cats").mkdir()
    (folder / "cats" / "b.jpg").write_bytes(jpeg(photo("chelsea")))
    (folder / "queries.tsv").write_text("a cat\tcats\n")
    figures = run_json(["eval", "text", str(folder / "queries.tsv"), "--json"], capsys)
    assert figures["images"] == 2
    (entry,) = figures["queries"]
    assert sorted(entry["ranked"]) == ["cars/a.jpg", "cats/b.jpg"]
    expected = 1.0 if entry["ranked"][0] == "cats/b.jpg" else 0.0
    assert figures["metrics"]["p@1"] == expected


@pytest.mark.parametrize(
    ("content", "sentence"),
    [
        ("a cat chelsea\n", "line 1 of {file} is not `query<TAB>relevant path or category`."),
        ("\n\ta cat\tchelsea\n", "line 2 of {file} is not `query<TAB>relevant path or category`."),
        ("a cat\tzebras\n", "line 1 of {file}: zebras is neither an image nor a class subfolder"),
        ("# only a comment\n", "{file} has no `query<TAB>relevant path or category` line."),
    ],
)
def test_a_bad_query_file_is_refused_in_one_sentence(
    labelled: Path,
    cli_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    content: str,
    sentence: str,
) -> None:
    monkeypatch.setenv("IMGSEARCH_TEXT__ENABLED", "true")  # the file is read before any model
    file = tmp_path / "queries.tsv"
    file.write_text(content)
    assert main(["eval", "text", str(file), "--dir", str(labelled)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(sentence.format(file=file)) and "\n" not in err
