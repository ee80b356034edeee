"""ResNet50 image encoder: the 2048-d pooled feature, L2-normalised float32."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.models import ResNet50_Weights, resnet50

from config import EmbedSettings

log = logging.getLogger(__name__)

DIM = 2048
RANDOM_SEED = 20240611
IMAGENET = ResNet50_Weights.DEFAULT


class WeightsUnavailable(RuntimeError):
    """The configured weights cannot be loaded; the message tells the user what to do."""


class Encoder:
    """Embeds batches of RGB images; build once per process (see `load_encoder`)."""

    dim = DIM

    def __init__(self, settings: EmbedSettings) -> None:
        self.settings = settings
        self.device = _pick_device(settings.device)
        if settings.threads:
            torch.set_num_threads(settings.threads)
        model, label = _build_model(settings.weights)
        self.weights_label = label
        self.is_random = settings.weights == "random"
        # Preprocessing comes from the weights' own recipe (resize, crop, normalise).
        self.transform = IMAGENET.transforms()
        model.eval()
        if self.device.type == "cpu":
            # channels_last is ~25% faster for ResNet convolutions on CPU
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.model = model.to(self.device)
        self._lock = threading.Lock()
        if self.is_random:
            log.warning(
                "RANDOM ENCODER WEIGHTS: embeddings are deterministic but meaningless; "
                "similarity scores say nothing about the images (tests and offline demos only)"
            )
        log.info("encoder ready: ResNet50 (%s) on %s", label, self.device)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Turn one RGB image into the model's input tensor (safe to call from worker threads)."""
        tensor: torch.Tensor = self.transform(image)
        return tensor

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed RGB images into an (n, 2048) float32 array of unit vectors."""
        return self.embed_tensors([self.preprocess(image) for image in images])

    def embed_tensors(self, tensors: Sequence[torch.Tensor]) -> np.ndarray:
        """Embed preprocessed tensors in batches of `batch_size`."""
        if not tensors:
            return np.zeros((0, DIM), dtype=np.float32)
        out: list[np.ndarray] = []
        size = self.settings.batch_size
        with self._lock, torch.inference_mode():
            for start in range(0, len(tensors), size):
                batch = torch.stack(list(tensors[start : start + size])).to(self.device)
                if self.device.type == "cpu":
                    batch = batch.contiguous(memory_format=torch.channels_last)
                features = self.model(batch).float()
                features = nn.functional.normalize(features, dim=1)
                out.append(features.cpu().numpy().astype(np.float32, copy=False))
        return np.concatenate(out, axis=0)


_cache: dict[tuple[str, str, int], Encoder] = {}
_cache_lock = threading.Lock()


def load_encoder(settings: EmbedSettings) -> Encoder:
    """Return this process's encoder for these settings, building it on first use."""
    key = (settings.weights, settings.device, settings.batch_size)
    with _cache_lock:
        if key not in _cache:
            _cache[key] = Encoder(settings)
        return _cache[key]


def _pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise WeightsUnavailable(
            "IMGSEARCH_EMBED__DEVICE=cuda but no CUDA device is available; use auto or cpu."
        )
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _headless(model: nn.Module) -> nn.Module:
    model.fc = nn.Identity()  # keep the 2048-d pooled feature
    return model


def _build_model(weights: str) -> tuple[nn.Module, str]:
    if weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            return _headless(resnet50(weights=None)), "random (seeded)"
    if weights == "imagenet":
        return _build_imagenet()
    return _from_file(Path(weights))


def _build_imagenet() -> tuple[nn.Module, str]:
    model = resnet50(weights=None)
    filename = Path(IMAGENET.url).name
    cache_dir = Path(torch.hub.get_dir()) / "checkpoints"
    try:
        state = IMAGENET.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError
        raise WeightsUnavailable(
            f"ResNet50 ImageNet weights could not be loaded or downloaded ({exc}): expected "
            f"{filename} in {cache_dir}; put the file there, or set "
            "IMGSEARCH_EMBED__WEIGHTS=/path/to/file.pth"
        ) from exc
    model.load_state_dict(state)
    return _headless(model), f"imagenet ({IMAGENET.name})"


def _from_file(path: Path) -> tuple[nn.Module, str]:
    if not path.is_file():
        raise WeightsUnavailable(
            f"weights file {path} does not exist; set IMGSEARCH_EMBED__WEIGHTS to imagenet, "
            "random, or the path of a ResNet50 state-dict file"
        )
    try:
        loaded: Any = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError) as exc:
        raise WeightsUnavailable(
            f"weights file {path} is not a readable state dict: {exc}"
        ) from exc
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise WeightsUnavailable(f"weights file {path} does not hold a state dict")
    state = {
        key.removeprefix("module."): value
        for key, value in loaded.items()
        if not key.removeprefix("module.").startswith("fc.")
    }
    model = _headless(resnet50(weights=None))
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        problems = (result.missing_keys + result.unexpected_keys)[:3]
        raise WeightsUnavailable(
            f"weights file {path} does not fit ResNet50 (e.g. keys {', '.join(problems)})"
        )
    return model, f"file {path.name}"
