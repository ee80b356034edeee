"""Geometric verification: is a query image an edited copy of a candidate, by local features?

ORB keypoints are matched with a ratio test (one-to-one), RANSAC fits a similarity transform
(translation, rotation, uniform scale), and then the verdict comes from the pixels, not from
the match count: the query is warped onto the candidate and the overlap is compared by
zero-mean normalised cross-correlation (NCC) of blurred grayscale thumbnails, over the whole
overlap or tile by tile, whichever is higher. An edited copy lines up (NCC near 1); a
look-alike, a repetitive texture or another photo of the same scene does not. Flat fill
touching the image edge (added borders, caption bars, the corners of a rotation) is left out
of the comparison. A mirrored copy is tried when the direct one fails. Rotations beyond 30
degrees (quarter turns) are out of scope here: the PDQ layer's dihedral variants cover them.

Why the defaults: on the scikit-image photos of the tuning set, every benchmark edit
(`search.edits`) of a photo reached an NCC of at least 0.97 with 37 inliers or more; the other
photo of a stereo pair (the same scene a few centimetres apart) reached 0.76; unrelated photos
and textures never got a plausible transform with more than 5 inliers. min_correlation 0.85
sits between 0.76 and 0.97, min_inliers 15 between 5 and 37.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Final

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

Gray = npt.NDArray[np.uint8]
Floats = npt.NDArray[np.float32]

# ORB: corners first found with this FAST threshold; low-contrast images (fewer than half the
# wanted keypoints) are analysed again with the low one.
FAST_THRESHOLD: Final = 20
FAST_THRESHOLD_LOW: Final = 5
# Lowe's ratio test on Hamming distances: repetitive textures fail it (many equal neighbours).
RATIO: Final = 0.8
RANSAC_PX: Final = 5.0  # reprojection error, in pixels of the analysed image (long side <= 512)
RANSAC_ITERS: Final = 2000
# The transform must look like an edit: uniform scale within these bounds, small rotation.
MIN_SCALE: Final = 1 / 8
MAX_SCALE: Final = 8.0
MAX_ROTATION_DEG: Final = 30.0
# Share of the ratio-test matches that the transform explains; a periodic pattern shifted by a
# period explains only a few of its (ambiguous) matches.
MIN_INLIER_SHARE: Final = 0.25
# Alignment check: thumbnails with this long side, blurred, compared by NCC.
ALIGN_SIDE: Final = 128
ALIGN_BLUR: Final = 0.7
FLAT_VARIANCE: Final = 4.0  # local variance (5x5) below which a pixel is flat
FILL_VARIANCE: Final = 9.0  # variance of a whole flat region below which it is fill
CONTENT_MARGIN: Final = 4  # thumbnail pixels trimmed from the content mask's edge
BLOCK: Final = 16  # tile side (thumbnail pixels) of the block-wise NCC
BLOCK_MIN_STD: Final = 2.0  # tiles flatter than this (in both images) are not compared
MIN_COMPARED: Final = 64  # fewer overlapping thumbnail pixels than this: nothing to compare

_EMPTY_POINTS: Final = np.zeros((0, 2), np.float32)
_EMPTY_DESCRIPTORS: Final = np.zeros((0, 32), np.uint8)


@dataclass(frozen=True, eq=False)
class Features:
    """Local features of one image, computed once and reusable against many candidates."""

    size: tuple[int, int]  # (width, height) of the analysed grayscale (long side <= `side`)
    points: Floats  # (n, 2) keypoint positions in the analysed grayscale
    descriptors: Gray  # (n, 32) ORB descriptors
    thumb: Gray  # grayscale, long side ALIGN_SIDE, for the alignment check
    content: Gray  # 1 where `thumb` is content, 0 on flat fill touching the edge
    n_features: int
    # The analysed grayscale, kept where the image may be tried mirrored (a query): the mirror's
    # keypoints are computed from it. Catalog-side features drop it (~50 kB instead of ~330 kB).
    gray: Gray | None = None
    flipped: bool = False  # these are the features of the mirror image

    @property
    def mirror(self) -> bool:
        """Whether `verify` tries the mirror image of this one when it is the query."""
        return self.gray is not None and not self.flipped

    @cached_property
    def mirrored(self) -> Features:
        """The features of the left-right mirror image (computed on first use, then kept)."""
        if self.gray is None:
            raise ValueError("features extracted with mirror=False have no mirror image")
        gray = np.ascontiguousarray(self.gray[:, ::-1])
        points, descriptors = _orb(gray, self.n_features)
        return Features(
            size=self.size,
            points=points,
            descriptors=descriptors,
            thumb=np.ascontiguousarray(self.thumb[:, ::-1]),
            content=np.ascontiguousarray(self.content[:, ::-1]),
            n_features=self.n_features,
            gray=gray,
            flipped=not self.flipped,
        )


@dataclass(frozen=True)
class Verification:
    """The outcome of comparing a query with one candidate."""

    is_copy: bool
    inliers: int
    correlation: float  # similarity of the aligned overlap (NCC, see `_similarity`), -1..1
    overlap: float  # fraction of the candidate's content covered by the warped query
    mirrored: bool
    reason: str = ""  # why not a copy (empty when it is)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "is_copy": self.is_copy,
            "inliers": self.inliers,
            "correlation": round(self.correlation, 4),
            "overlap": round(self.overlap, 4),
            "mirrored": self.mirrored,
            "reason": self.reason,
        }


def extract(
    image: Image.Image, *, side: int = 512, n_features: int = 500, mirror: bool = True
) -> Features:
    """Local features of an image, on a grayscale copy whose long side is at most `side`.

    `mirror=False` for catalog images: they are never tried mirrored (the query is), so the
    grayscale that the mirror image would be computed from is not kept.
    """
    gray: Gray = np.asarray(image.convert("L"), dtype=np.uint8)
    height, width = gray.shape[:2]
    if width and height and max(width, height) > side:
        factor = side / max(width, height)
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        gray = _resize(gray, size)
    gray = np.ascontiguousarray(gray)
    points, descriptors = _orb(gray, n_features)
    thumb, content = _thumbnail(gray)
    height, width = gray.shape[:2]
    return Features(
        size=(width, height),
        points=points,
        descriptors=descriptors,
        thumb=thumb,
        content=content,
        n_features=n_features,
        gray=gray if mirror else None,
    )


def verify(
    query: Features,
    candidate: Features,
    *,
    min_inliers: int = 15,
    min_correlation: float = 0.85,
    min_overlap: float = 0.25,
) -> Verification:
    """Decide whether `query` is an edited copy of `candidate`, trying its mirror image too."""
    direct = _verify_once(query, candidate, min_inliers, min_correlation, min_overlap)
    if direct.is_copy or not query.mirror:
        return direct
    flipped = _verify_once(query.mirrored, candidate, min_inliers, min_correlation, min_overlap)
    if flipped.is_copy:
        return flipped
    return max(direct, flipped, key=lambda v: (v.inliers, v.correlation))


@dataclass(frozen=True)
class Measure:
    """Raw evidence for one orientation of the query (what `verify` thresholds)."""

    matches: int = 0  # one-to-one matches that pass the ratio test
    inliers: int = 0
    scale: float = 0.0
    rotation: float = 0.0  # degrees
    correlation: float = 0.0
    overlap: float = 0.0
    reason: str = ""  # empty when a plausible transform was found

    @property
    def inlier_share(self) -> float:
        """Inliers as a share of the matches."""
        return self.inliers / self.matches if self.matches else 0.0


def measure(query: Features, candidate: Features, *, align_from: int = 4) -> Measure:
    """Match, fit and (from `align_from` inliers on) align `query` onto `candidate`."""
    if len(query.descriptors) < 2 or len(candidate.descriptors) < 2:
        return Measure(reason="too few features")
    query_idx, candidate_idx = _match(query.descriptors, candidate.descriptors)
    matches = len(query_idx)
    if matches < max(4, align_from):
        return Measure(matches=matches, reason="too few matches")
    transform, mask = cv2.estimateAffinePartial2D(
        query.points[query_idx],
        candidate.points[candidate_idx],
        method=cv2.RANSAC,
        ransacReprojThreshold=RANSAC_PX,
        maxIters=RANSAC_ITERS,
        confidence=0.995,
    )
    if transform is None or mask is None:
        return Measure(matches=matches, reason="no transform")
    inliers = int(mask.sum())
    scale = math.hypot(transform[0, 0], transform[1, 0])
    rotation = math.degrees(math.atan2(transform[1, 0], transform[0, 0]))
    found = Measure(matches=matches, inliers=inliers, scale=scale, rotation=rotation)
    if not MIN_SCALE <= scale <= MAX_SCALE or abs(rotation) > MAX_ROTATION_DEG:
        return replace(found, reason="implausible transform")
    if inliers < max(4, align_from) or found.inlier_share < MIN_INLIER_SHARE:
        return replace(found, reason="too few inliers")
    correlation, overlap = _align(query, candidate, transform)
    return Measure(matches, inliers, scale, rotation, correlation, overlap)


def matched_points(query: Features, candidate: Features) -> tuple[Floats, Floats]:
    """The positions of the one-to-one ratio-test matches: (query points, candidate points)."""
    if len(query.descriptors) < 2 or len(candidate.descriptors) < 2:
        return _EMPTY_POINTS, _EMPTY_POINTS
    query_idx, candidate_idx = _match(query.descriptors, candidate.descriptors)
    return query.points[query_idx], candidate.points[candidate_idx]


def _verify_once(
    query: Features,
    candidate: Features,
    min_inliers: int,
    min_correlation: float,
    min_overlap: float,
) -> Verification:
    """One orientation of the query, thresholded."""
    found = measure(query, candidate, align_from=min_inliers)
    reason = found.reason
    if not reason and found.inliers < min_inliers:
        reason = "too few inliers"
    elif not reason and found.correlation < min_correlation:
        reason = "aligned pixels differ"
    elif not reason and found.overlap < min_overlap:
        reason = "overlap too small"
    return Verification(
        is_copy=not reason,
        inliers=found.inliers,
        correlation=found.correlation,
        overlap=found.overlap,
        mirrored=query.flipped,
        reason=reason,
    )


def _orb(gray: Gray, n_features: int) -> tuple[Floats, Gray]:
    """ORB keypoint positions and descriptors; none for images too small to describe."""
    if min(gray.shape[:2]) < 2 * 31 + 1:  # ORB needs a patch of 31 px around each keypoint
        return _EMPTY_POINTS, _EMPTY_DESCRIPTORS
    keypoints: Any = ()
    descriptors = None
    for threshold in (FAST_THRESHOLD, FAST_THRESHOLD_LOW):
        orb = cv2.ORB.create(nfeatures=n_features, fastThreshold=threshold)
        keypoints, descriptors = orb.detectAndCompute(gray, None)
        if len(keypoints) >= n_features // 2:
            break
    if descriptors is None or not keypoints:
        return _EMPTY_POINTS, _EMPTY_DESCRIPTORS
    points = np.array([keypoint.pt for keypoint in keypoints], dtype=np.float32)
    return points, np.ascontiguousarray(descriptors, dtype=np.uint8)


def _thumbnail(gray: Gray) -> tuple[Gray, Gray]:
    """Thumbnail (long side ALIGN_SIDE at most) and its content mask."""
    height, width = gray.shape[:2]
    if not width or not height:
        return np.zeros((1, 1), np.uint8), np.zeros((1, 1), np.uint8)
    factor = min(1.0, ALIGN_SIDE / max(width, height))
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    small = _resize(gray, size) if factor < 1 else gray
    return np.ascontiguousarray(small), _content(small)


def _resize(gray: Gray, size: tuple[int, int]) -> Gray:
    """Resize (width, height): area averaging down, bilinear up."""
    shrink = size[0] < gray.shape[1]
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(gray, size, interpolation=interpolation), dtype=np.uint8)


def _blur(small: Gray) -> Floats:
    """The image the NCC compares: float grayscale, slightly blurred against JPEG noise."""
    blurred = cv2.GaussianBlur(small.astype(np.float32), (0, 0), ALIGN_BLUR)
    return np.asarray(blurred, dtype=np.float32)


def _content(small: Gray) -> Gray:
    """1 on content, 0 on flat regions that touch the edge (borders, bars, rotation corners)."""
    values = small.astype(np.float32)
    mean = cv2.blur(values, (5, 5))
    variance = cv2.blur(values * values, (5, 5)) - mean * mean
    flat = (variance < FLAT_VARIANCE).astype(np.uint8)
    count, labels = cv2.connectedComponents(flat, connectivity=4)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    # Fill is one colour throughout; a sky or a wall is locally flat but shades across.
    sizes = np.bincount(labels.ravel(), minlength=count).astype(np.float64)
    sums = np.bincount(labels.ravel(), weights=values.ravel(), minlength=count)
    squares = np.bincount(labels.ravel(), weights=(values * values).ravel(), minlength=count)
    means = sums / np.maximum(sizes, 1)
    spread = squares / np.maximum(sizes, 1) - means * means
    uniform = np.flatnonzero(spread < FILL_VARIANCE)
    fill = np.isin(labels, np.intersect1d(edge[edge > 0], uniform))
    content = (~fill).astype(np.uint8)
    # The 5x5 window and the blur smear the fill's edge into the content: trim it.
    kernel = np.ones((2 * CONTENT_MARGIN + 1,) * 2, np.uint8)
    trimmed = cv2.erode(content, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=1)
    return np.asarray(trimmed, dtype=np.uint8)


def _match(query: Gray, candidate: Gray) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """One-to-one matches that pass the ratio test: (query indices, candidate indices)."""
    distances, indices = cv2.batchDistance(
        query, candidate, cv2.CV_32S, normType=cv2.NORM_HAMMING, K=2
    )
    if distances.shape[1] < 2:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    best, second = distances[:, 0], distances[:, 1]
    keep = np.flatnonzero((best < RATIO * second) & (indices[:, 0] >= 0))
    # One-to-one: where several query points chose the same candidate point, keep the closest.
    keep = keep[np.argsort(best[keep], kind="stable")]
    _, first = np.unique(indices[keep, 0], return_index=True)
    keep = keep[first]
    return keep.astype(np.intp), indices[keep, 0].astype(np.intp)


def _align(
    query: Features, candidate: Features, transform: npt.NDArray[Any]
) -> tuple[float, float]:
    """NCC of the query warped onto the candidate's thumbnail, and the content overlap."""
    thumb_h, thumb_w = candidate.thumb.shape
    cand_w, cand_h = candidate.size
    to_thumb = np.diag([thumb_w / cand_w, thumb_h / cand_h, 1.0])
    full = to_thumb @ np.vstack([transform, [0.0, 0.0, 1.0]])  # query pixels -> candidate thumb
    # Resample the query to the candidate thumbnail's scale first (area averaging), so that
    # both sides carry the same detail; then warp by what is left (rotation, shift).
    query_w, query_h = query.size
    source = query.gray if query.gray is not None else query.thumb
    from_source = np.diag([query_w / source.shape[1], query_h / source.shape[0], 1.0])
    on_source = full @ from_source  # source pixels -> candidate thumb
    scale = math.hypot(on_source[0, 0], on_source[1, 0])
    size = (max(1, round(source.shape[1] * scale)), max(1, round(source.shape[0] * scale)))
    small = _blur(_resize(source, size))
    residual = on_source @ np.diag([source.shape[1] / size[0], source.shape[0] / size[1], 1.0])
    warped = np.asarray(
        cv2.warpAffine(
            small,
            residual[:2],
            (thumb_w, thumb_h),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        ),
        dtype=np.float32,
    )
    # The query's content mask lives on its own thumbnail grid.
    mask_h, mask_w = query.content.shape
    from_mask = np.diag([query_w / mask_w, query_h / mask_h, 1.0])
    covered = np.asarray(
        cv2.warpAffine(
            query.content,
            (full @ from_mask)[:2],
            (thumb_w, thumb_h),
            flags=cv2.INTER_NEAREST,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        ),
        dtype=np.uint8,
    )
    covered &= candidate.content
    content = int(candidate.content.sum())
    overlap = float(covered.sum()) / content if content else 0.0
    selected = covered.astype(bool)
    if int(selected.sum()) < MIN_COMPARED:
        return 0.0, overlap
    return _similarity(warped, _blur(candidate.thumb), selected), overlap


def _similarity(warped: Floats, thumb: Floats, selected: npt.NDArray[np.bool_]) -> float:
    """NCC over the whole overlap, or the mean NCC of its blocks when that is higher.

    The block-wise figure tolerates photometric edits whose effect differs across the image
    (brightening clips each colour channel at its own point, so two hues get two gains).
    """
    whole = _ncc(warped[selected], thumb[selected])
    return max(whole, _block_ncc(warped, thumb, selected))


def _block_ncc(a: Floats, b: Floats, selected: npt.NDArray[np.bool_]) -> float:
    """Mean NCC of BLOCK x BLOCK tiles that are mostly inside the mask and not flat."""
    height, width = a.shape
    rows, cols = -(-height // BLOCK), -(-width // BLOCK)

    def tiles(values: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        padded = np.zeros((rows * BLOCK, cols * BLOCK), np.float64)
        padded[:height, :width] = values
        return padded.reshape(rows, BLOCK, cols, BLOCK)

    mask = tiles(selected)
    x, y = tiles(a) * mask, tiles(b) * mask
    count = mask.sum(axis=(1, 3))
    n = np.maximum(count, 1.0)
    mean_x, mean_y = x.sum(axis=(1, 3)) / n, y.sum(axis=(1, 3)) / n
    var_x = (x * x).sum(axis=(1, 3)) / n - mean_x**2
    var_y = (y * y).sum(axis=(1, 3)) / n - mean_y**2
    cov = (x * y).sum(axis=(1, 3)) / n - mean_x * mean_y
    used = (count >= BLOCK * BLOCK / 2) & (np.maximum(var_x, var_y) >= BLOCK_MIN_STD**2)
    if not used.any():
        return 0.0
    both = (var_x > 1e-6) & (var_y > 1e-6)
    ncc = np.where(both, cov / np.sqrt(np.maximum(var_x * var_y, 1e-12)), 0.0)
    return float(ncc[used].mean())


def _ncc(a: Floats, b: Floats) -> float:
    """Zero-mean normalised cross-correlation of two equally long vectors."""
    a = a - a.mean()
    b = b - b.mean()
    denominator = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
    return float(np.dot(a, b)) / denominator if denominator > 1e-6 else 0.0
