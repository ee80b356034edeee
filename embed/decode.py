"""One safe decoder for every path (upload, ingest): bytes in, RGB image or a typed error out."""

from __future__ import annotations

import contextlib
import hashlib
import io
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

# Formats a user can upload or a source can deliver. Anything else (EPS, PDF, ...) is refused:
# some Pillow plugins shell out or parse far more than an image search needs.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG also opens MPO
# Pixel cap, checked from the header before any pixel is decoded. Well under Pillow's own
# 89.5 MP bomb limit: 40 MP is a 160 MB RGBA or I;32 buffer, and larger than any camera
# photo a search query or a catalog needs.
DEFAULT_MAX_PIXELS = 40_000_000
_CHUNK_PIXELS = 1 << 20  # pixels per float32 chunk when scaling high-bit-depth images
BACKGROUND = (255, 255, 255)  # transparent areas are composited on white, always
ORIENTATION_TAG = ExifTags.Base.Orientation


CONTENT_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}
EXTENSIONS = {
    "JPEG": "jpg",
    "MPO": "jpg",
    "PNG": "png",
    "WEBP": "webp",
    "GIF": "gif",
    "BMP": "bmp",
    "TIFF": "tif",
}


class DecodeError(ValueError):
    """The bytes are not a usable image; `reason` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DecodedImage:
    """An image ready to embed: RGB pixels plus the facts the catalog records."""

    image: Image.Image
    sha256: str
    format: str
    width: int
    height: int
    nbytes: int

    @property
    def content_type(self) -> str:
        """MIME type of the original bytes."""
        return CONTENT_TYPES.get(self.format, "application/octet-stream")

    @property
    def extension(self) -> str:
        """File extension for the original bytes."""
        return EXTENSIONS.get(self.format, "bin")


def sha256_of(data: bytes) -> str:
    """Hex SHA-256 of the bytes: the identity of an image in the catalog."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Fit:
    """The fewest pixels the consumers of a decoded image need.

    Both sides stay at least `short` and the long side at least `long` (unless the original is
    smaller): a JPEG is decoded at a reduced DCT scale and then, like every other format,
    box-reduced by a whole factor, so the result is under twice the need on one side.
    """

    short: int
    long: int

    def factor(self, size: tuple[int, int]) -> int:
        """The largest whole reduction of `size` that still leaves what is needed."""
        short, long = sorted(size)
        return max(1, min(short // max(1, self.short), long // max(1, self.long)))

    def draft_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """The size to ask libjpeg for (Pillow keeps both sides at least this)."""
        width, height = size
        return (self.long, self.short) if width >= height else (self.short, self.long)


def decode_image(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, fit: Fit | None = None
) -> DecodedImage:
    """Decode bytes into an upright RGB image, or raise DecodeError with the reason.

    With `fit` the pixels are only as large as it asks (a JPEG is decoded at a reduced scale,
    other formats are reduced a strip at a time), so no full-size RGB copy is ever made.
    `width` and `height` are always the original's.
    """
    with _corrupt_data_is_a_decode_error():
        image, (width, height) = _open(data, max_pixels, fit.draft_size if fit else None)
        fmt = image.format or "UNKNOWN"
        # Multi-frame files open on frame 0, which stands for the image. Asking for n_frames
        # would read every frame, and a cut-off last frame would fail an image that is fine.
        image.load()
        orientation = _orientation(image)
        rgb = _oriented(to_rgb_reduced(image, fit.factor(image.size) if fit else 1), orientation)
    if orientation in _SWAPS_SIDES:
        width, height = height, width
    return DecodedImage(
        image=rgb,
        sha256=sha256_of(data),
        format=fmt,
        width=width,
        height=height,
        nbytes=len(data),
    )


def decode_preview(data: bytes, side: int, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """An upright RGB copy whose long side is at most `side`, decoding no more than needed.

    JPEGs are decoded at a reduced scale (libjpeg's DCT scaling via `draft`), so a 24-megapixel
    original costs a fraction of a full decode; other formats are box-reduced a strip at a time
    to at least twice `side` before the final resize. Raises DecodeError like decode_image.
    """
    with _corrupt_data_is_a_decode_error():
        image, _ = _open(data, max_pixels, lambda size: (side, side))
        image.load()
        orientation = _orientation(image)
        # Like Pillow's own reducing_gap=2: a box reduction to at least 2x the target first.
        factor = max(1, max(image.size) // (2 * side))
        upright = _oriented(to_rgb_reduced(image, factor), orientation)
        if max(upright.size) > side:
            upright = upright.copy() if upright is image else upright
            upright.thumbnail((side, side), Image.Resampling.BILINEAR)
    return upright


def _open(
    data: bytes,
    max_pixels: int,
    draft_size: Callable[[tuple[int, int]], tuple[int, int]] | None,
) -> tuple[Image.Image, tuple[int, int]]:
    """Open lazily (header only), ask a JPEG for a reduced scale, and apply the pixel cap.

    The cap counts the pixels that will be decoded: a baseline JPEG decoded at 1/8 scale holds
    1/64 of them (libjpeg scales in the DCT, a row of blocks at a time). A progressive JPEG
    keeps every DCT coefficient of the full size in memory whatever the scale, so it counts
    at full size. Returns the image and its size as stored in the file.
    """
    if not data:
        raise DecodeError("empty file")
    image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    width, height = image.size
    if draft_size is not None and image.format in ("JPEG", "MPO"):
        image.draft(image.mode, draft_size(image.size))  # same mode; only the scale changes
    counted = image.size if not image.info.get("progressive") else (width, height)
    if counted[0] * counted[1] > max_pixels:
        scaled = (
            f" ({counted[0]}x{counted[1]} at a reduced scale)" if counted != (width, height) else ""
        )
        raise DecodeError(
            f"decompression bomb: {width}x{height} pixels{scaled} exceeds the limit of {max_pixels}"
        )
    return image, (width, height)


# EXIF orientation -> the transpose that shows the image upright (as ImageOps.exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES = (5, 6, 7, 8)


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 = as stored); a broken EXIF block keeps the pixels as stored."""
    try:
        value = image.getexif().get(ORIENTATION_TAG, 1)
        return value if isinstance(value, int) and value in _UPRIGHT else 1
    except MemoryError:
        raise
    except Exception:
        # The pixels decoded fine; only the metadata is damaged (EXIF parsing fails with
        # TypeError, struct.error, ...). Un-rotated beats lost.
        return 1


def _oriented(image: Image.Image, orientation: int) -> Image.Image:
    """Turn the (already reduced) pixels upright: cheaper than turning the full-size image."""
    method = _UPRIGHT.get(orientation)
    return image if method is None else image.transpose(method)


@contextlib.contextmanager
def _corrupt_data_is_a_decode_error() -> Iterator[None]:
    """Turn whatever Pillow raises on hostile bytes into DecodeError with a short reason.

    The catch is deliberately broad: Pillow's format plugins parse untrusted bytes in Python
    and report corrupt data with arbitrary exception types (IndexError from a short read,
    TypeError from a TIFF without dimensions, struct.error, KeyError, ...), not only OSError.
    A caller must see one typed error per bad file. MemoryError is not a property of the file
    and propagates, as do KeyboardInterrupt and SystemExit (not Exceptions).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (DecodeError, MemoryError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(f"decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise DecodeError("not an image (or a format imgsearch does not accept)") from exc
    except Exception as exc:
        text = str(exc) or type(exc).__name__
        if "truncated" in text.lower() or isinstance(exc, EOFError):
            raise DecodeError(f"truncated image ({text})") from exc
        if not isinstance(exc, OSError | SyntaxError | ValueError):
            text = f"{type(exc).__name__}: {text}"  # unusual for Pillow: name it for debugging
        raise DecodeError(f"corrupt image ({text[:200]})") from exc


def to_rgb_reduced(image: Image.Image, factor: int = 1) -> Image.Image:
    """`to_rgb(image)` box-reduced by `factor`, made a strip of rows at a time.

    Converting (and compositing alpha) strip by strip means the only full-size buffer is the
    decoded one: no full-size RGBA copy, background, composite or RGB result next to it.
    Integer pixel values are scaled with the range of the whole image, as `to_rgb` does.
    """
    width, height = image.size
    if factor <= 1 and (image.mode == "RGB" or width * height <= _CHUNK_PIXELS):
        return to_rgb(image)
    value_range = _value_range(image) if image.mode in ("I", "F") else None
    rows = max(factor, _CHUNK_PIXELS // max(1, width) // factor * factor)
    out = Image.new("RGB", (-(-width // factor), -(-height // factor)))
    for top in range(0, height, rows):
        strip = to_rgb(image.crop((0, top, width, min(height, top + rows))), value_range)
        out.paste(strip.reduce(factor) if factor > 1 else strip, (0, top // factor))
    return out


def to_rgb(image: Image.Image, value_range: tuple[float, float] | None = None) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; alpha is composited on a fixed background.

    `value_range` is the (min, max) of an I or F image this is a part of (default: its own).
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        scaled = _scale_to_uint8(image, mode, value_range)
        return Image.fromarray(scaled, mode="L").convert("RGB")
    if mode == "P":
        has_alpha = "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
        if not has_alpha:
            return image
        mode = "RGBA"
    if mode in ("PA", "LA", "La", "RGBa", "RGBA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    # 1, L, CMYK, YCbCr, LAB, HSV: Pillow's own conversions are correct for these.
    return image.convert("RGB")


def _value_range(image: Image.Image) -> tuple[float, float]:
    """(min, max) of an I or F image, NaN ignored (NaN, NaN if all are), read a strip at a time."""
    width, height = image.size
    rows = max(1, _CHUNK_PIXELS // max(1, width))
    lows, tops = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN strip
        for top in range(0, height, rows):
            array = np.asarray(image.crop((0, top, width, min(height, top + rows))))
            if array.size:
                lows.append(float(np.nanmin(array)))
                tops.append(float(np.nanmax(array)))
        if not lows:
            return (0.0, 0.0)
        return float(np.nanmin(lows)), float(np.nanmax(tops))


def _scale_to_uint8(
    image: Image.Image, mode: str, value_range: tuple[float, float] | None = None
) -> np.ndarray:
    """Map 16-bit, 32-bit integer and float pixels onto 0..255 without clipping.

    Works in row chunks of float32 (integer arithmetic for 16-bit data), so a large image
    never gets a full-size float64 copy: peak extra memory is the uint8 result plus one chunk.
    `value_range` is the (min, max) to scale I and F pixels with (default: this image's).
    """
    array = np.asarray(image)
    out = np.empty(array.shape, dtype=np.uint8)
    if array.size == 0:
        return out
    if mode.startswith("I;16"):
        _sixteen_bit(array, out)
        return out
    if value_range is None:
        value_range = _value_range(image)
    if mode == "I":
        low, top = int(value_range[0]), int(value_range[1])
        if low >= 0 and top <= 255:
            out[...] = array
        elif low >= 0 and top <= 65535:
            _sixteen_bit(array, out)
        else:
            _stretch(array, out, low, top)
    else:  # F
        least, most = value_range
        if least >= 0 and most <= 1.0:
            _stretch(array, out, 0.0, 1.0)  # the usual 0..1 float convention
        else:
            _stretch(array, out, least, most)
    return out


def _row_chunks(array: np.ndarray) -> Iterator[slice]:
    rows = max(1, _CHUNK_PIXELS // max(1, array.shape[1]))
    for start in range(0, array.shape[0], rows):
        yield slice(start, start + rows)


def _sixteen_bit(array: np.ndarray, out: np.ndarray) -> None:
    """round(v / 257) for 0..65535, exactly, as (v + 128) // 257 (no ties exist)."""
    for rows in _row_chunks(array):
        chunk = array[rows].astype(np.uint32)
        chunk += 128
        chunk //= 257
        out[rows] = chunk


def _stretch(array: np.ndarray, out: np.ndarray, low: float, top: float) -> None:
    """Map low..top linearly onto 0..255 (NaN becomes 0), a float32 row chunk at a time."""
    if not top > low:  # also catches NaN bounds (an all-NaN float image)
        out[...] = 0
        return
    scale = np.float32(255.0 / (top - low))
    # Infinite pixels or an infinite range give NaN here on purpose: nan_to_num maps them.
    with np.errstate(invalid="ignore", over="ignore"):
        for rows in _row_chunks(array):
            chunk = array[rows].astype(np.float32)
            chunk -= np.float32(low)
            chunk *= scale
            np.nan_to_num(chunk, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
            np.clip(chunk, 0, 255, out=chunk)
            np.rint(chunk, out=chunk)
            out[rows] = chunk
