"""The "image" vector: ResNet50's 2048-d pooled feature, for "similar images"."""

from __future__ import annotations

from config import Settings
from embed.decode import Fit
from embed.descriptors.base import ModelDescriptor
from embed.encoder import DIM, Encoder, load_encoder
from store.index import VectorSpec


class ImageDescriptor(ModelDescriptor):
    """ResNet50 ImageNet features: nearest neighbours look alike."""

    name = "image"
    # The ImageNet recipe resizes the short side to 232 (256 for V1 weights), then crops 224.
    pixels = Fit(short=256, long=0)

    @classmethod
    def spec(cls, settings: Settings) -> VectorSpec:
        return VectorSpec(cls.name, DIM, settings.qdrant.distance)

    @classmethod
    def load_model(cls, settings: Settings, device: str) -> Encoder:
        """The encoder runs where IMGSEARCH_EMBED__DEVICE says (the other models follow it)."""
        return load_encoder(settings.embed)
