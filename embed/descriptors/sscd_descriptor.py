"""The "sscd" vector: the SSCD copy-detection descriptor (optional weights), and its copy rule.

A catalog image is a copy at cosine >= `sscd_min_score` (the authors' 0.75: about 90% precision
on DISC2021). Without the weights file the layer is off and says how to enable it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from config import Settings, VerdictSettings
from embed.decode import Fit
from embed.descriptors.base import CopyLayer, Match, ModelDescriptor
from embed.sscd import DIM, SETTING, SSCD_FILE, SscdEncoder, load_sscd
from store.index import VectorSpec


class SscdDescriptor(ModelDescriptor, CopyLayer):
    """facebookresearch/sscd-copy-detection's TorchScript model (embed/sscd.py)."""

    name = "sscd"
    pixels = Fit(short=288, long=0)  # the authors' "small_288": short side 288, no crop

    @classmethod
    def spec(cls, settings: Settings) -> VectorSpec:
        return VectorSpec(cls.name, DIM, "cosine")

    @classmethod
    def load_model(cls, settings: Settings, device: str) -> SscdEncoder | None:
        """The model when its weights are configured or cached; None when the layer is off."""
        verdict = settings.verdict
        return load_sscd(
            verdict.sscd_weights,
            device,
            settings.embed.runtime,
            precision=settings.embed.precision,
            base_url=verdict.sscd_base_url,
        )

    @classmethod
    def off(cls, settings: VerdictSettings) -> str:
        return f"off: no SSCD weights ({SSCD_FILE}); set {SETTING} to enable it"

    @classmethod
    def match(cls, score: float, settings: VerdictSettings) -> Match | None:
        if score < settings.sscd_min_score:
            return None
        return Match(
            f"edited copy: copy-detection similarity {score:.2f}",
            {"score": round(score, 4), "min_score": settings.sscd_min_score},
        )

    @classmethod
    def strength(cls, figures: Mapping[str, Any]) -> float:
        """A higher similarity is stronger."""
        return float(figures.get("score", 0))
