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
    hashed from the turned pixels: pdqhash.compute_dihedral derives them from one DCT instead
    (8x cheaper), but PDQ's downsampling is not mirror-symmetric, so its variants were 10 to
    22 bits away from the hash of the turned photo itself (a third of the 31-bit budget gone
    before any re-encoding); these are exact.
    """
    pixels = _prepare(image, tolerance, trim)
    hashes = []
    quality = 0
    for turn in DIHEDRAL:
        # pdqhash reads its luma buffer as row-major: a transposed view must be copied.
        bits, quality = pdqhash.compute(np.ascontiguousarray(_turn(pixels, turn)))
        hashes.append(np.asarray(bits, dtype=np.uint8))
    return hashes, int(quality)


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
