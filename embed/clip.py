"""CLIP descriptor for text search: image and text vectors in one space, L2-normalised, cosine.

The model is a Hugging Face transformers `CLIPModel` with its `CLIPProcessor` (image processor
and tokenizer), read from a folder written by `save_pretrained`, or, for a hub id (by default
openai/clip-vit-base-patch32), from the cache: the folder this module fetches it into (torch hub
cache), else the local Hugging Face cache, else fetched there on first use from
IMGSEARCH_TEXT__BASE_URL at the pinned commit (embed/weights.py; only safetensors weights, never
a pickle). transformers itself never downloads (`local_files_only=True`). Without a network text
search is off (said once, in one log line) and everything else works. transformers is imported
only when a model is loaded, so commands that do not use text search do not pay for its import.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from config import TextSettings
from embed.model import Model, ModelUnavailable, TorchSession, cached, first_sentence, pick_device
from embed.weights import FetchFailed, Pin, fetch

log = logging.getLogger(__name__)

ENABLED = "IMGSEARCH_TEXT__ENABLED"
MODEL = "IMGSEARCH_TEXT__MODEL"
BASE_URL = "IMGSEARCH_TEXT__BASE_URL"
WEIGHT_SUFFIXES = (".safetensors", ".bin")
# What CLIPModel reads from a hub folder (the weights as safetensors only, never a pickle), and
# what CLIPProcessor may read: older repositories (openai's) have preprocessor_config.json and a
# slow tokenizer's files, newer ones processor_config.json; a missing one (HTTP 404) is skipped.
HUB_FILES = ("config.json", "model.safetensors")
HUB_EXTRAS = (
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
)
# Written into a fetched folder once every file is there: {"source": URL, "files": [...]}.
COMPLETE = ".complete.json"
# The vector size of hub models known here, so a catalog declares its clip vector before the
# model is fetched (the projection_dim of their config.json).
KNOWN_DIMS = {"openai/clip-vit-base-patch32": 512}
# Hugging Face's own switch for "never contact the hub"; fetching honours it.
HUB_OFFLINE = "HF_HUB_OFFLINE"
HOW = (
    f"set {MODEL} to a folder holding a CLIPModel and CLIPProcessor saved with save_pretrained "
    "(or to a hub id already in the local Hugging Face cache)"
)
OFF = (
    f"Text search is off: set {ENABLED}=true (the default) to fetch its model on first use, "
    f"or {HOW}"
)
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class TextSearchUnavailable(ModelUnavailable):
    """No text model is enabled or loadable; the message names what is missing and how to fix it."""


def resolve_model(setting: str, cache_dir: Path | str | None = None) -> Path:
    """The folder of the configured model from local files only: the folder itself, or its
    snapshot in the local Hugging Face cache (TextSearchUnavailable when there is neither)."""
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
            f"The CLIP model {value} is neither a folder nor in the local Hugging Face cache: {HOW}"
        ) from exc


def is_hub_id(setting: str) -> bool:
    """Whether the setting names a hub model ("org/name") rather than a folder."""
    value = setting.strip()
    return bool(_HUB_ID.fullmatch(value)) and not Path(value).expanduser().is_dir()


def fetched_folder(settings: TextSettings) -> Path:
    """Where a hub model's files are fetched to: the torch hub cache, one folder per revision."""
    name = settings.model.strip().replace("/", "--")
    return Path(torch.hub.get_dir()) / "checkpoints" / f"{name}@{settings.revision.strip()[:12]}"


def find_model(settings: TextSettings, cache_dir: Path | str | None = None) -> Path:
    """The folder of the configured model, fetching a hub model's files on first use.

    A folder is used as it is; a hub id is read from the fetched folder, else from the local
    Hugging Face cache, else fetched (FetchFailed when it cannot be). Anything else raises
    TextSearchUnavailable.
    """
    if not is_hub_id(settings.model):
        return resolve_model(settings.model, cache_dir)
    folder = fetched_folder(settings)
    if (folder / COMPLETE).is_file():
        return folder
    try:
        return resolve_model(settings.model, cache_dir)
    except TextSearchUnavailable:
        pass
    base = settings.base_url.rstrip("/")
    source = f"{base}/{settings.model.strip()}/resolve/{settings.revision.strip()}"
    if os.environ.get(HUB_OFFLINE, "").strip().lower() in ("1", "true", "yes", "on"):
        raise FetchFailed(source, f"{HUB_OFFLINE} is set, so the hub is not contacted")
    fetched = []
    for name in (*HUB_FILES, *HUB_EXTRAS):
        try:
            fetch(f"{source}/{name}", folder / name, Pin(settings.sha256.get(name)))
        except FetchFailed as exc:
            if exc.status == 404 and name in HUB_EXTRAS:
                continue
            raise
        fetched.append(name)
    (folder / COMPLETE).write_text(json.dumps({"source": source, "files": fetched}))
    return folder


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
    folder = fetched_folder(settings) if is_hub_id(settings.model) else None
    try:
        if folder is not None and (folder / "config.json").is_file():
            return model_dim(folder)
        return model_dim(resolve_model(settings.model, cache_dir))
    except TextSearchUnavailable:
        # A known hub model is declared before it is fetched, so the catalog's shape does not
        # change when it arrives (or never does, offline).
        return KNOWN_DIMS.get(settings.model.strip()) if folder is not None else None


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
    """This process's CLIP encoder, built on first use; None when text search is off (by the
    setting, or because its model could not be fetched: said once, in one log line)."""
    if not settings.enabled:
        return None
    try:
        folder = find_model(settings, cache_dir)
    except FetchFailed as exc:
        _say_off(
            f"Text search is off: {exc}; put the files of {settings.model} (revision "
            f"{settings.revision}) in {fetched_folder(settings)}, or {HOW}, or set {BASE_URL} to "
            f"a mirror, or {ENABLED}=false"
        )
        return None
    key = (folder.resolve(), str(device), batch_size)
    return cached(
        ClipEncoder,
        key,
        lambda: ClipEncoder(folder, device, batch_size=batch_size, name=settings.model),
    )


_off_logged: set[str] = set()
_off_lock = threading.Lock()


def _say_off(line: str) -> None:
    """Log why text search is off, once per process (not once per query)."""
    with _off_lock:
        if line in _off_logged:
            return
        _off_logged.add(line)
    log.warning(line)


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
