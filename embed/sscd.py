"""SSCD copy-detection descriptor (facebookresearch/sscd-copy-detection): 512-d unit vectors.

The model is the authors' TorchScript file (ResNet50 trunk, GeM pooling). By default it is
fetched on first use into the torch hub cache, from the authors' URL (or a mirror set in
IMGSEARCH_VERDICT__SSCD_BASE_URL), and kept only when its SHA-256 is the pinned one; a path in
the settings is used as it is, and "off" turns the layer off. Without a network the layer is off
(said once, in one log line) and everything else works.
"""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms

from embed.cpu import cpu_flags
from embed.int8 import Int8Unavailable, compile_int8
from embed.model import (
    Model,
    ModelSession,
    ModelUnavailable,
    OnnxSession,
    TorchSession,
    cached,
    first_sentence,
    pick_device,
)
from embed.onnx import compile_or_none
from embed.weights import FetchFailed, Pin, fetch, sha256_of

log = logging.getLogger(__name__)

SSCD_FILE = "sscd_disc_mixup.torchscript.pt"
SSCD_BASE_URL = "https://dl.fbaipublicfiles.com/sscd-copy-detection"
SSCD_URL = f"{SSCD_BASE_URL}/{SSCD_FILE}"
# The authors publish no checksum; this SHA-256 and size are the ones independent projects pin
# for this URL (the same value in several public repositories, see README "Models").
SSCD_PIN = Pin(
    sha256="9f26bd4c848cc19b73d2ae92eea6e04886f61a7b764ceb7a13aeee62e6a6db56", size=98_791_638
)
DIM = 512
SETTING = "IMGSEARCH_VERDICT__SSCD_WEIGHTS"
BASE_SETTING = "IMGSEARCH_VERDICT__SSCD_BASE_URL"
OFF = "SSCD copy-detection layer is off"

# The authors' inference recipe ("small_288" in their README): the short side to 288 and no
# crop, so the whole image is described whatever its aspect ratio; ImageNet normalisation.
TRANSFORM = transforms.Compose(
    [
        transforms.Resize(288),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ]
)
# A small input for the load-time check that the file is a 512-d descriptor model.
PROBE_SHAPE = (1, 3, 64, 64)


class SscdUnavailable(ModelUnavailable):
    """The SSCD model file is missing or unusable; the message says what to do."""


def find_sscd_weights(setting: str, base_url: str = SSCD_BASE_URL) -> Path | None:
    """The SSCD file to load: "" is the torch hub cache, fetched on first use; "off"; a path.

    None when the layer is off. Fetching raises FetchFailed (no network, HTTP error, a file
    that is not the pinned one); a configured path that does not exist raises SscdUnavailable
    (a typo must not silently turn the layer off).
    """
    value = setting.strip()
    if value.lower() == "off":
        return None
    if not value:
        url = f"{base_url.rstrip('/')}/{SSCD_FILE}"
        return fetch(url, _hub_checkpoints() / SSCD_FILE, SSCD_PIN)
    path = Path(value).expanduser()
    if path.is_dir():
        path = path / SSCD_FILE
    if not path.is_file():
        raise SscdUnavailable(
            f"The SSCD model file {path} does not exist: download {SSCD_URL} and set "
            f"{SETTING} to its path (or to off to run without the SSCD layer)."
        )
    return path


class SscdEncoder(Model):
    """Embeds RGB images into SSCD descriptors; build once per process (see `load_sscd`)."""

    kind = "SSCD"
    dim = DIM

    def __init__(
        self,
        path: Path,
        device: torch.device | str = "cpu",
        *,
        batch_size: int = 16,
        runtime: str = "auto",
        precision: str = "fp32",
        flags: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.device = pick_device(
            device,
            SscdUnavailable(
                "The SSCD layer was asked to run on CUDA, but no CUDA device is available."
            ),
        )
        self.batch_size = batch_size
        self.label = f"{self.path.name} sha256:{sha256_of(self.path)[:12]}"
        self.model = _load(self.path, self.device)
        # SSCD runs fp32; on the CPU ONNX Runtime does that faster (embed/onnx.py), with the
        # same vectors, unless IMGSEARCH_EMBED__RUNTIME=torch; there too int8 under precision
        # auto or int8, once it passed its self-check on the probe photos (embed/int8.py).
        self.precision = "fp32"
        session: ModelSession | None = None
        if self.device.type == "cpu" and runtime != "torch":
            session = self._compile_onnx(int8=precision in ("auto", "int8"), flags=flags)
        self.session = session or TorchSession(self.model, self.device)
        where = "ONNX Runtime" if self.session.runtime == "onnx" else "torch"
        log.info(
            "SSCD descriptor ready: %s on %s (%s, %s)",
            self.label,
            self.device,
            where,
            self.precision,
        )

    def _compile_onnx(self, *, int8: bool, flags: frozenset[str]) -> ModelSession | None:
        seeded = torch.Generator().manual_seed(0)
        # Two aspect ratios: the inputs keep theirs, so height and width must stay free.
        probes = [
            torch.randn(1, 3, 288, 352, generator=seeded),
            torch.randn(2, 3, 320, 288, generator=seeded),
        ]
        compiled = compile_or_none(
            self.model,
            probes,
            threads=torch.get_num_threads(),
            what="the SSCD model",
            any_size=True,
        )
        if compiled is None:
            return None
        if int8:
            try:
                quantized = compile_int8(compiled, self.preprocess, flags=flags, what="SSCD")
            except Int8Unavailable as exc:
                self.int8_check = exc.check
                log.warning("%s; running it in fp32", exc)
            else:
                self.int8_check = quantized.check
                self.precision = "int8"
                return OnnxSession(quantized)
        return OnnxSession(compiled)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Turn one image into the model's input tensor (safe to call from worker threads)."""
        return preprocess(image)


def preprocess(image: Image.Image) -> torch.Tensor:
    """The SSCD input for one image: (3, H, W) with the short side 288, aspect ratio kept."""
    tensor: torch.Tensor = TRANSFORM(image if image.mode == "RGB" else image.convert("RGB"))
    return tensor


_off_logged: set[str] = set()
_off_lock = threading.Lock()


def load_sscd(
    setting: str,
    device: str = "cpu",
    runtime: str = "auto",
    *,
    precision: str = "fp32",
    base_url: str = SSCD_BASE_URL,
) -> SscdEncoder | None:
    """This process's SSCD encoder for the setting, built on first use; None when it is off
    (by the setting, or because its file could not be fetched: said once, in one log line)."""
    try:
        path = find_sscd_weights(setting, base_url)
    except FetchFailed as exc:
        _say_off(f"{OFF}: {exc}; {_how(exc.url)}", warning=True)
        return None
    if path is None:
        _say_off(f"{OFF} ({SETTING}=off)")
        return None
    key = (path.resolve(), str(device), runtime, precision)
    return cached(
        SscdEncoder,
        key,
        lambda: SscdEncoder(path, device, runtime=runtime, precision=precision, flags=cpu_flags()),
    )


def _say_off(line: str, *, warning: bool = False) -> None:
    """Log why the layer is off, once per process (not once per image)."""
    with _off_lock:
        if line in _off_logged:
            return
        _off_logged.add(line)
    log.log(logging.WARNING if warning else logging.INFO, line)


def _how(url: str) -> str:
    return (
        f"put {SSCD_FILE} (from {url}) in {_hub_checkpoints()}, or set {SETTING} to its path, "
        f"or {BASE_SETTING} to a mirror, or {SETTING}=off"
    )


def _hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _load(path: Path, device: torch.device) -> torch.jit.ScriptModule:
    """Load the TorchScript file and check, with one tiny forward, that it gives 512-d rows."""
    try:
        with warnings.catch_warnings():
            # TorchScript is deprecated in torch 2.12, but it is the format the authors ship.
            warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
            model = torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError, OSError) as exc:
        raise SscdUnavailable(
            f"The SSCD model file {path} is not a loadable TorchScript module "
            f"({first_sentence(exc)}); download {SSCD_URL} again and set {SETTING} to its path."
        ) from exc
    model.eval()
    try:
        with torch.inference_mode():
            probe = model(torch.zeros(PROBE_SHAPE, device=device))
    except (RuntimeError, ValueError, TypeError) as exc:
        raise SscdUnavailable(
            f"The SSCD model file {path} fails on an image batch ({first_sentence(exc)}); "
            f"{SETTING} must name {SSCD_FILE}."
        ) from exc
    shape = tuple(probe.shape) if isinstance(probe, torch.Tensor) else type(probe).__name__
    if shape != (1, DIM):
        raise SscdUnavailable(
            f"The SSCD model file {path} turns one image into an output of shape {shape}, "
            f"not (1, {DIM}): {SETTING} must name the 512-d {SSCD_FILE}."
        )
    return model
