"""The "clip" vector: CLIP's image vector, which text queries (CLIP's text vector) search.

Its size is the configured model's, so it is declared only while text search is on; a catalog
keeps the clip vectors it has while text search is off.
"""

from __future__ import annotations

import numpy as np

from config import Settings
from embed.clip import ClipEncoder, declared_dim, load_clip
from embed.decode import Fit
from embed.descriptors.base import ModelDescriptor
from store.index import VectorSpec


class ClipDescriptor(ModelDescriptor):
    """A local Hugging Face CLIP model (embed/clip.py); it also encodes text queries."""

    name = "clip"
    pixels = Fit(short=224, long=0)  # CLIP's processor: short side 224, centre crop
    proposes = False  # a text-image space: its neighbours are not copy candidates

    model: ClipEncoder

    @classmethod
    def spec(cls, settings: Settings) -> VectorSpec | None:
        size = declared_dim(settings.text)
        return None if size is None else VectorSpec(cls.name, size, "cosine")

    @classmethod
    def load_model(cls, settings: Settings, device: str) -> ClipEncoder | None:
        """The model when IMGSEARCH_TEXT__ENABLED (a missing one: TextSearchUnavailable)."""
        return load_clip(settings.text, device, batch_size=settings.embed.batch_size)

    def embed_text(self, text: str) -> np.ndarray:
        """A text as a unit vector of this named vector."""
        return self.model.embed_text(text)
