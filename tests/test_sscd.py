"""SSCD descriptor: found where configured, refused with a clear sentence, 512-d unit vectors.

Fetching it on first use is tested against a real HTTP server in tests/test_weights.py.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from embed import model as model_module
from embed import onnx, sscd, weights
from embed.sscd import (
    DIM,
    SSCD_FILE,
    SscdEncoder,
    SscdUnavailable,
    find_sscd_weights,
    load_sscd,
    preprocess,
)
from tests.conftest import OFFLINE_URL, draw_image

# The tests script their own models; TorchScript is deprecated in torch 2.12 but is SSCD's format.
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)


class TinySscd(nn.Module):
    """SSCD's shape in miniature: a conv trunk, GeM pooling (p=3), a projection to 512."""

    def __init__(self, dim: int = DIM) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, kernel_size=3, stride=2, padding=1)
        self.fc = nn.Linear(8, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.conv(x)).clamp(min=1e-6)
        pooled = features.pow(3.0).mean(dim=(2, 3)).pow(1.0 / 3.0)
        return self.fc(pooled)


class ShapeEcho(nn.Module):
    """Writes the height and width of its input into the vector: (h, w, 1, 0, 0, ...)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], 512)
        out[:, 0] = float(x.shape[2])
        out[:, 1] = float(x.shape[3])
        out[:, 2] = 1.0
        return out


def save_scripted(module: nn.Module, path: Path) -> Path:
    """Save `module` as a TorchScript file, the way the SSCD authors ship their models."""
    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(module.eval()).save(str(path))
    return path


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test sees an empty per-process cache and its own empty torch hub folder."""
    monkeypatch.setitem(model_module._cache, SscdEncoder, {})  # type: ignore[misc]
    monkeypatch.setattr(sscd, "_off_logged", set())
    monkeypatch.setattr(weights, "_failed", {})
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))


@pytest.fixture
def tiny_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return save_scripted(TinySscd(), tmp_path / "models" / SSCD_FILE)


# --- where the file comes from -----------------------------------------------------------------


def test_the_file_in_the_torch_hub_cache_is_found_and_loaded(tmp_path: Path) -> None:
    cached = save_scripted(TinySscd(), tmp_path / "hub" / "checkpoints" / SSCD_FILE)
    assert find_sscd_weights("") == cached
    encoder = load_sscd("")
    assert encoder is not None
    assert encoder.label.startswith(f"{SSCD_FILE} sha256:")
    assert len(encoder.label.split("sha256:")[1]) == 12
    assert load_sscd("") is encoder  # built once per process


def test_an_empty_cache_that_cannot_be_filled_turns_the_layer_off_and_says_how_to_enable_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="embed.sscd"):
        assert load_sscd("", base_url=OFFLINE_URL) is None
        assert load_sscd("", base_url=OFFLINE_URL) is None
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1  # said once, not per image
    assert "IMGSEARCH_VERDICT__SSCD_WEIGHTS" in messages[0]
    assert f"{OFFLINE_URL}/{SSCD_FILE}" in messages[0]
    assert str(tmp_path / "hub" / "checkpoints") in messages[0]
    checkpoints = tmp_path / "hub" / "checkpoints"
    assert not (checkpoints / SSCD_FILE).exists()  # nothing was downloaded
    assert list(checkpoints.glob("*.part")) == []


def test_the_default_fetches_from_the_authors_url_with_the_pinned_checksum() -> None:
    assert sscd.SSCD_URL.endswith(f"//dl.fbaipublicfiles.com/sscd-copy-detection/{SSCD_FILE}")
    assert sscd.SSCD_PIN.size == 98_791_638
    assert sscd.SSCD_PIN.sha256 == (
        "9f26bd4c848cc19b73d2ae92eea6e04886f61a7b764ceb7a13aeee62e6a6db56"
    )


def test_off_turns_the_layer_off_even_with_a_cached_file(tmp_path: Path) -> None:
    save_scripted(TinySscd(), tmp_path / "hub" / "checkpoints" / SSCD_FILE)
    assert find_sscd_weights("off", OFFLINE_URL) is None
    assert load_sscd(" OFF ", base_url=OFFLINE_URL) is None


def test_a_configured_path_or_its_folder_is_used(tiny_file: Path) -> None:
    assert find_sscd_weights(str(tiny_file)) == tiny_file
    assert find_sscd_weights(str(tiny_file.parent)) == tiny_file
    encoder = load_sscd(str(tiny_file))
    assert encoder is not None and encoder.path == tiny_file


def test_a_missing_configured_file_is_refused_in_one_sentence(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / SSCD_FILE
    with pytest.raises(SscdUnavailable) as caught:
        load_sscd(str(missing))
    message = str(caught.value)
    assert str(missing) in message
    assert "IMGSEARCH_VERDICT__SSCD_WEIGHTS" in message
    assert "\n" not in message and message.endswith(".") and message.count(". ") == 0


@pytest.mark.parametrize(
    "content",
    [b"not a model at all" * 20, b""],
    ids=["garbage", "empty"],
)
def test_a_corrupt_file_is_refused_in_one_sentence(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / SSCD_FILE
    path.write_bytes(content)
    with pytest.raises(SscdUnavailable, match="not a loadable TorchScript module") as caught:
        SscdEncoder(path)
    assert "\n" not in str(caught.value)


def test_a_state_dict_instead_of_torchscript_is_refused(tmp_path: Path) -> None:
    path = tmp_path / SSCD_FILE
    torch.save(TinySscd().state_dict(), path)
    with pytest.raises(SscdUnavailable, match="not a loadable TorchScript module"):
        SscdEncoder(path)


def test_a_model_with_the_wrong_output_size_is_refused(tmp_path: Path) -> None:
    path = save_scripted(TinySscd(dim=1024), tmp_path / SSCD_FILE)
    with pytest.raises(SscdUnavailable, match=r"\(1, 1024\), not \(1, 512\)"):
        SscdEncoder(path)


def test_a_model_that_fails_on_images_is_refused(tmp_path: Path) -> None:
    grey_only = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    path = save_scripted(grey_only, tmp_path / SSCD_FILE)
    with pytest.raises(SscdUnavailable, match="fails on an image batch"):
        SscdEncoder(path)


# --- what it computes --------------------------------------------------------------------------


def test_descriptors_are_512_d_unit_float32_in_input_order(tiny_file: Path) -> None:
    encoder = SscdEncoder(tiny_file)
    images = [draw_image(seed) for seed in range(4)]
    vectors = encoder.embed(images)
    assert vectors.shape == (4, DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[2], encoder.embed([images[2]])[0], atol=1e-6)
    assert not np.allclose(vectors[0], vectors[1])
    assert encoder.embed([]).shape == (0, DIM)


def test_preprocessing_sets_the_short_side_to_288_and_keeps_the_aspect_ratio() -> None:
    assert tuple(preprocess(draw_image(1, (400, 300))).shape) == (3, 288, 384)
    assert tuple(preprocess(draw_image(1, (300, 600))).shape) == (3, 576, 288)
    assert tuple(preprocess(draw_image(1, (50, 40))).shape) == (3, 288, 360)  # upscaled
    white = preprocess(Image.new("RGB", (300, 300), "white"))
    expected = [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225]  # ImageNet
    np.testing.assert_allclose(white.mean(dim=(1, 2)).numpy(), expected, atol=1e-4)
    grey = preprocess(Image.new("L", (300, 200), 128))
    assert tuple(grey.shape) == (3, 288, 432)


def test_the_model_receives_the_whole_image_uncropped(tmp_path: Path) -> None:
    encoder = SscdEncoder(save_scripted(ShapeEcho(), tmp_path / SSCD_FILE))
    vectors = encoder.embed([draw_image(1, (400, 300)), draw_image(2, (300, 900))])
    # The vector is (h, w, 1) normalised: h and w come back as ratios to the third entry.
    sizes = np.rint(vectors[:, :2] / vectors[:, 2:3]).astype(int).tolist()
    assert sizes == [[288, 384], [864, 288]]


def test_batching_mixed_sizes_gives_the_vectors_of_one_at_a_time(tiny_file: Path) -> None:
    encoder = SscdEncoder(tiny_file, batch_size=2)
    sizes = [(160, 120), (120, 160), (160, 120), (200, 100), (160, 120), (160, 120)]
    images = [draw_image(seed, size) for seed, size in enumerate(sizes)]
    together = encoder.embed(images)
    alone = np.concatenate([encoder.embed([image]) for image in images])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_concurrent_callers_get_the_same_vectors(tiny_file: Path) -> None:
    encoder = SscdEncoder(tiny_file)
    images = [draw_image(seed, (120 + 10 * seed, 100)) for seed in range(3)]
    expected = encoder.embed(images)
    results: list[np.ndarray] = []

    def work() -> None:
        results.append(encoder.embed(images))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    for result in results:
        np.testing.assert_allclose(result, expected, atol=1e-6)


def test_on_the_cpu_onnx_runtime_gives_torch_s_vectors_at_every_aspect_ratio(
    tiny_file: Path,
) -> None:
    exported = SscdEncoder(tiny_file)
    eager = SscdEncoder(tiny_file, runtime="torch")
    assert exported.session.runtime == "onnx" and eager.session.runtime == "torch"
    sizes = [(400, 300), (300, 900), (160, 120), (333, 333)]  # none is a probe's size
    images = [draw_image(seed, size) for seed, size in enumerate(sizes)]
    np.testing.assert_allclose(exported.embed(images), eager.embed(images), atol=1e-5)


def test_a_size_dependent_model_keeps_its_sizes_through_onnx_runtime(tmp_path: Path) -> None:
    encoder = SscdEncoder(save_scripted(ShapeEcho(), tmp_path / SSCD_FILE))
    assert encoder.session.runtime == "onnx"
    vectors = encoder.embed([draw_image(1, (400, 300)), draw_image(2, (300, 900))])
    sizes = np.rint(vectors[:, :2] / vectors[:, 2:3]).astype(int).tolist()
    assert sizes == [[288, 384], [864, 288]]


def test_an_export_that_disagrees_with_torch_is_refused_and_torch_runs_it(
    tiny_file: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(1)
    other = TinySscd().eval()  # other weights: what a wrong export would compute
    real_export = onnx.export

    def wrong_export(model: nn.Module, example: torch.Tensor, **kwargs: bool) -> bytes:
        return real_export(other, example, **kwargs)

    monkeypatch.setattr(onnx, "export", wrong_export)
    with caplog.at_level(logging.WARNING):
        encoder = SscdEncoder(tiny_file)
    assert encoder.session.runtime == "torch"
    assert "differs from torch" in caplog.text and "running it in torch" in caplog.text
    images = [draw_image(seed) for seed in range(3)]
    expected = SscdEncoder(tiny_file, runtime="torch").embed(images)
    np.testing.assert_allclose(encoder.embed(images), expected, atol=1e-6)
