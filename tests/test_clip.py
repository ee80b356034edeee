"""Text search's CLIP descriptor: loaded from a folder or the cache, computed at ingest, backfilled.

The tests build a tiny CLIP (random weights, a small config, a tokenizer made from a few words)
and save it with save_pretrained, the way a user provides a real model offline. Fetching a hub
model on first use is tested against a real HTTP server in tests/test_weights.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from app.cli import main
from app.runtime import Runtime
from config import Settings
from embed import model as model_module
from embed.clip import ClipEncoder, declared_dim, load_clip, resolve_model
from embed.decode import decode_image
from embed.descriptors import CLIP, TextSearchUnavailable, build_descriptors
from embed.encoder import Encoder
from ingest.sources.folder import FolderSource
from tests.conftest import draw_image, image_bytes, make_settings

WORDS = ("a", "photo", "of", "the", "red", "blue", "car", "cat", "dog", "running", "hills")
DIM = 512  # ViT-B/32's projection size, so a catalog made before the model is the same shape
ROOT = Path(__file__).resolve().parents[1]


def tiny_tokenizer() -> Any:
    """A CLIP BPE tokenizer whose vocabulary is the letters a-z and WORDS (merged left to right)."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for letter in "abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(letter, len(vocab))
        vocab.setdefault(f"{letter}</w>", len(vocab))
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        merged = word[0]
        for i, letter in enumerate(word[1:], start=1):
            piece = letter + ("</w>" if i == len(word) - 1 else "")
            if (merged, piece) not in merges:
                merges.append((merged, piece))
            merged += piece
            vocab.setdefault(merged, len(vocab))
    # The tokenizers library takes merges as pairs (the annotation says strings).
    return CLIPTokenizer(vocab=vocab, merges=merges)  # type: ignore[arg-type]


def save_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A random-weight CLIP (one-layer 32-px ViT, one-layer text tower) saved to folder."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = tiny_tokenizer()
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={
            "image_size": 32,
            "patch_size": 8,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
        },
        projection_dim=DIM,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=tokenizer,
    )
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny CLIP's folder, built once per session (never written to by tests)."""
    return save_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip")


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test loads its models afresh (the per-process cache is emptied)."""
    monkeypatch.setitem(model_module._cache, ClipEncoder, {})  # type: ignore[misc]


def text_settings(data_dir: Path, model: Path | str, **overrides: Any) -> Settings:
    return make_settings(
        data_dir,
        text={"enabled": True, "model": str(model)},
        verdict={"sscd_weights": "off"},
        **overrides,
    )


def write_folder(folder: Path, seeds: range) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        path = folder / f"img-{seed:03d}.jpg"
        path.write_bytes(image_bytes(seed))
        paths.append(path)
    return paths


# --- where the model comes from ----------------------------------------------------------------


def test_a_saved_folder_loads_and_gives_unit_vectors_of_its_projection_size(
    tiny_clip: Path,
) -> None:
    encoder = ClipEncoder(tiny_clip)
    images = [draw_image(seed, (120 + 20 * seed, 90)) for seed in range(3)]
    vectors = encoder.embed(images)
    assert vectors.shape == (3, DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    text = encoder.embed_text("a red car")
    assert text.shape == (DIM,) and text.dtype == np.float32
    assert np.linalg.norm(text) == pytest.approx(1.0, abs=1e-5)
    assert not np.allclose(text, encoder.embed_text("the blue dog"))
    assert encoder.label.startswith(f"CLIP ViT patch8 {DIM}-d sha256:")


def test_the_label_follows_the_weights_not_the_folder_name(tiny_clip: Path, tmp_path: Path) -> None:
    moved = Path(shutil.copytree(tiny_clip, tmp_path / "elsewhere"))
    other = save_tiny_clip(tmp_path / "other-seed", seed=1)
    assert ClipEncoder(moved).label == ClipEncoder(tiny_clip).label
    assert ClipEncoder(other).label != ClipEncoder(tiny_clip).label


def test_batches_give_the_vectors_of_one_image_at_a_time(tiny_clip: Path) -> None:
    encoder = ClipEncoder(tiny_clip, batch_size=2)
    images = [draw_image(seed, (100, 60 + 30 * seed)) for seed in range(5)]
    together = encoder.embed(images)
    alone = np.concatenate([encoder.embed([image]) for image in images])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_a_grey_image_is_embedded_as_rgb(tiny_clip: Path) -> None:
    encoder = ClipEncoder(tiny_clip)
    grey = draw_image(3).convert("L")
    np.testing.assert_allclose(
        encoder.embed([grey]), encoder.embed([grey.convert("RGB")]), atol=1e-6
    )


def test_long_texts_are_cut_to_the_models_length(tiny_clip: Path) -> None:
    encoder = ClipEncoder(tiny_clip)
    vector = encoder.embed_text(" ".join(["dog"] * 100))
    assert vector.shape == (DIM,) and np.isfinite(vector).all()


def test_a_hub_id_is_read_from_the_local_cache_only(tiny_clip: Path, tmp_path: Path) -> None:
    # The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<commit>/...}.
    cache = tmp_path / "hub"
    repo = cache / "models--tiny--clip"
    shutil.copytree(tiny_clip, repo / "snapshots" / "0123abc")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    assert resolve_model("tiny/clip", cache) == repo / "snapshots" / "0123abc"
    encoder = load_clip(
        make_settings(tmp_path / "d", text={"enabled": True, "model": "tiny/clip"}).text,
        cache_dir=cache,
    )
    assert encoder is not None and encoder.dim == DIM


def test_a_hub_id_missing_from_the_cache_is_one_sentence_saying_how_to_provide_it(
    tmp_path: Path,
) -> None:
    with pytest.raises(TextSearchUnavailable) as caught:
        resolve_model("openai/clip-vit-base-patch32", tmp_path / "empty-cache")
    message = str(caught.value)
    assert "openai/clip-vit-base-patch32" in message and "local Hugging Face cache" in message
    assert "IMGSEARCH_TEXT__MODEL" in message and "save_pretrained" in message
    assert "\n" not in message


@pytest.mark.parametrize("setting", ["/no/such/folder", "not a hub id", " "])
def test_a_bad_model_setting_is_refused_in_one_sentence(setting: str, tmp_path: Path) -> None:
    with pytest.raises(TextSearchUnavailable, match="IMGSEARCH_TEXT__MODEL") as caught:
        resolve_model(setting, tmp_path / "cache")
    assert "\n" not in str(caught.value)


def test_a_folder_without_a_clip_model_is_refused_in_one_sentence(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TextSearchUnavailable, match=r"no readable config\.json"):
        ClipEncoder(empty)
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(TextSearchUnavailable, match="is a bert, not a CLIP model"):
        ClipEncoder(other)


def test_a_folder_with_a_config_but_no_weights_is_refused_in_one_sentence(
    tiny_clip: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(tiny_clip / "config.json", broken / "config.json")
    with pytest.raises(TextSearchUnavailable, match="cannot be loaded") as caught:
        ClipEncoder(broken)
    assert "IMGSEARCH_TEXT__MODEL" in str(caught.value)


def test_text_search_off_loads_nothing_and_declares_no_clip_vector(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    assert settings.text.enabled is False
    assert load_clip(settings.text) is None
    assert declared_dim(settings.text) is None


# --- the descriptor registry -------------------------------------------------------------------


def test_without_a_text_model_encode_text_says_how_to_enable_it(
    tmp_path: Path, encoder: Encoder
) -> None:
    descriptors = build_descriptors(make_settings(tmp_path / "data"), encoder)
    assert not descriptors.has_text and CLIP not in descriptors
    with pytest.raises(TextSearchUnavailable) as caught:
        descriptors.encode_text("a red car")
    message = str(caught.value)
    assert message.startswith("Text search is off: set IMGSEARCH_TEXT__ENABLED=true")
    assert "IMGSEARCH_TEXT__MODEL" in message and "save_pretrained" in message


def test_with_a_text_model_the_registry_has_clip_and_encodes_text(
    tmp_path: Path, tiny_clip: Path, encoder: Encoder
) -> None:
    settings = text_settings(tmp_path / "data", tiny_clip)
    model = load_clip(settings.text)
    assert model is not None
    descriptors = build_descriptors(settings, encoder, clip=model)
    assert descriptors.has_text and CLIP in descriptors
    assert descriptors[CLIP].label == model.label
    assert {s.name: s.size for s in descriptors.declared}[CLIP] == DIM
    vector = descriptors.encode_text("  a red car ")
    np.testing.assert_allclose(vector, model.embed_text("a red car"), atol=1e-6)
    with pytest.raises(ValueError, match="empty"):
        descriptors.encode_text("   ")


# --- ingest and reindex ------------------------------------------------------------------------


def test_ingest_computes_the_clip_vector_and_text_queries_find_images(
    tmp_path: Path, tiny_clip: Path
) -> None:
    paths = write_folder(tmp_path / "news", range(5))
    runtime = Runtime(text_settings(tmp_path / "data", tiny_clip))
    try:
        report = runtime.pipeline.run([FolderSource("news", tmp_path / "news")])
        assert report.total().new == 5
        label = runtime.descriptors[CLIP].label
        hits = list(runtime.index.scroll(with_vectors=[CLIP]))
        assert len(hits) == 5
        model = runtime.clip
        assert model is not None
        for hit in hits:
            assert hit.payload["descriptors"][CLIP] == label
            path = next(p for p in paths if hit.payload["source_uri"].endswith(p.name))
            expected = model.embed([decode_image(path.read_bytes()).image])[0]
            np.testing.assert_allclose(hit.vectors[CLIP], expected, atol=1e-5)
        assert runtime.index.recorded_labels()[CLIP] == label
        found = runtime.index.query(
            runtime.descriptors.encode_text("a photo of a cat"), using=CLIP, top_k=3
        )
        assert len(found) == 3
    finally:
        runtime.close()


def test_reindex_backfills_clip_vectors_after_text_search_is_enabled(
    tmp_path: Path,
    tiny_clip: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_folder(tmp_path / "news", range(4))
    data = tmp_path / "data"
    runtime = Runtime(make_settings(data, verdict={"sscd_weights": "off"}))
    try:
        runtime.pipeline.run([FolderSource("news", tmp_path / "news")])
        assert "clip" not in runtime.descriptors
    finally:
        runtime.close()

    # The user turns text search on and backfills the catalog from its stored originals.
    for key, value in {
        "IMGSEARCH_DATA_DIR": str(data),
        "IMGSEARCH_EMBED__WEIGHTS": "random",
        "IMGSEARCH_EMBED__DEVICE": "cpu",
        "IMGSEARCH_VERDICT__SSCD_WEIGHTS": "off",
        "IMGSEARCH_TEXT__ENABLED": "true",
        "IMGSEARCH_TEXT__MODEL": str(tiny_clip),
        "IMGSEARCH_LOG_LEVEL": "WARNING",
    }.items():
        monkeypatch.setenv(key, value)
    assert main(["reindex", "--descriptor", "clip"]) == 0
    assert "reindex: checked 4, updated 4, failed 0" in capsys.readouterr().out
    assert main(["reindex", "--descriptor", "clip"]) == 0
    assert "checked 0, updated 0" in capsys.readouterr().out  # resumable: nothing left to do

    runtime = Runtime(text_settings(data, tiny_clip))
    try:
        hits = list(runtime.index.scroll(with_vectors=[CLIP, "image"]))
        label = runtime.descriptors[CLIP].label
    finally:
        runtime.close()
    assert len(hits) == 4
    for hit in hits:
        assert hit.vectors[CLIP].shape == (DIM,) and "image" in hit.vectors
        assert hit.payload["descriptors"][CLIP] == label


def test_a_missing_model_stops_the_cli_with_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IMGSEARCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IMGSEARCH_EMBED__WEIGHTS", "random")
    monkeypatch.setenv("IMGSEARCH_TEXT__ENABLED", "true")
    monkeypatch.setenv("IMGSEARCH_TEXT__MODEL", str(tmp_path / "no-model-here"))
    assert main(["reindex", "--descriptor", "clip"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("The CLIP model")
    assert "IMGSEARCH_TEXT__MODEL" in err[-1] and err[-1].endswith(".")


def test_without_text_search_the_command_exits_non_zero_with_one_sentence(tmp_path: Path) -> None:
    """A real child process: the user sees one sentence and no traceback."""
    folder = tmp_path / "labelled"
    write_folder(folder / "cars", range(2))
    (folder / "queries.tsv").write_text("a red car\tcars\n")
    env = {
        "PATH": str(Path(sys.executable).parent),
        "IMGSEARCH_DATA_DIR": str(tmp_path / "data"),
        "IMGSEARCH_EMBED__WEIGHTS": "random",
        "IMGSEARCH_EMBED__PRECISION": "fp32",  # int8 has its own tests (test_int8.py)
        "IMGSEARCH_TEXT__ENABLED": "false",
        "IMGSEARCH_VERDICT__SSCD_WEIGHTS": "off",
        "IMGSEARCH_LOG_LEVEL": "WARNING",
    }
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "eval", "text", str(folder / "queries.tsv")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("Text search is off: set IMGSEARCH_TEXT__ENABLED=true")
    )
