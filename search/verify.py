"""Geometric verification: is the query an edited copy of the candidate? (ORB + RANSAC + overlap)

Local features (OpenCV ORB) of both pictures are matched with a ratio test, a similarity
transform (rotation, uniform scale, translation) is fitted with RANSAC, and the query, mirrored
if that fits better, is warped onto the candidate. The pictures are then compared where they
overlap: zero-mean normalised cross-correlation of the blurred grayscale pixels. An inlier count
alone is not evidence: repetitive textures (stripes, bricks, tiles, gravel) give many consistent
matches between different pictures, but their aligned pixels disagree. Crops, borders, caption
bars and small rotations keep the overlap identical up to resampling, so a copy correlates highly.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from PIL import Image

RATIO = 0.8  # Lowe's ratio test: the best match must beat the second best clearly
RANSAC_PX = 6.0  # reprojection error allowed at the verification size (512 px)
MIN_SCALE, MAX_SCALE = 0.2, 5.0  # a copy is not shrunk or enlarged beyond this
BLUR_SIGMA = 1.5  # pixels compared after this blur: resampling and JPEG noise fade
MIN_SIDE = 32  # smaller pictures carry too few features to verify
CELLS = 8  # the overlap is compared on a CELLS x CELLS grid
MIN_DETAIL = 4.0  # grey-level spread below which a cell is flat and says nothing
MIN_CELLS = 6  # fewer comparable cells than this: no evidence either way


@dataclass(frozen=True)
class _Side:
    points: np.ndarray  # (n, 2) float32 keypoint coordinates
    descriptors: np.ndarray | None  # (n, 32) uint8 ORB descriptors


@dataclass(frozen=True)
class Features:
    """Local features of one picture (and of its mirror image), computed once, reused."""

    gray: np.ndarray  # the verification-size grayscale pixels, uint8
    plain: _Side
    mirrored: _Side = field(repr=False)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the verification-size picture."""
        return int(self.gray.shape[1]), int(self.gray.shape[0])


@dataclass(frozen=True)
class Verification:
    """The result of verifying a query against one candidate."""

    is_copy: bool
    inliers: int
    correlation: float
    overlap: float
    mirrored: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "inliers": self.inliers,
            "correlation": round(self.correlation, 4),
            "overlap": round(self.overlap, 4),
            "mirrored": self.mirrored,
        }


NOT_A_COPY = Verification(False, 0, 0.0, 0.0, False)
NO_FEATURES = _Side(np.zeros((0, 2), np.float32), None)


def extract(
    image: Image.Image, *, side: int = 512, n_features: int = 500, mirror: bool = True
) -> Features:
    """ORB features of an RGB picture on a grayscale copy at most `side` pixels long.

    `mirror` also describes the mirror image (needed for a query, not for a candidate).
    """
    gray_image = image.convert("L")
    if max(gray_image.size) > side:
        gray_image = gray_image.copy()
        gray_image.thumbnail((side, side), Image.Resampling.BILINEAR)
    gray = np.ascontiguousarray(np.asarray(gray_image, dtype=np.uint8))
    orb = cv2.ORB_create(nfeatures=n_features, edgeThreshold=15, patchSize=15)  # type: ignore[attr-defined]
    plain = _detect(orb, gray)
    if not mirror:
        return Features(gray=gray, plain=plain, mirrored=NO_FEATURES)
    flipped = np.ascontiguousarray(gray[:, ::-1])
    return Features(gray=gray, plain=plain, mirrored=_detect(orb, flipped))


def _detect(orb: Any, gray: np.ndarray) -> _Side:
    if min(gray.shape) < MIN_SIDE:
        return NO_FEATURES
    keypoints, descriptors = orb.detectAndCompute(gray, None)
    points = np.array([k.pt for k in keypoints], dtype=np.float32).reshape(-1, 2)
    return _Side(points, descriptors)


def verify(
    query: Features,
    candidate: Features,
    *,
    min_inliers: int = 8,
    min_correlation: float = 0.9,
    min_overlap: float = 0.2,
) -> Verification:
    """Whether `query` is an edited copy of `candidate`, with the figures that decided it."""
    best = NOT_A_COPY
    for mirrored in (False, True):
        side = query.mirrored if mirrored else query.plain
        found = _align(side, candidate.plain, min_inliers)
        if found is None:
            continue
        transform, inliers = found
        source = query.gray[:, ::-1] if mirrored else query.gray
        correlation, overlap = _compare(source, candidate.gray, transform)
        result = Verification(
            inliers >= min_inliers and correlation >= min_correlation and overlap >= min_overlap,
            inliers,
            correlation,
            overlap,
            mirrored,
        )
        if (result.is_copy, result.correlation) > (best.is_copy, best.correlation):
            best = result
        if best.is_copy:
            break  # no need to try the mirror image
    return best


def _align(query: _Side, candidate: _Side, min_inliers: int) -> tuple[np.ndarray, int] | None:
    """A similarity transform query -> candidate fitted on ratio-tested matches, or None."""
    if query.descriptors is None or candidate.descriptors is None:
        return None
    if len(query.points) < min_inliers or len(candidate.points) < 2:
        return None
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    pairs = matcher.knnMatch(query.descriptors, candidate.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO * p[1].distance]
    if len(good) < max(min_inliers, 3):
        return None
    src = query.points[[m.queryIdx for m in good]]
    dst = candidate.points[[m.trainIdx for m in good]]
    transform, mask = cv2.estimateAffinePartial2D(
        src,
        dst,
        method=cv2.RANSAC,
        ransacReprojThreshold=RANSAC_PX,
        maxIters=2000,
        confidence=0.995,
    )
    if transform is None or mask is None:
        return None
    scale = float(np.hypot(transform[0, 0], transform[1, 0]))
    if not MIN_SCALE <= scale <= MAX_SCALE:
        return None
    return transform, int(mask.sum())


def _compare(
    query: np.ndarray, candidate: np.ndarray, transform: np.ndarray
) -> tuple[float, float]:
    """How alike the aligned pictures are where both have detail, and how much they overlap.

    The warped query and the candidate are compared cell by cell (CELLS x CELLS grid over the
    candidate): zero-mean normalised cross-correlation of the blurred pixels, in the cells the
    warped query covers and where both pictures have detail. Cells where either is flat (an
    added border, a caption bar's background, white corners of a rotation, sky) say nothing and
    are skipped. The median over the remaining cells is the correlation.
    """
    height, width = candidate.shape
    warped = cv2.warpAffine(
        np.ascontiguousarray(query).astype(np.float32),
        transform,
        (width, height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    cover = cv2.warpAffine(
        np.ones(query.shape, np.uint8),
        transform,
        (width, height),
        flags=cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    # Keep away from the overlap's edge, where the blur mixes in what lies outside it.
    cover = cv2.erode(cover, np.ones((5, 5), np.uint8)).astype(bool)
    overlap = float(cover.mean())
    a = cv2.GaussianBlur(warped, (0, 0), BLUR_SIGMA)
    b = cv2.GaussianBlur(candidate.astype(np.float32), (0, 0), BLUR_SIGMA)
    scores = []
    rows = np.linspace(0, height, CELLS + 1).astype(int)
    cols = np.linspace(0, width, CELLS + 1).astype(int)
    for top, bottom in itertools.pairwise(rows):
        for left, right in itertools.pairwise(cols):
            mask = cover[top:bottom, left:right]
            if mask.mean() < 0.9:
                continue
            x = a[top:bottom, left:right][mask]
            y = b[top:bottom, left:right][mask]
            if x.std() < MIN_DETAIL or y.std() < MIN_DETAIL:
                continue
            x = x - x.mean()
            y = y - y.mean()
            scores.append(float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum())))
    if len(scores) < MIN_CELLS:
        return 0.0, overlap
    return float(np.median(scores)), overlap
