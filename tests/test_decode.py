"""Decoding: every Pillow mode becomes upright RGB; bad bytes become a DecodeError with a reason."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from embed.decode import BACKGROUND, DecodeError, decode_image, sha256_of, to_rgb
from tests.conftest import image_bytes


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_rgb_jpeg_keeps_size_format_and_hash() -> None:
    data = image_bytes(1)
    decoded = decode_image(data)
    assert decoded.image.mode == "RGB"
    assert (decoded.width, decoded.height, decoded.format) == (160, 120, "JPEG")
    assert decoded.sha256 == sha256_of(data)
    assert decoded.nbytes == len(data)
    assert decoded.content_type == "image/jpeg"


@pytest.mark.parametrize(
    ("mode", "fill", "fmt", "expected"),
    [
        ("L", 128, "PNG", (128, 128, 128)),
        ("1", 1, "PNG", (255, 255, 255)),
        ("CMYK", (0, 255, 255, 0), "JPEG", (255, 0, 0)),
        ("I;16", 65535, "PNG", (255, 255, 255)),
        ("I;16", 32896, "PNG", (128, 128, 128)),
        ("I", 65535, "TIFF", (255, 255, 255)),
        ("I", 100, "TIFF", (100, 100, 100)),
        ("F", 0.5, "TIFF", (128, 128, 128)),
    ],
)
def test_each_mode_converts_to_the_right_rgb_colour(
    mode: str, fill: object, fmt: str, expected: tuple[int, int, int]
) -> None:
    image = Image.new(mode, (20, 10), fill)  # type: ignore[arg-type]
    decoded = decode_image(encode(image, fmt))
    assert decoded.image.mode == "RGB"
    pixel = np.asarray(decoded.image)[5, 10]
    assert np.abs(pixel.astype(int) - np.array(expected)).max() <= 3, (mode, pixel)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA"])
def test_transparent_areas_are_composited_on_the_fixed_background(mode: str) -> None:
    rgba = Image.new("RGBA", (20, 10), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (10, 0, 20, 10))  # right half opaque blue
    if mode == "LA":
        image = rgba.convert("LA")
    elif mode == "PA":
        image = rgba.convert("PA")
    else:
        image = rgba
    if mode == "PA":  # no file format writes PA, so convert the in-memory image
        rgb = to_rgb(image)
    else:
        fmt = "WEBP" if mode == "RGBA" else "PNG"
        kwargs = {"lossless": True} if fmt == "WEBP" else {}
        rgb = decode_image(encode(image, fmt, **kwargs)).image
    assert rgb.mode == "RGB"
    pixels = np.asarray(rgb)
    assert tuple(pixels[5, 2]) == BACKGROUND  # transparent half
    assert tuple(pixels[5, 15]) != BACKGROUND  # opaque half keeps its colour


def test_palette_image_with_transparency_index_uses_the_background() -> None:
    image = Image.new("P", (10, 10), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (5, 0, 10, 10))
    decoded = decode_image(encode(image, "GIF", transparency=0))
    pixels = np.asarray(decoded.image)
    assert tuple(pixels[5, 1]) == BACKGROUND
    assert tuple(pixels[5, 8]) == (255, 0, 0)


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 20), (0, 200, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    decoded = decode_image(encode(image, "JPEG", exif=exif.tobytes()))
    assert (decoded.width, decoded.height) == (20, 40)


def test_animated_gif_uses_its_first_frame() -> None:
    frames = [Image.new("RGB", (10, 10), color) for color in [(255, 0, 0), (0, 0, 255)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    pixel = np.asarray(decode_image(data).image)[5, 5]
    assert pixel[0] > 200 and pixel[2] < 50


def test_bmp_and_tiff_decode() -> None:
    for fmt in ("BMP", "TIFF"):
        assert decode_image(image_bytes(3, fmt)).format == fmt


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny real PNG whose header claims a huge size (a decompression bomb's signature)."""
    data = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"this is not an image at all", "not an image"),
        (image_bytes(4, "PNG")[:300], "truncated"),
        (image_bytes(4, "JPEG")[:400], "truncated"),
        (_png_claiming(30000, 30000), "decompression bomb"),
        (b"%PDF-1.4 pretend", "not an image"),
    ],
    ids=["empty", "text", "truncated-png", "truncated-jpeg", "bomb", "pdf"],
)
def test_bad_input_raises_a_typed_error_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_image(data)
    assert reason in caught.value.reason


def test_custom_pixel_limit_is_enforced() -> None:
    with pytest.raises(DecodeError, match="decompression bomb"):
        decode_image(image_bytes(5), max_pixels=100)
