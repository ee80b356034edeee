"""What a similarity score means for each distance, so controls and messages can follow it."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ScoreScale:
    """The range and direction of one vector's scores, for a threshold control."""

    higher_is_better: bool
    label: str  # the control's label: "Minimum similarity" or "Maximum distance"
    toggle: str  # the checkbox that turns the threshold on
    low: float
    high: float
    default: float
    step: float

    def keeps(self, score: float, threshold: float) -> bool:
        """Whether a score passes the threshold."""
        return score >= threshold if self.higher_is_better else score <= threshold


def score_scale(distance: str, dim: int) -> ScoreScale:
    """The scale of scores between L2-normalised vectors (what the encoders produce).

    Cosine and dot are similarities in [-1, 1]; ResNet50 features are non-negative, so [0, 1]
    holds every score the catalog gives. Euclidean distances between unit vectors lie in [0, 2]
    and Manhattan distances in [0, 2 * sqrt(dim)]. The defaults sit at the same point of each
    scale (cosine 0.5 is Euclidean 1.0), a neutral start rather than a calibrated cut.
    """
    if distance in ("cosine", "dot"):
        return ScoreScale(
            True, "Minimum similarity", "Only show scores above a minimum", 0.0, 1.0, 0.5, 0.01
        )
    if distance == "euclid":
        return ScoreScale(
            False, "Maximum distance", "Only show distances below a maximum", 0.0, 2.0, 1.0, 0.01
        )
    if distance == "manhattan":
        high = round(2 * math.sqrt(dim), 1)
        return ScoreScale(
            False,
            "Maximum distance",
            "Only show distances below a maximum",
            0.0,
            high,
            round(high / 2, 1),
            0.1,
        )
    raise ValueError(f"unknown distance {distance!r}")
