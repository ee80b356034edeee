"""The "layout" vector: weight-free colour and structure that proposes copy candidates.

It never decides a verdict by itself: its nearest catalog images are verified geometrically.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from config import Settings
from embed import layout
from embed.decode import Fit
from embed.descriptors.base import Descriptor
from store.index import VectorSpec


class LayoutDescriptor(Descriptor):
    """HSV histogram, gradient grid and 8x8 thumbnail of the trimmed picture (embed/layout.py)."""

    name = "layout"
    pixels = Fit(short=0, long=layout.SIDE)

    @classmethod
    def spec(cls, settings: Settings) -> VectorSpec:
        return VectorSpec(cls.name, layout.DIM, "cosine")

    @property
    def label(self) -> str:
        return "layout v1 (HSV histogram, gradient grid, 8x8 thumbnail)"

    def prepare(self, image: Image.Image) -> np.ndarray:
        return layout.layout_vector(image, tolerance=self.settings.verdict.trim_tolerance)
