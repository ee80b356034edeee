"""One safe decoder for every path (upload, ingest): bytes in, RGB image or a typed error out."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Formats a user can upload or a source can deliver. Anything else (EPS, PDF, ...) is refused:
# some Pillow plugins shell out or parse far more than an image search needs.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG also opens MPO
MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb limit (~ 0.25 GB of RGBA)
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


def decode_image(data: bytes, *, max_pixels: int = MAX_PIXELS) -> DecodedImage:
    """Decode bytes into an upright RGB image, or raise DecodeError with the reason."""
    if not data:
        raise DecodeError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            fmt = image.format or "UNKNOWN"
            width, height = image.size
            if width * height > max_pixels:
                raise DecodeError(
                    f"decompression bomb: {width}x{height} pixels exceeds the limit of {max_pixels}"
                )
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)  # animated: the first frame stands for the image
            image.load()
            upright = ImageOps.exif_transpose(image) or image
            rgb = to_rgb(upright)
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(f"decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise DecodeError("not an image (or a format imgsearch does not accept)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncated or corrupt data as OSError/SyntaxError/ValueError.
        text = str(exc) or type(exc).__name__
        if "truncated" in text.lower() or isinstance(exc, EOFError):
            raise DecodeError(f"truncated image ({text})") from exc
        raise DecodeError(f"corrupt image ({text})") from exc
    return DecodedImage(
        image=rgb,
        sha256=sha256_of(data),
        format=fmt,
        width=rgb.width,
        height=rgb.height,
        nbytes=len(data),
    )


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
    """Map 16-bit, 32-bit integer and float pixels onto 0..255 without clipping."""
    array = np.asarray(image, dtype=np.float64)
    if mode.startswith("I;16"):
        scaled = array / 257.0
    elif mode == "I":
        top = float(array.max()) if array.size else 0.0
        low = float(array.min()) if array.size else 0.0
        if low >= 0 and top <= 255:
            scaled = array
        elif low >= 0 and top <= 65535:
            scaled = array / 257.0
        else:
            scaled = _stretch(array)
    else:  # F
        low = float(np.nanmin(array)) if array.size else 0.0
        top = float(np.nanmax(array)) if array.size else 0.0
        scaled = array * 255.0 if low >= 0 and top <= 1.0 else _stretch(array)
    return np.clip(np.nan_to_num(scaled), 0, 255).round().astype(np.uint8)


def _stretch(array: np.ndarray) -> np.ndarray:
    low, top = float(np.nanmin(array)), float(np.nanmax(array))
    if top <= low:
        return np.zeros_like(array)
    return (array - low) * (255.0 / (top - low))


def decode_preview(data: bytes, side: int, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """An upright RGB copy whose long side is at most `side`, decoding no more than needed.

    JPEGs are decoded at a reduced scale (libjpeg's DCT scaling via `draft`), so a 24-megapixel
    original costs a fraction of a full decode. Raises DecodeError like decode_image.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise DecodeError(f"decompression bomb: {width}x{height} pixels")
            if image.format in ("JPEG", "MPO"):
                image.draft("RGB", (side, side))
            image.load()
            upright = to_rgb(ImageOps.exif_transpose(image) or image)
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(f"decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise DecodeError("not an image (or a format imgsearch does not accept)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DecodeError(f"corrupt image ({str(exc) or type(exc).__name__})") from exc
    if max(upright.size) > side:
        upright = upright.copy() if upright is image else upright
        upright.thumbnail((side, side), Image.Resampling.BILINEAR)
    return upright
