"""What the three networks (ResNet50, SSCD, CLIP) share: identity, device, session, one cache.

A `Model` is loaded once per process (`cached`) and then turns preprocessed (3, H, W) tensors
into L2-normalised float32 rows. Each subclass builds its network and says how one batch runs
through it: its `session`, either torch on the chosen device or the same network compiled by
ONNX Runtime (embed/onnx.py), which gives the same vectors faster on CPUs without native bf16.
Its `label` names the network and its weights; the catalog records it per vector and refuses
vectors of another model. A model that cannot be loaded raises `ModelUnavailable` (or one of its
subclasses), whose message is one sentence saying what to do.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from typing import ClassVar, Protocol, TypeVar

import numpy as np
import torch
from PIL import Image
from torch import nn

from embed.int8 import Int8Model, SelfCheck
from embed.onnx import OnnxModel


class ModelUnavailable(RuntimeError):
    """A model cannot be loaded or run here; the message is one sentence saying what to do."""


def first_sentence(exc: BaseException) -> str:
    """The first sentence of an exception's message (its type's name when it has none)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.split(". ")[0].rstrip(".")


def pick_device(
    device: torch.device | str,
    refusal: ModelUnavailable,
    *,
    cuda_available: bool | None = None,
) -> torch.device:
    """The device a model runs on: "auto" is CUDA when there is one, else the CPU; asking for
    CUDA where there is none raises `refusal` (the model's own sentence)."""
    cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    if str(device) == "auto":
        return torch.device("cuda" if cuda else "cpu")
    picked = torch.device(device)
    if picked.type == "cuda" and not cuda:
        raise refusal
    return picked


class ModelSession(Protocol):
    """How one batch runs: (n, 3, H, W) float32 on the CPU -> (n, dim) raw features."""

    runtime: str  # "torch" or "onnx"

    def __call__(self, batch: torch.Tensor) -> torch.Tensor: ...


class TorchSession:
    """The network in torch on its device."""

    runtime = "torch"

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], device: torch.device):
        self._forward = forward
        self._device = device

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self._forward(batch.to(self._device)).float()


class OnnxSession:
    """The network compiled by ONNX Runtime (CPU, fp32 or the checked int8 model)."""

    runtime = "onnx"

    def __init__(self, compiled: OnnxModel | Int8Model) -> None:
        self._compiled = compiled

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._compiled(batch.numpy()))


class Model(ABC):
    """One loaded network; build it through its loader (one per process, see `cached`)."""

    kind: ClassVar[str]  # the network, in log lines: "ResNet50", "SSCD", "CLIP"
    dim: int  # the size of its vectors
    label: str  # the network and its weights, recorded in the catalog with each vector
    device: torch.device
    batch_size: int
    session: ModelSession
    # The int8 self-check's figures where an int8 model was tried (embed/int8.py), passed or not.
    int8_check: SelfCheck | None = None

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @abstractmethod
    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """One image as the network's (3, H, W) input (safe to call from worker threads)."""

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Images as an (n, dim) float32 array of unit vectors, in input order."""
        return self.embed_tensors([self.preprocess(image) for image in images])

    def embed_tensors(self, tensors: Sequence[torch.Tensor]) -> np.ndarray:
        """Preprocessed tensors as unit vectors; equal shapes share batches of `batch_size`."""
        out = np.zeros((len(tensors), self.dim), dtype=np.float32)
        # Inputs that keep their aspect ratio (SSCD) differ in shape: only equal ones stack.
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for index, tensor in enumerate(tensors):
            groups[tuple(tensor.shape)].append(index)
        with self._lock, torch.inference_mode():
            for indices in groups.values():
                for start in range(0, len(indices), self.batch_size):
                    rows = indices[start : start + self.batch_size]
                    features = self.session(torch.stack([tensors[row] for row in rows]))
                    unit = nn.functional.normalize(features.float(), dim=-1)
                    out[rows] = unit.cpu().numpy()
        return out


M = TypeVar("M", bound=Model)
# The one process cache: {model class: {what builds it: the model}}.
_cache: dict[type[Model], dict[tuple[Hashable, ...], Model]] = {}
_cache_lock = threading.Lock()
_loading: dict[tuple[Hashable, ...], threading.Lock] = {}


def cached(kind: type[M], key: tuple[Hashable, ...], build: Callable[[], M]) -> M:
    """This process's model of `kind` for `key`, built by `build` on first use.

    A model loading (seconds) holds up only the callers that wait for that same model.
    """
    with _cache_lock:
        models = _cache.setdefault(kind, {})
        if key in models:
            return models[key]  # type: ignore[return-value]
        loading = _loading.setdefault((kind, *key), threading.Lock())
    with loading:
        with _cache_lock:
            if key in models:
                return models[key]  # type: ignore[return-value]
        model = build()
        with _cache_lock:
            models[key] = model
        return model
