"""Decoding: every Pillow mode becomes upright RGB; bad bytes become a DecodeError with a reason."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from embed.decode import (
    BACKGROUND,
    DEFAULT_MAX_PIXELS,
    DecodeError,
    _scale_to_uint8,
    decode_image,
    decode_preview,
    sha256_of,
    to_rgb,
)
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


def _exif_with_text_where_a_rational_belongs() -> bytes:
    """EXIF that reads but cannot be re-written: Orientation 6 and an XResolution given as text."""
    entries = [(0x0112, 3, 1, struct.pack(">H", 6)), (0x011A, 2, 3, b"ab\x00")]
    ifd = struct.pack(">H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack(">HHI", tag, kind, count) + value.ljust(4, b"\x00")
    return b"MM\x00*" + struct.pack(">I", 8) + ifd + b"\x00\x00\x00\x00"


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_a_broken_exif_block_still_turns_the_image_by_its_readable_orientation(fmt: str) -> None:
    # The orientation reads fine; only re-writing the block would fail (ImageOps.exif_transpose
    # did, which left such images on their side).
    image = Image.new("RGB", (40, 20), (0, 200, 0))
    data = encode(image, fmt, exif=_exif_with_text_where_a_rational_belongs())
    decoded = decode_image(data)
    assert decoded.image.size == (decoded.width, decoded.height) == (20, 40)
    assert decode_preview(data, 32).size == (16, 32)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "JPEG"])
def test_an_unreadable_exif_block_keeps_the_image_as_stored(fmt: str) -> None:
    image = Image.new("RGB", (40, 20), (0, 200, 0))
    data = encode(image, fmt, exif=b"MM\x00*\x00\x00\xff\xff" + bytes(6))  # IFD past the end
    assert decode_image(data).image.size == (40, 20)
    assert decode_preview(data, 32).size == (32, 16)


def test_an_animated_gif_cut_inside_a_later_frame_still_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (10, 10), color) for color in [(255, 0, 0), (0, 0, 255)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    for cut in range(len(data) - 30, len(data)):
        pixel = np.asarray(decode_image(data[:cut]).image)[5, 5]
        assert pixel[0] > 200 and pixel[2] < 50, cut


def test_the_default_pixel_cap_is_well_under_pillows() -> None:
    assert Image.MAX_IMAGE_PIXELS is not None
    assert DEFAULT_MAX_PIXELS == 40_000_000 < Image.MAX_IMAGE_PIXELS


def _png16_claiming(width: int, height: int) -> bytes:
    """A real 16-bit greyscale PNG whose header claims width x height (no pixel data for it)."""
    data = bytearray(encode(Image.new("I;16", (1, 1)), "PNG"))
    assert data[24:26] == b"\x10\x00"  # bit depth 16, colour type 0 (greyscale)
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (_png16_claiming(8000, 5001), "8000x5001"),  # 40.008 MP: over the cap, under Pillow's
        (_png_claiming(9000, 9000), "9000x9000"),  # 81 MP
    ],
    ids=["png16-just-over-the-cap", "9000x9000"],
)
def test_an_image_over_the_pixel_cap_is_refused_from_its_header(data: bytes, size: str) -> None:
    # Only a header check can refuse these: a decode would fail as truncated instead.
    for call in (decode_image, lambda data: decode_preview(data, 64)):
        started = time.perf_counter()
        with pytest.raises(DecodeError, match=f"decompression bomb: {size} pixels") as caught:
            call(data)
        assert time.perf_counter() - started < 1.0
        assert str(DEFAULT_MAX_PIXELS) in caught.value.reason


def test_an_image_at_the_cap_is_not_refused_as_a_bomb() -> None:
    with pytest.raises(DecodeError, match=r"truncated|corrupt"):
        decode_image(_png16_claiming(8000, 5000))


def _float64_scaling(array: np.ndarray, mode: str) -> np.ndarray:
    """The previous float64 implementation, as the reference the new one must match."""
    values = array.astype(np.float64)

    def stretch(values: np.ndarray) -> np.ndarray:
        low, top = float(np.nanmin(values)), float(np.nanmax(values))
        return np.zeros_like(values) if top <= low else (values - low) * (255.0 / (top - low))

    if mode == "I;16":
        scaled = values / 257.0
    elif mode == "I":
        low, top = values.min(), values.max()
        if low >= 0 and top <= 255:
            scaled = values
        elif low >= 0 and top <= 65535:
            scaled = values / 257.0
        else:
            scaled = stretch(values)
    else:
        low, top = np.nanmin(values), np.nanmax(values)
        scaled = values * 255.0 if low >= 0 and top <= 1.0 else stretch(values)
    return np.clip(np.nan_to_num(scaled), 0, 255).round().astype(np.uint8)


def test_sixteen_bit_scaling_matches_the_float64_result_for_every_value() -> None:
    every_value = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    image = Image.fromarray(every_value)
    assert np.array_equal(_scale_to_uint8(image, "I;16"), _float64_scaling(every_value, "I;16"))
    as_int32 = every_value.astype(np.int32)
    image_i = Image.fromarray(as_int32)
    assert np.array_equal(_scale_to_uint8(image_i, "I"), _float64_scaling(as_int32, "I"))


@pytest.mark.parametrize(
    ("mode", "values"),
    [
        ("I", np.random.default_rng(1).integers(-(2**31), 2**31 - 1, (50, 70), dtype=np.int32)),
        ("I", np.random.default_rng(2).integers(0, 200, (50, 70), dtype=np.int32)),
        ("F", np.random.default_rng(3).random((50, 70), dtype=np.float32)),
        ("F", np.random.default_rng(4).normal(0, 1000, (50, 70)).astype(np.float32)),
    ],
    ids=["int32-wide", "int32-bytes", "float-unit", "float-wide"],
)
def test_wide_and_float_scaling_matches_the_float64_result(mode: str, values: np.ndarray) -> None:
    values = values.copy()
    if mode == "F":
        values[0, 0] = np.nan  # NaN becomes black, as before
    ours = _scale_to_uint8(Image.fromarray(values), mode).astype(int)
    # float32 may round a value sitting on a .5 boundary the other way; never more than that.
    assert np.abs(ours - _float64_scaling(values, mode)).max() <= 1
