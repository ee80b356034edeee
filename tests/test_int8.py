"""int8 encoders: quantized on the shipped photos, cached on disk, checked against fp32 before
use, and refused (fp32 runs, one log line) for weights that int8 ruins."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.models import resnet50

from config import EmbedSettings
from embed import int8
from embed import model as model_module
from embed.encoder import DIM, RANDOM_SEED, Encoder, plan_for
from embed.int8 import AGREEMENT_BAR, PROBES, SelfCheck, self_check
from embed.onnx import export
from embed.sscd import SSCD_FILE, SscdEncoder

RANDOM = {"weights": "random", "device": "cpu", "batch_size": 8}


def unseen_photos() -> list[Image.Image]:
    """scikit-image photos in neither the calibration nor the probe set."""
    import skimage.data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        left, right, _ = skimage.data.stereo_motorcycle()
        pixels = [left, right, skimage.data.moon(), skimage.data.page(), skimage.data.cell()]
    return [Image.fromarray(p).convert("RGB") for p in pixels]


def unit_rows(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def int8_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One torch cache for the module, so ResNet50 with random weights is quantized once."""
    return tmp_path_factory.mktemp("int8-torch-home")


@pytest.fixture(scope="module")
def int8_encoder(int8_home: Path) -> Encoder:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(int8_home))
        return Encoder(EmbedSettings(precision="int8", **RANDOM))  # type: ignore[arg-type]


# -- the self-check on its own -----------------------------------------------------------------


def collapsed(rng: np.random.Generator, n: int, spread: float) -> np.ndarray:
    """Vectors like random weights give: one common direction plus a small per-photo part."""
    common = rng.normal(size=(1, 64))
    return common + spread * rng.normal(size=(n, 64))


def test_the_self_check_passes_small_noise_even_on_collapsed_vectors() -> None:
    rng = np.random.default_rng(0)
    fp32 = collapsed(rng, 12, 0.03)  # raw cosines ~0.999 between different probes
    noisy = fp32 + 0.002 * rng.normal(size=fp32.shape)
    check = self_check(fp32, noisy)
    assert check.passed and check.agreement > 0.999 and check.neighbours == 1.0
    assert self_check(fp32, fp32) == SelfCheck(pytest.approx(1.0), 1.0, 12)  # type: ignore[arg-type]


def test_the_self_check_fails_vectors_of_other_photos_though_their_cosine_is_high() -> None:
    rng = np.random.default_rng(1)
    fp32 = collapsed(rng, 12, 0.03)
    shuffled = fp32[np.roll(np.arange(12), 1)]  # each probe gets its neighbour's vector
    check = self_check(fp32, shuffled)
    assert check.agreement > AGREEMENT_BAR  # the raw cosine alone would let it through
    assert not check.passed and check.neighbours < 0.5
    assert "nearest neighbour kept for" in check.describe()


def test_the_self_check_fails_a_low_cosine() -> None:
    rng = np.random.default_rng(2)
    fp32 = rng.normal(size=(12, 64))
    check = self_check(fp32, fp32 + 0.5 * rng.normal(size=fp32.shape))
    assert check.agreement < AGREEMENT_BAR and not check.passed


def test_calibration_and_probe_photos_ship_apart_with_their_licences() -> None:
    calibration = {p.name.split("-")[1] for p in PROBES.glob("calibration-*.jpg")}
    probes = {p.name.split("-")[1] for p in PROBES.glob("probe-*.jpg")}
    assert len(calibration) >= 6 and len(probes) >= 6 and not calibration & probes
    readme = (PROBES / "README.md").read_text()
    for name in calibration | probes:
        assert f"`{name}`" in readme, f"{name} has no stated origin and licence"


# -- the cache -----------------------------------------------------------------------------------


def test_the_quantized_graph_is_cached_by_graph_runtime_version_and_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime

    calls: list[bool] = []

    def fake_quantize(graph: bytes, calibration: object, *, reduce_range: bool) -> bytes:
        calls.append(reduce_range)
        return b"int8 of " + graph

    monkeypatch.setattr(int8, "quantize", fake_quantize)

    def graph(source: bytes, reduce_range: bool = False) -> bytes:
        return int8.quantized_graph(
            source, lambda: [], reduce_range=reduce_range, directory=tmp_path
        )

    assert graph(b"one") == graph(b"one") == b"int8 of one"
    assert len(calls) == 1 and len(list(tmp_path.glob("*.onnx"))) == 1
    graph(b"two")
    graph(b"one", reduce_range=True)
    monkeypatch.setattr(onnxruntime, "__version__", "0.0.1")
    graph(b"one")
    assert len(calls) == 4 and not list(tmp_path.glob("*.part"))


# -- ResNet50 -----------------------------------------------------------------------------------


def test_int8_runs_once_it_passed_its_self_check_and_agrees_with_fp32_on_unseen_photos(
    int8_encoder: Encoder, encoder: Encoder
) -> None:
    assert int8_encoder.plan.quantized and int8_encoder.session.runtime == "onnx"
    check = int8_encoder.int8_check
    assert check is not None and check.passed and check.agreement >= AGREEMENT_BAR
    images = unseen_photos()
    quantized, full = int8_encoder.embed(images), encoder.embed(images)
    assert quantized.shape == (len(images), DIM) and quantized.dtype == np.float32
    assert np.min(np.sum(quantized * full, axis=1)) >= AGREEMENT_BAR
    assert not np.allclose(quantized, full, atol=1e-4), "the int8 path computed in fp32"
    # The photos' common direction removed (random weights, see test_encoder's bf16 test):
    # each int8 vector's nearest fp32 vector is its own photo's.
    agreement = unit_rows(quantized - quantized.mean(0)) @ unit_rows(full - full.mean(0)).T
    assert list(np.argmax(agreement, axis=1)) == list(range(len(images)))


def test_a_second_load_reads_the_cached_int8_graph(
    int8_encoder: Encoder, int8_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = list((int8_home / "hub" / "imgsearch-int8").glob("*.onnx"))
    assert len(cached) == 1

    def refuse(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("quantized again although the graph is cached")

    monkeypatch.setattr(int8, "quantize", refuse)
    monkeypatch.setenv("TORCH_HOME", str(int8_home))
    again = Encoder(EmbedSettings(precision="auto", **RANDOM))  # type: ignore[arg-type]
    assert again.plan.quantized
    image = unseen_photos()[:2]
    np.testing.assert_allclose(again.embed(image), int8_encoder.embed(image), atol=1e-6)


def outlier_weights(path: Path) -> nn.Module:
    """Seeded ResNet50 weights with three channels 10^4 times larger after the stem, scaled
    back down in the layer that reads them: the same function in fp32, but int8's one range
    per activation tensor then has no levels left for the other channels."""
    torch.manual_seed(RANDOM_SEED)
    model = resnet50(weights=None).eval()
    with torch.no_grad():
        for channel in (3, 17, 40):
            model.bn1.weight[channel] *= 1e4
            model.bn1.bias[channel] *= 1e4
            model.layer1[0].conv1.weight[:, channel] /= 1e4
            model.layer1[0].downsample[0].weight[:, channel] /= 1e4
    torch.save(model.state_dict(), path)
    model.fc = nn.Identity()
    return model


def test_weights_that_int8_ruins_run_without_it_with_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outliers.pth"
    reference = outlier_weights(path)
    with caplog.at_level(logging.WARNING, logger="embed"):
        encoder = Encoder(EmbedSettings(weights=str(path), device="cpu", precision="auto"))
    lines = [r.getMessage() for r in caplog.records if "self-check" in r.getMessage()]
    # auto runs what it would without int8 on this CPU: bf16 autocast or fp32 (precision
    # int8 falls back to fp32 alike: the same plan_for(int8=False), see test_encoder)
    without = plan_for(EmbedSettings(device="cpu"), int8=False)
    assert len(lines) == 1 and f"running it in {without.describe()}" in lines[0]
    assert encoder.plan == without and not encoder.plan.quantized
    check = encoder.int8_check
    assert check is not None and not check.passed
    images = unseen_photos()[:3]
    with torch.no_grad():
        expected = unit_rows(
            reference(torch.stack([encoder.preprocess(i) for i in images])).numpy()
        )
    got = encoder.embed(images)
    if without.precision == "fp32":
        np.testing.assert_allclose(got, expected, atol=1e-4)
    else:  # bf16 autocast
        assert np.min(np.sum(got * expected, axis=1)) >= 0.999


# -- SSCD ----------------------------------------------------------------------------------------


class SmallSscd(nn.Module):
    """SSCD's shape, small: a few strided convolutions, GeM pooling (p=3), 512-d projection."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.fc = nn.Linear(64, 512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.trunk(x).clamp(min=1e-6)
        return self.fc(features.pow(3.0).mean(dim=(2, 3)).pow(1.0 / 3.0))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_sscd_runs_int8_under_auto_and_fp32_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(model_module._cache, SscdEncoder, {})  # type: ignore[misc]
    torch.manual_seed(0)
    path = tmp_path / SSCD_FILE
    torch.jit.script(SmallSscd().eval()).save(str(path))
    quantized = SscdEncoder(path, precision="auto")
    full = SscdEncoder(path, precision="fp32")
    assert quantized.precision == "int8" and full.precision == "fp32"
    assert quantized.int8_check is not None and quantized.int8_check.passed
    assert full.int8_check is None
    sizes = [(400, 300), (300, 900)]  # other sizes than the probes': the graph keeps them free
    images = [img.resize(size) for img, size in zip(unseen_photos(), sizes, strict=False)]
    got, expected = quantized.embed(images), full.embed(images)
    assert got.shape == (2, 512) and np.min(np.sum(got * expected, axis=1)) >= AGREEMENT_BAR


def test_export_gives_the_graph_that_is_quantized() -> None:
    # The cache key is the exported graph: the same weights export to the same bytes.
    torch.manual_seed(0)
    small = SmallSscd().eval()
    probe = torch.zeros(1, 3, 64, 64)
    assert export(small, probe, any_size=True) == export(small, probe, any_size=True)
