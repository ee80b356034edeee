"""What every descriptor is: a named vector of the catalog's points, and how it is computed.

A descriptor is one class that owns everything about its vector: its name and `VectorSpec`
(size, distance, binary, search breadth), the pixels it needs from the decoder, the model that
builds it (loaded by `load_model`, named by `label` in the catalog), and how it is computed in
two steps: `prepare` runs per image in the ingestion worker threads (cheap hashes are finished
there, model inputs preprocessed there) and `compute` turns a batch of prepared values into
vectors on the embedding thread. `query_vectors` is what a query image searches with.

A `CopyLayer` is a descriptor whose score alone can call a catalog image a copy: it adds its
match rule (threshold from the verdict's settings), the evidence in words and figures, and how
strong that evidence is. The copy verdict (search/verdict.py) runs every copy layer of the
registry, cheapest and strongest first.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from config import Settings, VerdictSettings
from embed.decode import Fit
from embed.model import Model
from store.index import VectorSpec


class Descriptor(ABC):
    """One named vector this process computes; subclasses are registered in `REGISTRY`."""

    name: ClassVar[str]  # the named vector in the catalog ("image", "pdq", ...)
    pixels: ClassVar[Fit]  # the fewest pixels it needs: short side, long side
    # Its nearest catalog images are candidates for the verdict's geometric verification.
    proposes: ClassVar[bool] = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @classmethod
    @abstractmethod
    def spec(cls, settings: Settings) -> VectorSpec | None:
        """The vector every collection declares, whether or not its model is loaded here
        (None: not declared with these settings)."""

    @classmethod
    def load_model(cls, settings: Settings, device: str) -> Model | None:
        """This process's model for the descriptor (None: it needs none, or it is off)."""
        return None

    @classmethod
    def build(cls, settings: Settings, model: Model | None) -> Descriptor | None:
        """The descriptor on its loaded model; None when it needs a model and has none."""
        return cls(settings)

    @property
    @abstractmethod
    def label(self) -> str:
        """The model and weights that build the vector, recorded with it in the catalog."""

    @abstractmethod
    def prepare(self, image: Image.Image) -> Any:
        """Per-image work, thread-safe; None = no vector for this image."""

    def compute(self, prepared: Sequence[Any]) -> np.ndarray:
        """Prepared values -> (n, size) float32 vectors (the embedding thread)."""
        return np.stack([np.asarray(value, dtype=np.float32) for value in prepared])

    def query_vectors(self, image: Image.Image) -> list[np.ndarray]:
        """The vectors a query image searches with (none when it has no vector)."""
        prepared = self.prepare(image)
        return [] if prepared is None else [self.compute([prepared])[0]]


class ModelDescriptor(Descriptor):
    """A descriptor computed by a network: prepare preprocesses, compute runs the batch."""

    def __init__(self, settings: Settings, model: Model) -> None:
        super().__init__(settings)
        self.model = model

    @classmethod
    def build(cls, settings: Settings, model: Model | None) -> Descriptor | None:
        return None if model is None else cls(settings, model)

    @property
    def label(self) -> str:
        return self.model.label

    def prepare(self, image: Image.Image) -> Any:
        return self.model.preprocess(image)

    def compute(self, prepared: Sequence[Any]) -> np.ndarray:
        return self.model.embed_tensors(prepared)


@dataclass(frozen=True)
class Match:
    """A copy layer's finding: the evidence in words and in figures."""

    text: str  # "edited copy: 14 of 256 hash bits differ"
    figures: dict[str, Any] = field(default_factory=dict)


class CopyLayer(Descriptor):
    """A descriptor whose score against a catalog image alone can call that image a copy."""

    @classmethod
    @abstractmethod
    def off(cls, settings: VerdictSettings) -> str:
        """What the verdict reports when this process does not compute the descriptor."""

    @classmethod
    def skipped(cls, settings: VerdictSettings) -> str:
        """What the verdict reports when a query has no vector for it."""
        return "skipped: no vector for this picture"

    @classmethod
    @abstractmethod
    def match(cls, score: float, settings: VerdictSettings) -> Match | None:
        """The match rule: a catalog image at this score is a copy (with the evidence), or not."""

    @classmethod
    @abstractmethod
    def strength(cls, figures: Mapping[str, Any]) -> float:
        """How strong this layer's evidence is, from its figures (higher is stronger)."""
