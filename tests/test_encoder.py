"""Encoder: 2048-d unit vectors, deterministic, batch-invariant, loads weight files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models import resnet50

from config import EmbedSettings
from embed.encoder import DIM, Encoder, WeightsUnavailable
from tests.conftest import draw_image


def test_embeddings_are_2048_d_unit_float32(encoder: Encoder) -> None:
    vectors = encoder.embed([draw_image(i) for i in range(3)])
    assert vectors.shape == (3, DIM)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_random_weights_are_deterministic_across_builds(encoder: Encoder) -> None:
    again = Encoder(EmbedSettings(weights="random", batch_size=8, device="cpu"))
    image = draw_image(7)
    np.testing.assert_allclose(encoder.embed([image]), again.embed([image]), atol=1e-5)
    assert again.is_random


def test_batch_equals_one_by_one(encoder: Encoder) -> None:
    images = [draw_image(i, (100 + 10 * i, 90)) for i in range(10)]  # > batch_size of 8
    together = encoder.embed(images)
    alone = np.concatenate([encoder.embed([image]) for image in images])
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_different_images_get_different_vectors(encoder: Encoder) -> None:
    a, b = encoder.embed([draw_image(1), draw_image(2)])
    assert not np.allclose(a, b)


def test_weights_load_from_a_state_dict_file(tmp_path: Path) -> None:
    torch.manual_seed(1234)
    model = resnet50(weights=None).eval()
    path = tmp_path / "weights.pth"
    # Saved the way training code often does: wrapped, with a module. prefix and the classifier.
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    encoder = Encoder(EmbedSettings(weights=str(path), device="cpu"))
    assert not encoder.is_random
    image = draw_image(3)
    model.fc = torch.nn.Identity()
    with torch.inference_mode():
        expected = model(encoder.preprocess(image).unsqueeze(0))
    expected = torch.nn.functional.normalize(expected, dim=1).numpy()
    np.testing.assert_allclose(encoder.embed([image]), expected, atol=1e-4)


def test_a_state_dict_that_does_not_fit_resnet50_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(WeightsUnavailable, match="does not fit ResNet50"):
        Encoder(EmbedSettings(weights=str(path), device="cpu"))


def test_a_missing_weights_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailable, match="IMGSEARCH_EMBED__WEIGHTS"):
        Encoder(EmbedSettings(weights=str(tmp_path / "nope.pth"), device="cpu"))


def test_imagenet_without_network_fails_fast_naming_file_cache_and_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An empty torch cache and no network (as on these machines): the download cannot happen.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    with pytest.raises(WeightsUnavailable) as caught:
        Encoder(EmbedSettings(weights="imagenet", device="cpu"))
    message = str(caught.value)
    assert "resnet50-11ad3fa6.pth" in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in message
    assert "IMGSEARCH_EMBED__WEIGHTS=/path/to/file.pth" in message
