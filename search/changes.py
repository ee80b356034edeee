"""What changed between a copy and its original: local regions, and whole-picture edits apart.

The query is aligned with its original by ORB keypoints and a RANSAC similarity transform at a
finer resolution than the verifier's (long side FIT_SIDE), its mirror image tried too. The
original is warped onto the query, its colours are mapped onto the query's (a robust affine
colour fit, then a monotone curve per channel, so brightening that clips, greyscale or a tint
of the whole picture is matched, not reported), and the two are compared densely, pixel by
pixel, not only where there are keypoints: the colour difference of lightly blurred pixels,
the smallest over one-pixel shifts (so that resampling and a slightly imperfect fit cost
nothing), averaged over a small window, and discounted where both pictures have edges. A
pixel changed where that difference is above both an absolute floor and a multiple of the
picture's own typical difference (the noise of a recompression). Changed pixels are cleaned
up (opening, closing), grouped into connected components, and each large enough one is a
region, boxed in the upload's pixels, its kind told from simple cues (see `_kind`). Where
keypoints find no transform (smooth pictures), a dense fit (ECC) aligns them. Whole-picture
edits (crop, mirror, borders, caption bars, rotation, scale, greyscale, brightness, a
recolouring) are read from the transform, the uncovered part of the query and the colour fit,
and are never regions.

Where the thresholds come from: README, "What changed" (`imgsearch eval changes`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Final

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from search import verify

logger = logging.getLogger(__name__)

Floats = npt.NDArray[np.float32]
Mask = npt.NDArray[np.bool_]

FIT_SIDE: Final = 1024  # long side of the grayscale the transform is fitted on
FIT_FEATURES: Final = 3000
FIT_RANSAC_PX: Final = 4.0  # reprojection error at FIT_SIDE
MIN_INLIERS: Final = 12
MIN_INLIER_SHARE: Final = 0.2
STRONG_INLIER_SHARE: Final = 0.5  # a fit this good is kept without trying the mirror image
BIN_SPAN: Final = 4096.0  # wider than any colour value's range in the curve's bins
# Where keypoints fail (low texture), a dense fit: ECC (an affine warp that maximises the
# correlation of blurred grayscales, long side DENSE_SIDE) from the whole picture resized.
DENSE_SIDE: Final = 256
DENSE_MIN_CORRELATION: Final = 0.9
DENSE_MAX_ANISOTROPY: Final = 1.1  # the affine fit must stay close to a similarity
DENSE_MIN_GAIN: Final = 0.01  # correlation the warp must add to the plain resize's
COMPARE_SIDE: Final = 640  # long side of the query's grid the pixels are compared on
BLUR_SIGMA: Final = 1.0  # against JPEG noise, on the compare grid
SHIFT: Final = 1  # the difference is the smallest over shifts of up to this many pixels
WINDOW: Final = 7  # box window (compare pixels) the difference is averaged over
EDGE_MARGIN: Final = 4  # compare pixels left out along the edge of the overlap
# A pixel changed: difference (0..255 scale) above the floor and above NOISE_FACTOR times the
# picture's NOISE_PERCENTILE difference.
DIFF_FLOOR: Final = 6.0
NOISE_PERCENTILE: Final = 90.0
NOISE_FACTOR: Final = 4.0
# The difference is discounted where both pictures have edges (what resampling and JPEG move
# most): divided by 1 + (the smaller of their local gradient magnitudes) / STRUCTURE_SCALE.
STRUCTURE_SCALE: Final = 200.0
# The colour fit: a query channel at or above SATURATED (at or below 255 - SATURATED) where the
# original's is not was clipped by the edit; the affine fit needs MIN_FIT_PIXELS unclipped ones.
SATURATED: Final = 253
MIN_FIT_PIXELS: Final = 500
OPEN_PX: Final = 3
CLOSE_PX: Final = 9
MIN_REGION_SHARE: Final = 0.002  # of the overlap: smaller components are noise
# Whole-picture edits.
MIN_CROP: Final = 0.03  # share of the original not covered before "cropped" is said
MIN_BAR: Final = 0.03  # a strip of the query uncovered, as a share of its side
MIN_ROTATION_DEG: Final = 0.5
MIN_RESIZE: Final = 0.03
GREY_SPREAD: Final = 3.0  # mean channel spread of a greyscale picture
BRIGHTNESS_DELTA: Final = 10.0  # mean luminance difference (0..255) for "brightness changed"
RECOLOUR_DELTA: Final = 12.0  # mean chroma difference for "recoloured"
# Kinds (see `_kind`).
TEXT_TEXTURE: Final = 1.5  # text: the query's region has this many times the original's texture
TEXT_STRONG: Final = 0.55  # ... and at most this share of it differs strongly (thin strokes)
STRONG_DIFF: Final = 40.0  # a strong difference of one channel (0..255)
COLOUR_NCC: Final = 0.7  # colour changed: the luminance still correlates ...
COLOUR_TO_LUMA: Final = 0.35  # ... and the chroma moved at least this much against the luma
SMOOTHED_RATIO: Final = 0.75  # removed: the query's texture under this share of the original's

KINDS: Final = ("text added", "content replaced", "content removed or smoothed", "colour changed")


@dataclass(frozen=True)
class Region:
    """One changed region of the query."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the uploaded image's pixels
    share: float  # of the query picture's area
    kind: (
        str  # "text added" | "content replaced" | "content removed or smoothed" | "colour changed"
    )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"box": list(self.box), "share": round(self.share, 4), "kind": self.kind}


@dataclass(frozen=True)
class Changes:
    """What changed in a copy compared with its original."""

    against: str  # the original's catalog id
    scale: float  # query pixels per original pixel
    rotation_deg: float
    mirrored: bool
    overlap_query: float  # share of the query that the original covers
    overlap_original: float  # share of the original that the query covers
    changed_share: float  # share of the query covered by the regions' boxes
    regions: tuple[Region, ...]
    global_edits: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape: against, transform, overlap, changed_share, regions, global."""
        return {
            "against": self.against,
            "transform": {
                "scale": round(self.scale, 4),
                "rotation_deg": round(self.rotation_deg, 2),
                "mirrored": self.mirrored,
            },
            "overlap": {
                "query": round(self.overlap_query, 4),
                "original": round(self.overlap_original, 4),
            },
            "changed_share": round(self.changed_share, 4),
            "regions": [region.as_dict() for region in self.regions],
            "global": list(self.global_edits),
        }

    def summary(self) -> str:
        """One phrase for the evidence sentence."""
        if not self.regions:
            local = "no local change"
        else:
            kinds = ", ".join(dict.fromkeys(region.kind for region in self.regions))
            count = len(self.regions)
            what = "a region" if count == 1 else f"{count} regions"
            local = f"{what} of {_percent(self.changed_share)} changed, {kinds}"
        return f"{local}; {', '.join(self.global_edits)}" if self.global_edits else local


def what_changed(
    query: Image.Image,
    original: Image.Image,
    *,
    against: str,
    query_size: tuple[int, int] | None = None,
) -> Changes | None:
    """Map what changed in `query` (an RGB copy) compared with `original` (RGB).

    `query_size` is the upload's (width, height) when `query` was decoded smaller; boxes are in
    its pixels. None when no transform can be fitted (logged).
    """
    upload_w, upload_h = query_size or query.size
    if min(query.size) < 16 or min(original.size) < 16:
        logger.info("what changed against %s: picture too small to align", against)
        return None
    fitted = _fit(query, original)
    if isinstance(fitted, str):
        dense = _fit_dense(query, original)
        if dense is None:
            logger.info("what changed against %s: no transform fitted (%s)", against, fitted)
            return None
        fitted = dense
    transform, mirrored = fitted  # query pixels (mirrored if so) -> original pixels
    seen = ImageOps.mirror(query) if mirrored else query
    factor = min(1.0, COMPARE_SIDE / max(seen.size))
    grid = (max(1, round(seen.width * factor)), max(1, round(seen.height * factor)))
    q = _rgb(seen, grid)
    to_query = np.diag([seen.width / grid[0], seen.height / grid[1], 1.0])
    on_grid = transform @ to_query  # compare grid -> original pixels
    warped, covered = _warp(original, on_grid, grid)
    overlap_original = _overlap_original(on_grid, grid, original.size)
    overlap_query = float(covered.mean())
    valid = _erode(covered, EDGE_MARGIN)
    if int(valid.sum()) < 256:
        logger.info("what changed against %s: overlap too small to compare", against)
        return None
    normalised = _normalise(warped, q, valid)
    score = _difference(q, normalised) / (1.0 + _structure(q, normalised) / STRUCTURE_SCALE)
    changed = changed_pixels(score, valid, DIFF_FLOOR, NOISE_FACTOR)
    regions = _regions(changed, valid, q, normalised, grid, mirrored, (upload_w, upload_h))
    scale = 1.0 / math.hypot(transform[0, 0], transform[1, 0]) * (upload_w / query.width)
    rotation = -math.degrees(math.atan2(transform[1, 0], transform[0, 0]))
    edits = _global_edits(
        q, warped, covered, valid, scale, rotation, mirrored, overlap_original, grid
    )
    union = np.zeros((upload_h, upload_w), bool)
    for region in regions:
        x0, y0, x1, y1 = region.box
        union[y0:y1, x0:x1] = True
    return Changes(
        against=against,
        scale=scale,
        rotation_deg=rotation,
        mirrored=mirrored,
        overlap_query=overlap_query,
        overlap_original=overlap_original,
        changed_share=float(union.mean()),
        regions=tuple(regions),
        global_edits=tuple(edits),
    )


def changed_pixels(score: Floats, valid: Mask, floor: float, factor: float) -> Mask:
    """Where the difference is above `floor` and `factor` times the picture's typical one."""
    noise = float(np.percentile(score[valid], NOISE_PERCENTILE))
    return (score > max(floor, factor * noise)) & valid


def _percent(share: float) -> str:
    """A share as a short percentage."""
    return f"{share * 100:.0f}%" if share >= 0.01 else f"{share * 100:.1f}%"


def _gray(image: Image.Image, side: int) -> tuple[Image.Image, float]:
    """The image with long side at most `side` and the factor applied."""
    factor = min(1.0, side / max(image.size))
    if factor >= 1.0:
        return image, 1.0
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.Resampling.BOX), factor


def _fit(query: Image.Image, original: Image.Image) -> tuple[npt.NDArray[Any], bool] | str:
    """The similarity transform from query pixels to original pixels, and whether mirrored."""
    q_small, q_factor = _gray(query, FIT_SIDE)
    o_small, o_factor = _gray(original, FIT_SIDE)
    q_features = verify.extract(q_small, side=FIT_SIDE, n_features=FIT_FEATURES, mirror=True)
    o_features = verify.extract(o_small, side=FIT_SIDE, n_features=FIT_FEATURES, mirror=False)
    best: tuple[int, npt.NDArray[Any], bool] | None = None
    reason = "too few matches"
    for features in (q_features, q_features.mirrored):
        q_points, o_points = verify.matched_points(features, o_features)
        if len(q_points) < MIN_INLIERS:
            continue
        transform, mask = cv2.estimateAffinePartial2D(
            q_points,
            o_points,
            method=cv2.RANSAC,
            ransacReprojThreshold=FIT_RANSAC_PX,
            maxIters=5000,
            confidence=0.999,
        )
        if transform is None or mask is None:
            reason = "no transform"
            continue
        inliers = int(mask.sum())
        scale = math.hypot(transform[0, 0], transform[1, 0])
        rotation = math.degrees(math.atan2(transform[1, 0], transform[0, 0]))
        if not verify.MIN_SCALE <= scale <= verify.MAX_SCALE:
            reason = "implausible scale"
            continue
        if abs(rotation) > verify.MAX_ROTATION_DEG:
            reason = "implausible rotation"
            continue
        if inliers < MIN_INLIERS or inliers < MIN_INLIER_SHARE * len(q_points):
            reason = "too few inliers"
            continue
        if best is None or inliers > best[0]:
            best = (inliers, transform, features.flipped)
        if inliers >= STRONG_INLIER_SHARE * len(q_points):
            break  # the picture as it is fits well: its mirror image need not be tried
    if best is None:
        return reason
    _, transform, mirrored = best
    # Fitted on the reduced grayscales: from full query pixels to full original pixels.
    full = np.diag([1 / o_factor, 1 / o_factor, 1.0]) @ np.vstack([transform, [0.0, 0.0, 1.0]])
    return full @ np.diag([q_factor, q_factor, 1.0]), mirrored


def _fit_dense(query: Image.Image, original: Image.Image) -> tuple[npt.NDArray[Any], bool] | None:
    """An affine transform from query pixels to original pixels by ECC, or None.

    Starts from the original resized to the query's frame (no crop), tries the mirror image
    too, and keeps a fit whose correlation reaches DENSE_MIN_CORRELATION.
    """
    factor = DENSE_SIDE / max(query.size)
    size = (max(8, round(query.width * factor)), max(8, round(query.height * factor)))

    def gray(image: Image.Image) -> Floats:
        small = np.asarray(image.convert("L").resize(size, Image.Resampling.BOX), np.float32)
        return np.asarray(cv2.GaussianBlur(small, (0, 0), 1.5), dtype=np.float32)

    target = gray(original)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-5)
    best: tuple[float, npt.NDArray[Any], bool] | None = None
    for mirrored in (False, True):
        template = gray(ImageOps.mirror(query) if mirrored else query)
        identity = np.eye(2, 3, dtype=np.float32)
        try:
            correlation, warp = cv2.findTransformECC(
                template, target, identity.copy(), cv2.MOTION_AFFINE, criteria
            )
        except cv2.error:
            correlation, warp = -1.0, identity
        # On a smooth picture the optimum is shallow and ECC drifts: the plain resize stands
        # unless the warp explains clearly more.
        unmoved = _correlation(template, target)
        if correlation < unmoved + DENSE_MIN_GAIN:
            correlation, warp = unmoved, identity
        singular = np.linalg.svd(warp[:, :2].astype(np.float64), compute_uv=False)
        rotation = math.degrees(math.atan2(warp[1, 0], warp[0, 0]))
        if (
            correlation < DENSE_MIN_CORRELATION
            or singular[0] > DENSE_MAX_ANISOTROPY * singular[1]
            or abs(rotation) > verify.MAX_ROTATION_DEG
        ):
            continue
        if best is None or correlation > best[0]:
            best = (float(correlation), warp, mirrored)
    if best is None:
        return None
    _, warp, mirrored = best
    to_small = np.diag([size[0] / query.width, size[1] / query.height, 1.0])
    to_original = np.diag([original.width / size[0], original.height / size[1], 1.0])
    full = to_original @ np.vstack([warp.astype(np.float64), [0.0, 0.0, 1.0]]) @ to_small
    return full, mirrored


def _correlation(a: Floats, b: Floats) -> float:
    """Zero-mean normalised cross-correlation of two equally shaped images."""
    x, y = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return float((x * y).sum()) / denominator if denominator > 1e-6 else 0.0


def _rgb(image: Image.Image, size: tuple[int, int]) -> Floats:
    """Float RGB at `size` (area averaging)."""
    resized = image.convert("RGB").resize(size, Image.Resampling.BOX)
    return np.asarray(resized, dtype=np.float32)


def _warp(
    original: Image.Image, on_grid: npt.NDArray[Any], grid: tuple[int, int]
) -> tuple[Floats, Mask]:
    """The original resampled onto the compare grid, and where it covers it."""
    scale = math.hypot(on_grid[0, 0], on_grid[1, 0])  # original pixels per grid pixel
    source = original.convert("RGB")
    matrix = on_grid
    if scale > 1.0:  # shrink first (area averaging), so both sides carry the same detail
        size = (max(1, round(source.width / scale)), max(1, round(source.height / scale)))
        matrix = np.diag([size[0] / source.width, size[1] / source.height, 1.0]) @ on_grid
        source = source.resize(size, Image.Resampling.BOX)
    pixels = np.asarray(source, dtype=np.float32)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(pixels, matrix[:2], grid, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    ones = np.ones(pixels.shape[:2], np.uint8)
    covered = cv2.warpAffine(
        ones, matrix[:2], grid, flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderValue=0
    )
    return np.asarray(warped, dtype=np.float32), np.asarray(covered, dtype=bool)


def _overlap_original(
    on_grid: npt.NDArray[Any], grid: tuple[int, int], size: tuple[int, int]
) -> float:
    """Share of the original's area that the query covers."""
    width, height = size
    corners = np.array([[0, 0, 1], [grid[0], 0, 1], [grid[0], grid[1], 1], [0, grid[1], 1]])
    points = (on_grid @ corners.T.astype(np.float64))[:2].T.astype(np.float32)
    frame = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    area, _ = cv2.intersectConvexConvex(points, frame)
    return float(min(1.0, max(0.0, area / (width * height))))


def _erode(mask: Mask, pixels: int) -> Mask:
    """The mask shrunk by `pixels`, the picture's edge counting as outside."""
    if pixels <= 0:
        return mask
    kernel = np.ones((2 * pixels + 1,) * 2, np.uint8)
    eroded = cv2.erode(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return np.asarray(eroded, dtype=bool)


def _normalise(warped: Floats, query: Floats, valid: Mask) -> Floats:
    """The warped original with its colours mapped onto the query's over the overlap.

    An affine colour transform (3x3 and offset) fitted by least squares, twice refitted without
    the worst-fitting fifth of the pixels (local edits, highlights that clipped), then one
    monotone curve per channel (binned medians) for what is not linear (clipping, gamma).
    """
    rows = np.flatnonzero(valid.ravel())
    if len(rows) > 60000:
        rows = rows[:: len(rows) // 60000]
    source = warped.reshape(-1, 3)[rows].astype(np.float64)
    target = query.reshape(-1, 3)[rows].astype(np.float64)
    design = np.hstack([source, np.ones((len(rows), 1))])
    # Pixels the edit clipped (brightened to white, darkened to black, where the original was
    # not) say nothing linear: the affine fit leaves them out, the curve learns the clipping.
    low = 255 - SATURATED
    by_channel = ((target >= SATURATED) & (source < SATURATED)) | ((target <= low) & (source > low))
    clipped: Mask = np.asarray(by_channel.any(axis=1), dtype=bool)
    if int((~clipped).sum()) < MIN_FIT_PIXELS:
        clipped[:] = False
    keep = ~clipped
    weights: npt.NDArray[Any] = np.zeros((4, 3))
    for _ in range(3):
        weights, *_ = np.linalg.lstsq(design[keep], target[keep], rcond=None)
        residual = np.abs(design @ weights - target).max(axis=1)
        keep = (residual <= np.percentile(residual[~clipped], 80)) & ~clipped
    predicted = warped.reshape(-1, 3).astype(np.float64) @ weights[:3] + weights[3]
    keep |= clipped
    sample = design[keep] @ weights
    out = np.empty_like(predicted)
    edges = np.linspace(-64.0, 320.0, 97)
    centres = edges[:-1]
    for channel in range(3):
        values, wanted = sample[:, channel], target[keep, channel]
        which = np.digitize(values, edges) - 1
        inside = (which >= 0) & (which < len(centres))
        xs, counts = _bin_medians(which[inside], values[inside], min_count=20)
        ys, _ = _bin_medians(which[inside], wanted[inside], min_count=20)
        if len(xs) < 2:
            out[:, channel] = predicted[:, channel]
            continue
        curve = _monotone(ys, counts)
        out[:, channel] = np.interp(predicted[:, channel], xs, curve)
    return np.clip(out, 0, 255).reshape(warped.shape).astype(np.float32)


def _bin_medians(
    bins: npt.NDArray[Any], values: npt.NDArray[Any], *, min_count: int
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """(median of `values` in each bin, the bin's count), bins in order, those with at least
    `min_count` members: one sort of (bin, value) keys instead of a pass per bin."""
    if len(bins) == 0:
        return np.zeros(0), np.zeros(0)
    # Each bin's values moved to a range of their own (values lie within +-BIN_SPAN / 2), so one
    # plain sort orders by bin, then value.
    keys = np.sort(bins.astype(np.float64) * BIN_SPAN + values)
    counts_all = np.bincount(bins)
    ends = np.cumsum(counts_all)
    starts_all = ends - counts_all
    ranked = keys - np.repeat(np.arange(len(counts_all)) * BIN_SPAN, counts_all)
    full = counts_all >= min_count
    starts, counts = starts_all[full], counts_all[full]
    medians = (ranked[starts + (counts - 1) // 2] + ranked[starts + counts // 2]) / 2
    return medians.astype(np.float64), counts.astype(np.float64)


def _monotone(values: npt.NDArray[Any], weights: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The closest non-decreasing sequence in weighted least squares (pool adjacent violators).

    A running maximum would let one sparse bin (a few stars in a dark picture) lift every
    brighter level after it.
    """
    blocks: list[list[float]] = []  # [mean, weight, length]
    for value, weight in zip(values.tolist(), weights.tolist(), strict=True):
        blocks.append([value, weight, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            mean, total, length = blocks.pop()
            previous = blocks[-1]
            merged = previous[1] + total
            previous[0] = (previous[0] * previous[1] + mean * total) / merged
            previous[1] = merged
            previous[2] += length
    return np.concatenate([np.full(int(length), mean) for mean, _, length in blocks])


def _difference(query: Floats, normalised: Floats) -> Floats:
    """Per pixel: colour distance of blurred pixels, smallest over small shifts, window mean."""
    a = cv2.GaussianBlur(query, (0, 0), BLUR_SIGMA)
    b = cv2.GaussianBlur(normalised, (0, 0), BLUR_SIGMA)
    height, width = a.shape[:2]
    pad = SHIFT
    padded = cv2.copyMakeBorder(b, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    best = np.full((height, width), np.inf, np.float32)
    for dy in range(-pad, pad + 1):
        for dx in range(-pad, pad + 1):
            moved = padded[pad + dy : pad + dy + height, pad + dx : pad + dx + width]
            distance = np.sqrt(((a - moved) ** 2).sum(axis=2) / 3.0)
            np.minimum(best, distance, out=best)
    return np.asarray(cv2.blur(best, (WINDOW, WINDOW)), dtype=np.float32)


def _structure(query: Floats, normalised: Floats) -> Floats:
    """Per pixel: the smaller of the two pictures' local gradient magnitudes (window mean)."""
    out: list[Floats] = []
    for picture in (query, normalised):
        luma = cv2.GaussianBlur(_luma(picture), (0, 0), BLUR_SIGMA)
        gx = cv2.Sobel(luma, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(luma, cv2.CV_32F, 0, 1, ksize=3)
        size = 2 * SHIFT + 1
        peak = cv2.dilate(np.sqrt(gx * gx + gy * gy), np.ones((size, size), np.uint8))
        out.append(np.asarray(cv2.blur(peak, (WINDOW, WINDOW)), dtype=np.float32))
    return np.minimum(out[0], out[1])


def _regions(
    changed: Mask,
    valid: Mask,
    query: Floats,
    normalised: Floats,
    grid: tuple[int, int],
    mirrored: bool,
    upload: tuple[int, int],
) -> list[Region]:
    """Connected components of the cleaned changed pixels, as regions in upload pixels."""
    mask: npt.NDArray[Any] = changed.astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((OPEN_PX, OPEN_PX), np.uint8))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((CLOSE_PX, CLOSE_PX), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    minimum = MIN_REGION_SHARE * float(valid.sum())
    sx, sy = upload[0] / grid[0], upload[1] / grid[1]
    out: list[Region] = []
    for label in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[label])
        if area < minimum:
            continue
        x0, x1 = x, x + w
        if mirrored:
            x0, x1 = grid[0] - x1, grid[0] - x0
        box = (
            max(0, math.floor(x0 * sx)),
            max(0, math.floor(y * sy)),
            min(upload[0], math.ceil(x1 * sx)),
            min(upload[1], math.ceil((y + h) * sy)),
        )
        share = (box[2] - box[0]) * (box[3] - box[1]) / (upload[0] * upload[1])
        component = labels[y : y + h, x : x + w] == label
        raw = changed[y : y + h, x : x + w] & component
        kind = _kind(query[y : y + h, x : x + w], normalised[y : y + h, x : x + w], raw)
        out.append(Region(box=box, share=share, kind=kind))
    out.sort(key=lambda region: -region.share)
    return out


def _luma(rgb: Floats) -> Floats:
    """Rec. 601 luminance."""
    return np.asarray(rgb @ np.array([0.299, 0.587, 0.114], np.float32), dtype=np.float32)


def _texture(gray: Floats) -> float:
    """Mean gradient magnitude."""
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    return float(np.sqrt(gx * gx + gy * gy).mean())


def _kind(query: Floats, original: Floats, raw: Mask) -> str:
    """What a region looks like, from its box in the query and in the normalised original.

    Text: the query has much more texture (letter edges) than the original there, and only a
    part of the box differs strongly (thin strokes). Colour changed: the luminance of the
    changed pixels still correlates with the original's and the chroma moved against the luma.
    Removed or smoothed: the query's texture is a fraction of the original's. Otherwise the
    content was replaced.
    """
    if raw.sum() < 4 or min(query.shape[:2]) < 3:
        return "content replaced"
    q_luma, o_luma = _luma(query), _luma(original)
    texture = _texture(q_luma) / max(_texture(o_luma), 1e-3)
    strong = float((np.abs(query - original).max(axis=2) > STRONG_DIFF).mean())
    if texture >= TEXT_TEXTURE and strong <= TEXT_STRONG:
        return "text added"
    a, b = q_luma[raw] - q_luma[raw].mean(), o_luma[raw] - o_luma[raw].mean()
    denominator = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    ncc = float((a * b).sum()) / denominator if denominator > 1e-6 else 0.0
    luma_delta = float(np.abs(q_luma[raw] - o_luma[raw]).mean())
    colour_delta = float(np.abs((query - original)[raw] - (q_luma - o_luma)[raw][:, None]).mean())
    if ncc > COLOUR_NCC and colour_delta >= COLOUR_TO_LUMA * luma_delta:
        return "colour changed"
    if texture < SMOOTHED_RATIO:
        return "content removed or smoothed"
    return "content replaced"


def _global_edits(
    query: Floats,
    warped: Floats,
    covered: Mask,
    valid: Mask,
    scale: float,
    rotation: float,
    mirrored: bool,
    overlap_original: float,
    grid: tuple[int, int],
) -> list[str]:
    """The whole-picture edits, from the transform, the uncovered query and the colours."""
    edits: list[str] = []
    if overlap_original < 1.0 - MIN_CROP:
        edits.append(f"cropped {_percent(1.0 - overlap_original)}")
    if mirrored:
        edits.append("mirrored")
    edits.extend(_frame(covered))
    if abs(rotation) >= MIN_ROTATION_DEG:
        edits.append(f"rotated {abs(rotation):.0f}°")
    if abs(scale - 1.0) >= MIN_RESIZE:
        edits.append("resized")
    q, o = query[valid], warped[valid]
    q_spread = float((q.max(axis=1) - q.min(axis=1)).mean())
    o_spread = float((o.max(axis=1) - o.min(axis=1)).mean())
    grey = q_spread < GREY_SPREAD <= o_spread
    if grey:
        edits.append("greyscale")
    q_luma, o_luma = _luma(q), _luma(o)
    if abs(float(q_luma.mean() - o_luma.mean())) >= BRIGHTNESS_DELTA:
        edits.append("brightness changed")
    if not grey:
        chroma = np.abs((q - q_luma[:, None]) - (o - o_luma[:, None])).mean()
        if float(chroma) >= RECOLOUR_DELTA:
            edits.append("recoloured")
    return edits


def _frame(covered: Mask) -> list[str]:
    """A caption bar (one uncovered strip, top or bottom) or a border (strips all round)."""
    height, width = covered.shape
    rows: Mask = np.asarray(covered.any(axis=1), dtype=bool)
    cols: Mask = np.asarray(covered.any(axis=0), dtype=bool)
    if not rows.any() or not cols.any():
        return []
    top = int(np.argmax(rows)) / height
    bottom = int(np.argmax(rows[::-1])) / height
    left = int(np.argmax(cols)) / width
    right = int(np.argmax(cols[::-1])) / width
    sides = [top, bottom, left, right]
    if all(side >= MIN_BAR for side in sides):
        return ["border added"]
    if (top >= MIN_BAR) != (bottom >= MIN_BAR) and max(left, right) < MIN_BAR:
        return ["caption bar added"]
    if any(side >= MIN_BAR for side in sides):
        return ["border added"]
    return []
