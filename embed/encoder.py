"""ResNet50 image encoder: the 2048-d pooled feature, L2-normalised float32.

How it runs is decided once, by `plan_for`: on a CPU int8 through ONNX Runtime when the int8
model passes its self-check against fp32 on the shipped probe photos (embed/int8.py), and if it
does not, on CPUs that compute bf16 natively (avx512_bf16 or AMX) torch with channels_last and
bf16 autocast, on other CPUs fp32 through ONNX Runtime, about 1.5x eager torch there
(embed/onnx.py); on CUDA torch with fp16 weights, channels_last, pinned memory and non-blocking
copies. Torch threads default to every usable core (see `auto_threads`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn
from torchvision.models import ResNet50_Weights, resnet50

from config import EmbedSettings
from embed.cpu import cpu_flags
from embed.int8 import Int8Unavailable, compile_int8
from embed.model import Model, ModelSession, ModelUnavailable, OnnxSession, cached, pick_device
from embed.onnx import compile_or_none

log = logging.getLogger(__name__)

DIM = 2048
CROP = 224  # the ImageNet recipe's centre crop: every input tensor is 3 x 224 x 224
RANDOM_SEED = 20240611
IMAGENET = ResNet50_Weights.DEFAULT
# /proc/cpuinfo flags of CPUs with bf16 arithmetic in hardware (oneDNN uses them for bf16 convs).
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


class WeightsUnavailable(ModelUnavailable):
    """The configured ResNet50 weights cannot be loaded; the message tells the user what to do."""


@dataclass(frozen=True)
class Plan:
    """Where and how the model runs: device, compute dtype, threads (0 = the runtime's own), the
    runtime ("torch" or "onnx": ONNX Runtime, CPU only) and whether ONNX Runtime runs the int8
    model (`quantized`; the dtype is then the fp32 it is checked against)."""

    device: torch.device
    dtype: torch.dtype
    threads: int
    runtime: str = "torch"
    quantized: bool = False

    @property
    def precision(self) -> str:
        """What the network computes in: "int8", "bf16", "fp16" or "fp32"."""
        if self.quantized:
            return "int8"
        name = str(self.dtype).removeprefix("torch.")
        return {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(name, name)

    @property
    def autocast(self) -> bool:
        """True when a CPU runs the fp32 model under bf16 autocast."""
        return self.device.type == "cpu" and self.dtype != torch.float32

    def describe(self) -> str:
        """A short human-readable summary, e.g. "cpu, bf16 autocast, 1 thread"."""
        precision = self.precision
        if self.autocast:
            precision += " autocast"
        threads = f", {self.threads} thread(s)" if self.threads else ""
        if self.runtime == "onnx":
            return f"{self.device}, {precision}, ONNX Runtime{threads}"
        return f"{self.device}, {precision}, torch channels_last{threads}"


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def auto_threads(cores: int) -> int:
    """torch threads for `cores` CPU cores when embed.threads is 0: every core.

    Measured on a quiet 2-core machine (`IMGSEARCH_EMBED__THREADS=1|2 imgsearch bench --json
    --catalog 2000`): 2 threads embedded 13.0 images/s and ingested 9.9 end to end, 1 thread
    7.0 and 6.2; decoding is bounded (IMGSEARCH_DECODE__CONCURRENCY) and overlaps the model's
    batches well enough. Only on a machine shared with other busy processes did 1 thread win;
    set IMGSEARCH_EMBED__THREADS there.
    """
    return max(1, cores)


def plan_for(
    settings: EmbedSettings,
    *,
    cuda_available: bool | None = None,
    flags: frozenset[str] | None = None,
    cores: int | None = None,
    int8: bool = True,
) -> Plan:
    """Decide device, precision and threads from settings and the machine (overridable in tests).

    `int8=False` is the plan without int8: what runs when the int8 model fails its self-check
    (precision auto: bf16 or fp32 as the CPU allows; precision int8: fp32).
    """
    no_cuda = WeightsUnavailable(
        "IMGSEARCH_EMBED__DEVICE=cuda but no CUDA device is available; use auto or cpu."
    )
    device = pick_device(settings.device, no_cuda, cuda_available=cuda_available)
    if settings.precision == "int8" and (device.type != "cpu" or settings.runtime == "torch"):
        raise WeightsUnavailable(
            "IMGSEARCH_EMBED__PRECISION=int8 runs on the CPU in ONNX Runtime only; set "
            "IMGSEARCH_EMBED__DEVICE=cpu and IMGSEARCH_EMBED__RUNTIME=auto, or PRECISION=auto"
        )
    quantized = (
        int8
        and device.type == "cpu"
        and settings.runtime != "torch"
        and settings.precision in ("auto", "int8")
    )
    if settings.precision == "fp32" or quantized or settings.precision == "int8":
        dtype = torch.float32
    elif settings.precision == "bf16":
        dtype = torch.bfloat16
    elif device.type == "cuda":
        dtype = torch.float16
    else:
        native = NATIVE_BF16_FLAGS & (cpu_flags() if flags is None else flags)
        dtype = torch.bfloat16 if native else torch.float32
    if settings.threads:
        threads = settings.threads
    elif device.type == "cpu":
        threads = auto_threads(usable_cores() if cores is None else cores)
    else:
        threads = 0  # the GPU computes; the CPU threads only decode
    cpu_fp32 = device.type == "cpu" and dtype == torch.float32
    if settings.runtime == "onnx" and not cpu_fp32:
        raise WeightsUnavailable(
            "IMGSEARCH_EMBED__RUNTIME=onnx runs fp32 or int8 on the CPU only; set "
            "IMGSEARCH_EMBED__DEVICE=cpu and IMGSEARCH_EMBED__PRECISION=fp32, or RUNTIME=auto"
        )
    runtime = "onnx" if settings.runtime != "torch" and cpu_fp32 else "torch"
    return Plan(device, dtype, threads, runtime, quantized)


class Encoder(Model):
    """Embeds batches of RGB images; build once per process (see `load_encoder`)."""

    kind = "ResNet50"
    dim = DIM

    def __init__(self, settings: EmbedSettings) -> None:
        super().__init__()
        self.settings = settings
        self.batch_size = settings.batch_size
        self.plan = plan_for(settings)
        self.device = self.plan.device
        if self.plan.threads:
            torch.set_num_threads(self.plan.threads)  # process-wide, so set once, here
        if self.plan.autocast and not NATIVE_BF16_FLAGS & cpu_flags():
            log.warning(
                "IMGSEARCH_EMBED__PRECISION=bf16 on a CPU without native bf16 (avx512_bf16 or "
                "AMX): it is emulated and several times slower than fp32"
            )
        model, weights = _build_model(settings.weights)
        self.label = f"{self.kind} {weights}"
        self.is_random = settings.weights == "random"
        # Preprocessing comes from the weights' own recipe (resize, crop, normalise).
        self.transform = IMAGENET.transforms()
        model.eval()
        # channels_last: oneDNN (CPU) and cuDNN (tensor cores) run ResNet convolutions faster.
        model = model.to(self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        session: ModelSession | None = None
        if self.plan.runtime == "onnx":
            session = self._compile_onnx(model)
        if self.device.type == "cuda":
            model = model.to(self.plan.dtype)  # half weights; on CPU autocast casts per op
            torch.backends.cudnn.benchmark = True  # one input size (the crop): tune once
        self.model = model
        self.session = session or _TorchSession(model, self.plan)
        if self.is_random:
            log.warning(
                "RANDOM ENCODER WEIGHTS: embeddings are deterministic but meaningless; "
                "similarity scores say nothing about the images (tests and offline demos only)"
            )
        log.info("encoder ready: ResNet50 (%s) on %s", weights, self.plan.describe())

    @property
    def weights_label(self) -> str:
        """The weights part of the label ("random (seeded)", "imagenet (IMAGENET1K_V2)")."""
        return self.label.removeprefix(f"{self.kind} ")

    def _compile_onnx(self, model: nn.Module) -> ModelSession | None:
        probe = torch.randn(2, 3, CROP, CROP, generator=torch.Generator().manual_seed(0))
        compiled = compile_or_none(model, [probe], threads=self.plan.threads, what="the encoder")
        if compiled is None:
            self.plan = dataclasses.replace(self.plan, runtime="torch", quantized=False)
            return None
        if not self.plan.quantized:
            return OnnxSession(compiled)
        try:
            int8 = compile_int8(compiled, self.preprocess, flags=cpu_flags(), what="ResNet50")
        except Int8Unavailable as exc:
            self.int8_check = exc.check
            self.plan = plan_for(self.settings, int8=False)
            log.warning("%s; running it in %s", exc, self.plan.describe())
            return OnnxSession(compiled) if self.plan.runtime == "onnx" else None
        self.int8_check = int8.check
        return OnnxSession(int8)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Turn one RGB image into the model's input tensor (safe to call from worker threads)."""
        tensor: torch.Tensor = self.transform(image)
        return tensor


class _TorchSession:
    """ResNet50 in torch: channels_last, fp16 on CUDA (pinned, non-blocking copies), bf16
    autocast on CPUs that compute it natively."""

    runtime = "torch"

    def __init__(self, model: nn.Module, plan: Plan) -> None:
        self.model = model
        self.plan = plan

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            features: torch.Tensor = self.model(self._to_device(batch)).float()
        return features

    def _to_device(self, batch: torch.Tensor) -> torch.Tensor:
        if self.plan.device.type == "cuda":
            # Pinned host memory lets the copy run asynchronously; the cast happens on the GPU.
            batch = batch.pin_memory().to(self.plan.device, non_blocking=True).to(self.plan.dtype)
        return batch.contiguous(memory_format=torch.channels_last)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.plan.autocast:
            return torch.autocast("cpu", dtype=self.plan.dtype)
        return contextlib.nullcontext()


def load_encoder(settings: EmbedSettings) -> Encoder:
    """Return this process's encoder for these settings, building it on first use."""
    key = (
        settings.weights,
        settings.device,
        settings.batch_size,
        settings.precision,
        settings.threads,
        settings.runtime,
    )
    return cached(Encoder, key, lambda: Encoder(settings))


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
