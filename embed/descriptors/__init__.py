"""The descriptor registry: every vector an image's one point carries, one class each.

`REGISTRY` is the one tuple of descriptor classes, in the catalog's order. The collection's
vectors (`specs`), the decoder's input sizes (`needed_fit`), the descriptors this process
computes (`build_descriptors`) and the copy verdict's layers (`COPY_LAYERS`) all iterate it.
Adding a descriptor means one new module with a `Descriptor` subclass (base.py says what it
owns) and one entry here; a copy layer (a `CopyLayer`) also brings its match rule and evidence.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from config import Settings
from embed.clip import OFF, ClipEncoder, TextSearchUnavailable
from embed.decode import Fit
from embed.descriptors.base import CopyLayer, Descriptor, Match, ModelDescriptor
from embed.descriptors.clip_descriptor import ClipDescriptor
from embed.descriptors.image_descriptor import ImageDescriptor
from embed.descriptors.layout_descriptor import LayoutDescriptor
from embed.descriptors.pdq_descriptor import PDQ_SEARCH_EF, PdqDescriptor, hamming_of, signed
from embed.descriptors.sscd_descriptor import SscdDescriptor
from embed.encoder import Encoder
from embed.model import Model
from embed.sscd import SscdEncoder
from store.index import VectorSpec

# The catalog's order; copy layers run in this order too (cheapest and strongest first).
REGISTRY: tuple[type[Descriptor], ...] = (
    ImageDescriptor,  # ResNet50 ImageNet: "similar images"
    PdqDescriptor,  # Meta's perceptual hash as 256 floats of +1/-1: a copy layer
    SscdDescriptor,  # learned copy-detection descriptor (optional weights): a copy layer
    LayoutDescriptor,  # weight-free colour and structure: proposes copy candidates to verify
    ClipDescriptor,  # CLIP image vector: text queries (CLIP's text vector) search it
)
COPY_LAYERS: tuple[type[CopyLayer], ...] = tuple(c for c in REGISTRY if issubclass(c, CopyLayer))
BY_NAME: dict[str, type[Descriptor]] = {c.name: c for c in REGISTRY}
if len(BY_NAME) != len(REGISTRY):
    raise RuntimeError(f"descriptor names must be unique: {[c.name for c in REGISTRY]}")

IMAGE = ImageDescriptor.name
PDQ = PdqDescriptor.name
SSCD = SscdDescriptor.name
LAYOUT = LayoutDescriptor.name
CLIP = ClipDescriptor.name

__all__ = [
    "BY_NAME",
    "CLIP",
    "COPY_LAYERS",
    "IMAGE",
    "LAYOUT",
    "PDQ",
    "PDQ_SEARCH_EF",
    "REGISTRY",
    "SSCD",
    "CopyLayer",
    "Descriptor",
    "Descriptors",
    "Match",
    "ModelDescriptor",
    "TextSearchUnavailable",
    "build_descriptors",
    "hamming_of",
    "load_descriptors",
    "load_model",
    "needed_fit",
    "signed",
    "specs",
]


def specs(settings: Settings) -> list[VectorSpec]:
    """Every named vector a collection declares, whether or not its model is loaded here."""
    declared = (c.spec(settings) for c in REGISTRY)
    return [spec for spec in declared if spec is not None]


def needed_fit(long: int = 0) -> Fit:
    """The fewest pixels every descriptor's input needs (the models' short side, the hashes'
    long side), and at least `long` on the long side (the thumbnail, the verification)."""
    return Fit(
        short=max(c.pixels.short for c in REGISTRY),
        long=max(long, *(c.pixels.long for c in REGISTRY)),
    )


def load_model(name: str, settings: Settings, device: str) -> Model | None:
    """This process's model for the named descriptor (None: it needs none, or it is off)."""
    return BY_NAME[name].load_model(settings, device)


class Descriptors:
    """The descriptors this process computes, in registry order, by name."""

    def __init__(self, items: Sequence[Descriptor], declared: Sequence[VectorSpec]) -> None:
        self._items = {d.name: d for d in items}
        self.declared = list(declared)
        self._text = next((d for d in items if isinstance(d, ClipDescriptor)), None)

    def __iter__(self) -> Iterator[Descriptor]:
        return iter(self._items.values())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __getitem__(self, name: str) -> Descriptor:
        return self._items[name]

    def get(self, name: str) -> Descriptor | None:
        """The named descriptor, or None when this process does not compute it."""
        return self._items.get(name)

    @property
    def has_text(self) -> bool:
        """Whether text queries can be encoded here (a CLIP model is loaded)."""
        return self._text is not None

    def encode_text(self, text: str) -> np.ndarray:
        """A text query as a unit vector of the "clip" named vector.

        Raises TextSearchUnavailable when no text model is enabled, ValueError on an empty text.
        """
        if self._text is None:
            raise TextSearchUnavailable(OFF)
        if not text.strip():
            raise ValueError("the text query is empty")
        return self._text.embed_text(text.strip())

    @property
    def labels(self) -> dict[str, str]:
        """{name: model label} of every descriptor computed here."""
        return {d.name: d.label for d in self}

    def prepare(self, image: Image.Image, only: Sequence[str] | None = None) -> dict[str, Any]:
        """Per-image work of every descriptor (or of `only`); runs in worker threads."""
        out: dict[str, Any] = {}
        for d in self:
            if only is not None and d.name not in only:
                continue
            value = d.prepare(image)
            if value is not None:
                out[d.name] = value
        return out

    def compute(self, prepared: Sequence[Mapping[str, Any]]) -> list[dict[str, np.ndarray]]:
        """Vectors for a batch of prepared images: one {name: vector} per image."""
        out: list[dict[str, np.ndarray]] = [{} for _ in prepared]
        for d in self:
            rows = [i for i, p in enumerate(prepared) if d.name in p]
            if not rows:
                continue
            vectors = d.compute([prepared[i][d.name] for i in rows])
            for i, vector in zip(rows, vectors, strict=True):
                out[i][d.name] = vector
        return out


def load_descriptors(
    settings: Settings, models: Mapping[str, Model | None], *, device: str | None = None
) -> Descriptors:
    """Every registered descriptor these settings and models allow, in registry order.

    With `device`, the model of a descriptor not in `models` is loaded there (`load_model`);
    without, such a descriptor is built without one (weight-free ones) or not at all.
    """
    built = []
    for kind in REGISTRY:
        if kind.name in models or device is None:
            model = models.get(kind.name)
        else:
            model = kind.load_model(settings, device)
        descriptor = kind.build(settings, model)
        if descriptor is not None:
            built.append(descriptor)
    return Descriptors(built, specs(settings))


def build_descriptors(
    settings: Settings,
    encoder: Encoder,
    sscd: SscdEncoder | None = None,
    clip: ClipEncoder | None = None,
) -> Descriptors:
    """The registry for these settings and models (SSCD and CLIP only when loaded)."""
    return load_descriptors(settings, {IMAGE: encoder, SSCD: sscd, CLIP: clip})
