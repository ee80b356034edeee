"""CLIP descriptor for text search: image and text vectors in one space, L2-normalised, cosine.

The model is a Hugging Face transformers `CLIPModel` with its `CLIPProcessor` (image processor
and tokenizer), read from a folder written by `save_pretrained` or from a hub id already in the
local Hugging Face cache. It is never downloaded at run time (`local_files_only=True`).
transformers is imported only when a model is loaded, so commands that do not use text search do
not pay for its import.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from config import TextSettings
from embed.model import Model, ModelUnavailable, TorchSession, cached, first_sentence, pick_device

log = logging.getLogger(__name__)

ENABLED = "IMGSEARCH_TEXT__ENABLED"
MODEL = "IMGSEARCH_TEXT__MODEL"
WEIGHT_SUFFIXES = (".safetensors", ".bin")
HOW = (
    f"set {MODEL} to a folder holding a CLIPModel and CLIPProcessor saved with save_pretrained "
    "(or to a hub id already in the local Hugging Face cache)"
)
OFF = f"Text search is off: set {ENABLED}=true and {HOW}"


class TextSearchUnavailable(ModelUnavailable):
    """No text model is enabled or loadable; the message names what is missing and how to fix it."""


def resolve_model(setting: str, cache_dir: Path | str | None = None) -> Path:
    """The folder of the configured model: the folder itself, or its cached hub snapshot."""
    value = setting.strip()
    if not value:
        raise TextSearchUnavailable(f"{MODEL} is empty: {HOW}")
    path = Path(value).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(snapshot_download(value, local_files_only=True, cache_dir=cache_dir))
    except (OSError, HFValidationError) as exc:
        log.debug("no cached snapshot of %s", value, exc_info=True)
        raise TextSearchUnavailable(
            f"The CLIP model {value} is neither a folder nor in the local Hugging Face cache, "
            f"and it is never downloaded at run time: {HOW}"
        ) from exc


def model_dim(folder: Path) -> int:
    """The model's vector size (`projection_dim` of its config.json), without loading it."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TextSearchUnavailable(
            f"The CLIP model folder {folder} has no readable config.json: {HOW}"
        ) from exc
    if not isinstance(config, dict) or config.get("model_type") != "clip":
        kind = config.get("model_type") if isinstance(config, dict) else None
        raise TextSearchUnavailable(
            f"The model in {folder} is a {kind or 'model of unknown type'}, not a CLIP model: {HOW}"
        )
    return int(config.get("projection_dim", 512))


def declared_dim(settings: TextSettings, cache_dir: Path | str | None = None) -> int | None:
    """The size of the clip vector a catalog declares: None when text search is off or broken.

    A broken model is not declared here; loading it (`load_clip`) then says what is wrong.
    """
    if not settings.enabled:
        return None
    try:
        return model_dim(resolve_model(settings.model, cache_dir))
    except TextSearchUnavailable:
        return None


class ClipEncoder(Model):
    """Embeds images and texts into CLIP vectors; build once per process (see `load_clip`)."""

    kind = "CLIP"

    def __init__(
        self,
        folder: Path,
        device: torch.device | str = "cpu",
        *,
        batch_size: int = 16,
        name: str = "",
    ) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.device = pick_device(
            device,
            TextSearchUnavailable(
                "Text search was asked to run on CUDA, but no CUDA device is available."
            ),
        )
        self.batch_size = batch_size
        self.dim = model_dim(self.folder)
        self.model, self.processor = _load(self.folder, self.device)
        self.session = TorchSession(
            lambda pixels: _features(self.model.get_image_features(pixel_values=pixels)),
            self.device,
        )
        vision = self.model.config.vision_config
        # The weights, not the folder's name, identify the model: a moved folder still matches.
        digest = _weights_digest(self.folder)[:12]
        self.label = f"CLIP ViT patch{vision.patch_size} {self.dim}-d sha256:{digest}"
        self.max_tokens = int(self.model.config.text_config.max_position_embeddings)
        log.info("CLIP text search ready: %s (%s) on %s", name or folder, self.label, self.device)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """One image as the model's (3, H, W) input (safe to call from worker threads)."""
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        pixels = self.processor.image_processor(images=rgb, return_tensors="pt")["pixel_values"]
        tensor: torch.Tensor = pixels[0]
        return tensor

    def embed_text(self, text: str) -> np.ndarray:
        """One text as a (dim,) float32 unit vector (texts longer than the model's are cut)."""
        tokens = self.processor.tokenizer(
            [text], padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        with self._lock, torch.inference_mode():
            features = _features(
                self.model.get_text_features(
                    input_ids=tokens["input_ids"].to(self.device),
                    attention_mask=tokens["attention_mask"].to(self.device),
                )
            )
        vector: np.ndarray = _unit(features)[0]
        return vector


def _features(output: Any) -> torch.Tensor:
    """The projected features: transformers 5 returns them as the output's pooler_output."""
    if isinstance(output, torch.Tensor):
        return output
    features: torch.Tensor = output.pooler_output
    return features


def _unit(features: torch.Tensor) -> np.ndarray:
    unit: np.ndarray = nn.functional.normalize(features.float(), dim=-1).cpu().numpy()
    return unit.astype(np.float32, copy=False)


def load_clip(
    settings: TextSettings,
    device: str = "cpu",
    *,
    batch_size: int = 16,
    cache_dir: Path | str | None = None,
) -> ClipEncoder | None:
    """This process's CLIP encoder, built on first use; None when text search is off."""
    if not settings.enabled:
        return None
    folder = resolve_model(settings.model, cache_dir)
    key = (folder.resolve(), str(device), batch_size)
    return cached(
        ClipEncoder,
        key,
        lambda: ClipEncoder(folder, device, batch_size=batch_size, name=settings.model),
    )


def _load(folder: Path, device: torch.device) -> tuple[Any, Any]:
    """CLIPModel and CLIPProcessor from the folder, only from local files."""
    import transformers
    from transformers import CLIPModel, CLIPProcessor

    # No per-start chatter (weight-loading progress bars, "weights not initialised" notes).
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        model = CLIPModel.from_pretrained(folder, local_files_only=True)
        processor = CLIPProcessor.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        log.debug("loading CLIP from %s failed", folder, exc_info=True)
        raise TextSearchUnavailable(
            f"The CLIP model in {folder} cannot be loaded ({first_sentence(exc)}): {HOW}"
        ) from exc
    return model.eval().to(device), processor


def _weights_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES):
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
