"""Trim uniform borders (letterbox bars, frames, screenshot margins) before hashing an image."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

Box = tuple[int, int, int, int]  # left, upper, right, lower, as PIL's crop takes it

# Borders are found on a box-filtered copy whose long side is at most this, whatever the input
# size, so a 4000 px original and its 800 px copy are judged on equally averaged pixels (JPEG
# and sensor noise shrink with averaging; a fixed size keeps the decision size-independent).
ANALYSIS_SIDE = 256
# Lines of the analysis copy that may mix a cut border with what follows it (resampling, JPEG
# ringing) and are stepped over when a further uniform band follows; see `_side_cut`.
TRANSITION_LINES = 2
# Away from the image's own edge a band must be at least this many analysis lines deep: a line
# or two of the photo that happen to look uniform are no band, and cutting them would cut a
# framed copy deeper than the photo alone (seen on skimage's moon: 26 px, 60 bits).
MIN_BAND = 3
# The edge found on the analysis copy is then placed to the pixel on the full image, within
# this many full-resolution lines (plus two analysis steps): JPEG rings for up to one 16 px
# block past a sharp edge. A sliver of border left there costs PDQ dearly: 4 white lines
# around a 600 px photo moved its hash by 36 of 256 bits.
REFINE_LINES = 16
# At full resolution a line is still border when this share of its pixels is within tolerance
# of the border colour: JPEG ringing next to the photo pushes a few pixels out, not most.
BORDER_SHARE = 0.9
# Below this many pixels on the short side a border cannot be told from content: not trimmed.
MIN_SIDE = 16


def trim_borders(image: Image.Image, tolerance: int = 12, max_fraction: float = 0.4) -> Image.Image:
    """Cut uniform rows/columns at each edge; the original object when there is nothing to cut.

    See `border_box` for what counts as a border.
    """
    box = border_box(image, tolerance, max_fraction)
    return image if box is None else image.crop(box)


def border_box(image: Image.Image, tolerance: int = 12, max_fraction: float = 0.4) -> Box | None:
    """The part of `image` left once uniform borders are cut; None when there is nothing to cut.

    A line is border when every pixel in it is within `tolerance` (per RGB channel) of that
    edge's colour, the median of the outermost line; so the outermost line must itself be
    uniform, and a textured edge (a dark sky with stars, grass) is kept however dark it is.
    Trimming repeats on what is left (a frame inside a frame, a letterbox and then a uniform
    band of the photo itself), so that a bordered copy trims down to where the original trims.
    At most `max_fraction` of the width or height goes per side; an image that is uniform all
    through (a flat image) is kept whole.

    Bands are found on a small copy; each edge is then placed to the pixel on the image itself,
    where a line still counts as border when BORDER_SHARE of its pixels match (JPEG ringing).
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if not 0.0 <= max_fraction < 0.5:
        raise ValueError(f"max_fraction must be in [0, 0.5), got {max_fraction}")
    width, height = image.size
    if min(width, height) < MIN_SIDE or max_fraction == 0.0:
        return None
    pixels = _analysis_pixels(image)
    rows, cols = pixels.shape[:2]
    if _border_lines(pixels, tolerance)[0] == rows:
        return None  # flat (checked here too: `_refine` would nibble at its edges)
    cut, colours = _coarse_cut(pixels, tolerance, max_fraction)
    top, bottom, left, right = cut
    # Analysis pixel i averages the full-resolution span [i * step, (i + 1) * step): rounding
    # towards the border keeps the mixed pixel, which `_refine` then settles to the pixel.
    x_step, y_step = width / cols, height / rows
    box = [
        math.floor(left * x_step),
        math.floor(top * y_step),
        math.ceil((cols - right) * x_step),
        math.ceil((rows - bottom) * y_step),
    ]
    box = _refine(image, box, colours, tolerance, max_fraction, max(x_step, y_step))
    if box == [0, 0, width, height]:
        return None
    return (box[0], box[1], box[2], box[3])


def _coarse_cut(
    pixels: np.ndarray, tolerance: int, max_fraction: float
) -> tuple[list[int], list[np.ndarray | None]]:
    """Per side (0 top, 1 bottom, 2 left, 3 right): analysis lines to cut, and the colour of
    the last border cut there (None where nothing was cut)."""
    rows, cols = pixels.shape[:2]
    caps = [math.floor(max_fraction * n) for n in (rows, rows, cols, cols)]
    cut = [0, 0, 0, 0]
    colours: list[np.ndarray | None] = [None, None, None, None]
    first = True
    while True:
        top, bottom, left, right = cut
        view = pixels[top : rows - bottom, left : cols - right]
        if _border_lines(view, tolerance)[0] == view.shape[0]:
            break  # what is left is flat: keep it rather than cut it to nothing
        # Next to a side already cut, the first pixels of every line may mix that border with
        # the photo; they do not count when judging whether a line is uniform.
        skip_top, skip_bottom, skip_left, skip_right = (
            TRANSITION_LINES if done else 0 for done in cut
        )
        lines = view[:, skip_left : view.shape[1] - skip_right]
        columns = view[skip_top : view.shape[0] - skip_bottom].transpose(1, 0, 2)
        if lines.shape[1] == 0 or columns.shape[1] == 0:
            break
        more = [0, 0, 0, 0]
        for side, lines_in in enumerate((lines, lines[::-1], columns, columns[::-1])):
            count, colour = _side_cut(
                lines_in, tolerance, at_edge=first, after_border=cut[side] > 0
            )
            more[side] = min(count, caps[side] - cut[side])
            if more[side] and colour is not None:
                colours[side] = colour
        if not any(more):
            break
        cut = [done + extra for done, extra in zip(cut, more, strict=True)]
        first = False
    return cut, colours


def _refine(
    image: Image.Image,
    box: list[int],
    colours: list[np.ndarray | None],
    tolerance: int,
    max_fraction: float,
    step: float,
) -> list[int]:
    """Move each side of `box` (left, top, right, bottom) onto the full-resolution edge of its
    border; `colours` are per side in `_coarse_cut`'s order."""
    width, height = image.size
    reach = REFINE_LINES + 2 * math.ceil(step)
    left, top, right, bottom = box
    # Strips run along the side between the perpendicular sides, kept clear of their corners.
    margin_x = reach if right - left > 3 * reach else 0
    margin_y = reach if bottom - top > 3 * reach else 0
    spans = {
        0: (left + margin_x, right - margin_x),
        1: (left + margin_x, right - margin_x),
        2: (top + margin_y, bottom - margin_y),
        3: (top + margin_y, bottom - margin_y),
    }
    new = {0: top, 1: bottom, 2: left, 3: right}
    limits = {
        0: math.floor(max_fraction * height),
        1: height - math.floor(max_fraction * height),
        2: math.floor(max_fraction * width),
        3: width - math.floor(max_fraction * width),
    }
    for side, edge in ((0, top), (1, bottom), (2, left), (3, right)):
        inward = side in (0, 2)
        limit = limits[side]
        depth = min(reach, limit - edge if inward else edge - limit)
        if depth <= 0:
            continue
        start, stop = spans[side]
        if side < 2:
            strip = (
                (start, edge, stop, edge + depth) if inward else (start, edge - depth, stop, edge)
            )
        else:
            strip = (
                (edge, start, edge + depth, stop) if inward else (edge - depth, start, edge, stop)
            )
        lines = np.asarray(image.crop(strip).convert("RGB"), dtype=np.int16)
        if side >= 2:
            lines = lines.transpose(1, 0, 2)
        if not inward:
            lines = lines[::-1]
        colour = colours[side]
        if colour is None:
            # No border seen on the analysis copy; one thinner than its pixels may still be
            # there, and then its outermost line is uniform at full resolution.
            count, colour = _border_lines(lines[:1], tolerance)
            if not count:
                continue
        within = (np.abs(lines - colour).max(axis=2) <= tolerance).mean(axis=1)
        outside = np.flatnonzero(within < BORDER_SHARE)
        count = int(outside[0]) if outside.size else len(within)
        new[side] = edge + count if inward else edge - count
    return [new[2], new[0], new[3], new[1]]


def _analysis_pixels(image: Image.Image) -> np.ndarray:
    """The image as an (h, w, 3) int16 array, box-filtered to a long side of ANALYSIS_SIDE."""
    small = image if image.mode in ("RGB", "L") else image.convert("RGB")
    scale = ANALYSIS_SIDE / max(image.size)
    if scale < 1.0:
        # A thin strip keeps MIN_SIDE pixels across: one-pixel lines would all look uniform.
        size = (
            max(MIN_SIDE, round(image.width * scale)),
            max(MIN_SIDE, round(image.height * scale)),
        )
        small = small.resize(size, Image.Resampling.BOX, reducing_gap=3.0)
    if small.mode != "RGB":
        small = small.convert("RGB")
    return np.asarray(small, dtype=np.int16)


def _side_cut(
    lines: np.ndarray, tolerance: int, *, at_edge: bool, after_border: bool
) -> tuple[int, np.ndarray | None]:
    """How many leading lines of `lines` (n, w, 3) to cut in this pass, and their colour.

    At the image's own edge (`at_edge`, the first pass) any uniform run is border, however
    thin. Further in, a band must be MIN_BAND lines deep: on the coarse analysis copy a line or
    two of a low-contrast photo can look uniform by chance, at one size and not another.
    """
    count, colour = _border_lines(lines, tolerance)
    if count >= MIN_BAND or (at_edge and count):
        return count, colour
    if not after_border:
        return 0, None
    # Just past a cut border, a line or two may mix the border with what follows (resampling,
    # JPEG ringing). When a uniform band follows them, step over: without this, a bordered copy
    # of a photo with a uniform edge band (a clear sky) would keep that band while the original
    # loses it.
    for skip in range(1, min(TRANSITION_LINES, len(lines) - 1) + 1):
        if _border_lines(lines[skip:], tolerance)[0] >= MIN_BAND:
            return skip, None
    return 0, None


def _border_lines(lines: np.ndarray, tolerance: int) -> tuple[int, np.ndarray]:
    """How many leading lines of `lines` (n, w, 3) are uniform in the colour of line 0."""
    colour = np.rint(np.median(lines[0], axis=0)).astype(np.int16)
    # Most edges of a photo have no border: look at a few lines first, then at more.
    start, chunk = 0, 8
    while start < len(lines):
        block = lines[start : start + chunk]
        worst = np.abs(block - colour).max(axis=(1, 2))  # the worst pixel and channel per line
        outside = np.flatnonzero(worst > tolerance)
        if outside.size:
            return start + int(outside[0]), colour
        start += len(block)
        chunk *= 2
    return len(lines), colour
