"""Meta's PDQ perceptual hash (256 bits) of the border-trimmed image, via the `pdqhash` package.

Bit order: `bits[i]` is bit 255 - i of the reference implementation's Hash256 (bit k there is
DCT coefficient (k // 16, k % 16) above the median), which is the order the reference writes
its hex in: `hex()` packs `bits` most significant bit first, so bits[0:4] is the first hex
digit. This is `pdqhash`'s own vector order. Checked against the test vectors of Meta's
Python reference (ThreatExchange pdq/python/pdqhashing/tests/pdq_test.py): with trim=False,
15 of its 16 images give its hex strings exactly (the 16th, of quality 3, is 10 bits off).
Trimming changes the hash of an image that has uniform bars (4 of those test images do), so
compare with hash lists made elsewhere using trim=False.

The catalog stores `bits` as a 256-d vector of +1/-1 under the dot product (256 - 2 x the
Hamming distance; embed/descriptors/pdq_descriptor.py); Meta's match threshold is 31 bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pdqhash
from PIL import Image

from embed.borders import border_box

BITS = 256
# Meta's reference hashers resize to at most 512 px before hashing (pdqio.cpp: "the two-pass
# Jarosz filter is prohibitively expensive for larger images"; the Python one uses PIL's
# thumbnail((512, 512)), whose bicubic, reducing_gap=2 resize is copied here).
HASH_SIDE = 512
# The dihedral variants, in pdqhash.compute_dihedral's order (original, rotate90, rotate180,
# rotate270, flip_x, flip_y, flip_plus1, flip_minus1) and as PIL names them (checked against
# Meta's bridge-*.jpg test images: PDQ's rotate90 is counter-clockwise, flip_x turns the image
# upside down, flip_y mirrors it left to right).
DIHEDRAL: tuple[Image.Transpose | None, ...] = (
    None,
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_180,
    Image.Transpose.ROTATE_270,
    Image.Transpose.FLIP_TOP_BOTTOM,
    Image.Transpose.FLIP_LEFT_RIGHT,
    Image.Transpose.TRANSPOSE,
    Image.Transpose.TRANSVERSE,
)
# PDQ's pipeline after the luma (Meta's pdqhashing.cpp): two passes of a box filter along rows
# and columns (Jarosz), a 64x64 decimation, a 16x16 DCT (without its DC row), bits above the
# median. All of it is linear until the median, so for a luma L (R x C) the 64x64 buffer is
# M_R @ L @ M_C.T, with M_n the (64, n) matrix of those passes on a side of n pixels; a turned
# image's buffer is then one of four products or its transpose, and the 8 variants cost two
# products with L instead of eight runs of the whole pipeline. The box filter is not centred
# for even windows, so a flip changes the products (not only their order): that is why
# pdqhash.compute_dihedral's DCT-domain variants are not the hashes of the turned images.
DOWNSAMPLED = 64
# How each turn of DIHEDRAL reads the luma: (transposed, rows reversed, columns reversed) of the
# untransposed image whose buffer is transposed (a turned view of `_turn`).
_TURN_PARTS: dict[Image.Transpose | None, tuple[bool, bool, bool]] = {
    None: (False, False, False),
    Image.Transpose.ROTATE_90: (True, False, True),  # = (L[:, ::-1]).T
    Image.Transpose.ROTATE_180: (False, True, True),
    Image.Transpose.ROTATE_270: (True, True, False),  # = (L[::-1]).T
    Image.Transpose.FLIP_TOP_BOTTOM: (False, True, False),
    Image.Transpose.FLIP_LEFT_RIGHT: (False, False, True),
    Image.Transpose.TRANSPOSE: (True, False, False),
    Image.Transpose.TRANSVERSE: (True, True, True),  # = (L[::-1, ::-1]).T
}


@dataclass(frozen=True, eq=False)
class PdqHash:
    """One image's PDQ hash: the 256 bits as the catalog stores them and the hash quality."""

    bits: np.ndarray  # (256,) uint8 of 0/1, read-only
    quality: int  # 0..100; Meta discards hashes below 50 (flat, featureless images)

    def __post_init__(self) -> None:
        bits = np.asarray(self.bits, dtype=np.uint8)
        if bits.shape != (BITS,) or bits.max(initial=0) > 1:
            raise ValueError(f"a PDQ hash is {BITS} bits of 0/1, got shape {bits.shape}")
        bits = bits.copy()
        bits.setflags(write=False)
        object.__setattr__(self, "bits", bits)

    def hex(self) -> str:
        """The standard 64-character PDQ hex form (the reference's Hash256 format)."""
        return np.packbits(self.bits).tobytes().hex()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PdqHash):
            return NotImplemented
        return self.quality == other.quality and bool(np.array_equal(self.bits, other.bits))

    def __hash__(self) -> int:
        return hash((self.hex(), self.quality))


def bits_from_hex(text: str) -> np.ndarray:
    """The (256,) uint8 bit vector of a PDQ hex string (e.g. from a shared hash list)."""
    try:
        raw = bytes.fromhex(text.strip())
    except ValueError as exc:
        raise ValueError(f"not a PDQ hex string: {text!r}") from exc
    if len(raw) != BITS // 8:
        raise ValueError(f"a PDQ hex string has {BITS // 4} hex digits, got {text!r}")
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8))


def pdq_hash(image: Image.Image, *, tolerance: int = 12, trim: bool = True) -> PdqHash:
    """PDQ hash of `image` after its uniform borders are trimmed (`trim=False` hashes it whole,
    as Meta's reference does, for comparing with hash lists made elsewhere)."""
    bits, quality = pdqhash.compute(_prepare(image, tolerance, trim))
    return PdqHash(bits=np.asarray(bits, dtype=np.uint8), quality=int(quality))


def pdq_dihedral(
    image: Image.Image, *, tolerance: int = 12, trim: bool = True
) -> tuple[list[np.ndarray], int]:
    """The PDQ bits of the trimmed image turned each way of DIHEDRAL, and the quality.

    Searching with all 8 finds mirrored and rotated copies of a catalog image. Each variant is
    the hash of the turned pixels: pdqhash.compute_dihedral derives them from one DCT instead
    (8x cheaper), but PDQ's downsampling is not mirror-symmetric, so its variants were 10 to
    22 bits away from the hash of the turned photo itself (a third of the 31-bit budget gone
    before any re-encoding). The original is pdqhash's own hash (the one ingestion stored);
    the other 7 come from PDQ's linear pipeline run once for all turns (`_turned_hashes`),
    which gives pdqhash's bits on the turned pixels but for float rounding (pdqhash sums in
    float32), at about a sixth of the CPU of seven more pdqhash runs.
    """
    pixels = _prepare(image, tolerance, trim)
    bits, quality = pdqhash.compute(pixels)
    if min(pixels.shape[:2]) < DOWNSAMPLED:  # slivers: the reference's own path, per turn
        hashes = [
            np.asarray(pdqhash.compute(np.ascontiguousarray(_turn(pixels, turn)))[0], np.uint8)
            for turn in DIHEDRAL
        ]
    else:
        hashes = _turned_hashes(pixels)
    hashes[0] = np.asarray(bits, dtype=np.uint8)
    return hashes, int(quality)


def _turned_hashes(pixels: np.ndarray) -> list[np.ndarray]:
    """The PDQ bits of `pixels` (h, w, 3) turned each way of DIHEDRAL, from two products."""
    # pdqhash's luma: float64 weights, then float32 (bindings.pyx)
    luma = (pixels[:, :, 0] * 0.299 + pixels[:, :, 1] * 0.587 + pixels[:, :, 2] * 0.114).astype(
        np.float32
    )
    rows, cols = luma.shape
    down_rows, down_cols = _downsampler(rows), _downsampler(cols)
    left = down_rows.apply(luma)  # M_R @ L: (64, C)
    left_flipped = down_rows.apply(luma[::-1])  # the rows reversed
    buffers: dict[tuple[bool, bool], np.ndarray] = {}
    hashes = []
    for turn in DIHEDRAL:
        transposed, flip_rows, flip_cols = _TURN_PARTS[turn]
        if (flip_rows, flip_cols) not in buffers:
            product = left_flipped if flip_rows else left
            product = product[:, ::-1] if flip_cols else product
            buffers[flip_rows, flip_cols] = down_cols.apply(product.T).T  # ... @ M_C.T
        buffer = buffers[flip_rows, flip_cols]
        hashes.append(_bits(buffer.T if transposed else buffer))
    return hashes


def _bits(buffer: np.ndarray) -> np.ndarray:
    """PDQ's bits of a 64x64 buffer: its 16x16 DCT above the median (pdqhash's order)."""
    coefficients = (_DCT @ buffer @ _DCT.T).ravel()
    median = np.sort(coefficients)[len(coefficients) // 2 - 1]  # torben: the lower median
    return (coefficients > median)[::-1].astype(np.uint8)


@dataclass(frozen=True)
class _Downsampler:
    """M_n, PDQ's two box-filter passes then its decimation on a side of n, as 64 bands: each
    output row is a weighted sum of `width` consecutive inputs (weights 0 past the edge)."""

    start: np.ndarray  # (64, 1) first input of each band
    weights: np.ndarray  # (64, width) float64

    def apply(self, values: np.ndarray) -> np.ndarray:
        """M_n @ values for values (n, m): (64, m), float64."""
        index = np.minimum(self.start + np.arange(self.weights.shape[1]), len(values) - 1)
        return np.einsum("bk,bkm->bm", self.weights, values[index], optimize=False)


@lru_cache(maxsize=256)
def _downsampler(n: int) -> _Downsampler:
    """M_n for a side of n pixels (box1DFloat twice, then decimateFloat, in float64)."""
    window = (n + 2 * DOWNSAMPLED - 1) // (2 * DOWNSAMPLED)  # computeJaroszFilterWindowSize
    # box1DFloat: output i averages inputs i - (window - half) .. i + half - 1, clipped
    half = (window + 2) // 2
    index = np.arange(n)
    first = np.maximum(index - (window - half), 0)
    last = np.minimum(index + half - 1, n - 1)
    picked = ((np.arange(DOWNSAMPLED) + 0.5) * n / DOWNSAMPLED).astype(int)  # decimateFloat
    rows = np.zeros((DOWNSAMPLED, n))
    rows[np.arange(DOWNSAMPLED), picked] = 1.0
    for _ in range(2):  # rows @ B, B the box filter: spread each entry over its window
        spread = rows / (last - first + 1)
        edges = np.zeros((n + 1, DOWNSAMPLED))
        np.add.at(edges, first, spread.T)
        np.add.at(edges, last + 1, -spread.T)
        rows = np.cumsum(edges[:n], axis=0).T
    support = np.abs(rows) > 1e-12
    start = support.argmax(axis=1)
    end = n - support[:, ::-1].argmax(axis=1)
    width = int((end - start).max())
    band = np.minimum(start[:, None] + np.arange(width), n - 1)
    weights = np.take_along_axis(rows, band, axis=1)
    weights[start[:, None] + np.arange(width) >= n] = 0.0
    weights[band >= end[:, None]] = 0.0
    return _Downsampler(start[:, None], weights)


def _dct_matrix() -> np.ndarray:
    """pdqhashing.cpp's 16 x 64 DCT matrix (rows 1..16 of the DCT-II; no DC row)."""
    i = np.arange(1, 17)[:, None]
    j = np.arange(DOWNSAMPLED)[None, :]
    return np.sqrt(2.0 / DOWNSAMPLED) * np.cos(np.pi / 2 / DOWNSAMPLED * i * (2 * j + 1))


_DCT = _dct_matrix()


def hamming(a: np.ndarray, b: np.ndarray) -> int:
    """Number of differing bits between two bit vectors of the same shape."""
    left, right = np.asarray(a), np.asarray(b)
    if left.shape != right.shape:
        raise ValueError(f"cannot compare bit vectors of shapes {left.shape} and {right.shape}")
    return int(np.count_nonzero(left != right))


def _prepare(image: Image.Image, tolerance: int, trim: bool) -> np.ndarray:
    """The (h, w, 3) uint8 pixels pdqhash takes: borders trimmed, long side at most 512."""
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")  # palette and 16-bit modes resize badly or not at all
    box = border_box(image, tolerance) if trim else None
    left, top, right, bottom = box or (0, 0, image.width, image.height)
    size = _fit(right - left, bottom - top)
    if size != (right - left, bottom - top):
        # Resizing straight from the box spares a full-resolution crop.
        image = image.resize(
            size, Image.Resampling.BICUBIC, box=(left, top, right, bottom), reducing_gap=2.0
        )
    elif box is not None:
        image = image.crop(box)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def _turn(pixels: np.ndarray, turn: Image.Transpose | None) -> np.ndarray:
    """`pixels` (h, w, 3) turned as PIL's Image.transpose(turn) turns an image (a view)."""
    T = Image.Transpose
    if turn is None:
        return pixels
    if turn == T.FLIP_LEFT_RIGHT:
        return pixels[:, ::-1]
    if turn == T.FLIP_TOP_BOTTOM:
        return pixels[::-1]
    if turn == T.ROTATE_180:
        return pixels[::-1, ::-1]
    if turn == T.TRANSPOSE:
        return pixels.transpose(1, 0, 2)
    if turn == T.TRANSVERSE:
        return pixels.transpose(1, 0, 2)[::-1, ::-1]
    if turn == T.ROTATE_90:  # counter-clockwise
        return pixels.transpose(1, 0, 2)[::-1]
    return pixels.transpose(1, 0, 2)[:, ::-1]  # ROTATE_270, clockwise


def _fit(width: int, height: int) -> tuple[int, int]:
    """The size PIL's thumbnail((512, 512)) gives: aspect kept, long side at most 512."""
    if width <= HASH_SIDE and height <= HASH_SIDE:
        return width, height
    if width >= height:
        return HASH_SIDE, max(1, round(HASH_SIDE * height / width))
    return max(1, round(HASH_SIDE * width / height)), HASH_SIDE
