"""One safe decoder for every path (upload, ingest): bytes in, RGB image or a typed error out."""

from __future__ import annotations

import contextlib
import hashlib
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Formats a user can upload or a source can deliver. Anything else (EPS, PDF, ...) is refused:
# some Pillow plugins shell out or parse far more than an image search needs.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG also opens MPO
# Pixel cap, checked from the header before any pixel is decoded. Well under Pillow's own
# 89.5 MP bomb limit: 40 MP is a 160 MB RGBA or I;32 buffer, and larger than any camera
# photo a search query or a catalog needs.
DEFAULT_MAX_PIXELS = 40_000_000
_CHUNK_PIXELS = 1 << 20  # pixels per float32 chunk when scaling high-bit-depth images
BACKGROUND = (255, 255, 255)  # transparent areas are composited on white, always


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


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode bytes into an upright RGB image, or raise DecodeError with the reason."""
    with _corrupt_data_is_a_decode_error():
        image = _open(data, max_pixels)
        fmt = image.format or "UNKNOWN"
        # Multi-frame files open on frame 0, which stands for the image. Asking for n_frames
        # would read every frame, and a cut-off last frame would fail an image that is fine.
        image.load()
        rgb = to_rgb(_upright(image))
    return DecodedImage(
        image=rgb,
        sha256=sha256_of(data),
        format=fmt,
        width=rgb.width,
        height=rgb.height,
        nbytes=len(data),
    )


def decode_preview(data: bytes, side: int, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """An upright RGB copy whose long side is at most `side`, decoding no more than needed.

    JPEGs are decoded at a reduced scale (libjpeg's DCT scaling via `draft`), so a 24-megapixel
    original costs a fraction of a full decode. Raises DecodeError like decode_image.
    """
    with _corrupt_data_is_a_decode_error():
        image = _open(data, max_pixels)
        if image.format in ("JPEG", "MPO"):
            image.draft("RGB", (side, side))
        image.load()
        upright = to_rgb(_upright(image))
        if max(upright.size) > side:
            upright = upright.copy() if upright is image else upright
            upright.thumbnail((side, side), Image.Resampling.BILINEAR)
    return upright


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Open lazily (header only) and refuse an image whose size exceeds the pixel cap."""
    if not data:
        raise DecodeError("empty file")
    image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    width, height = image.size
    if width * height > max_pixels:
        raise DecodeError(
            f"decompression bomb: {width}x{height} pixels exceeds the limit of {max_pixels}"
        )
    return image


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block keeps the pixels as stored."""
    try:
        return ImageOps.exif_transpose(image) or image
    except MemoryError:
        raise
    except Exception:
        # The pixels decoded fine; only the metadata is damaged (exif_transpose re-parses and
        # re-serialises EXIF and fails with TypeError, struct.error, ...). Un-rotated beats lost.
        return image


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


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; alpha is composited on a fixed background."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(_scale_to_uint8(image, mode), mode="L").convert("RGB")
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


def _scale_to_uint8(image: Image.Image, mode: str) -> np.ndarray:
    """Map 16-bit, 32-bit integer and float pixels onto 0..255 without clipping.

    Works in row chunks of float32 (integer arithmetic for 16-bit data), so a large image
    never gets a full-size float64 copy: peak extra memory is the uint8 result plus one chunk.
    """
    array = np.asarray(image)
    out = np.empty(array.shape, dtype=np.uint8)
    if array.size == 0:
        return out
    if mode.startswith("I;16"):
        _sixteen_bit(array, out)
    elif mode == "I":
        low, top = int(array.min()), int(array.max())
        if low >= 0 and top <= 255:
            out[...] = array
        elif low >= 0 and top <= 65535:
            _sixteen_bit(array, out)
        else:
            _stretch(array, out, low, top)
    else:  # F
        least, most = float(np.nanmin(array)), float(np.nanmax(array))
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
