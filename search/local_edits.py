"""Seeded local manipulations of photos, for measuring the "what changed" map.

Each manipulation changes one region of an RGB photo and knows its true box; the copy is then
resized to RESIZE_FACTOR and recompressed as JPEG quality QUALITY, as a shared copy would be.
The same photo, manipulation and seed always give the same bytes and box.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

Box = tuple[int, int, int, int]
Pixels = npt.NDArray[np.uint8]

RESIZE_FACTOR: Final = 0.8
QUALITY: Final = 75
# A manipulated region's side, as a share of the photo's shorter side (a face, an object).
MIN_SIDE: Final = 0.15
MAX_SIDE: Final = 0.28
WORDS: Final = ("FAKE", "BREAKING", "No entry", "SALE 50%", "Vote NO", "2024", "HELP")


@dataclass(frozen=True)
class Manipulated:
    """A manipulated copy: its JPEG bytes and the true changed box in the copy's pixels."""

    data: bytes
    box: Box


Manipulation = Callable[[Pixels, Pixels, random.Random], tuple[Pixels, Box]]


def _side(pixels: Pixels, rng: random.Random) -> tuple[int, int]:
    """A region's (width, height) for this photo."""
    short = min(pixels.shape[:2])
    return (
        max(8, round(short * rng.uniform(MIN_SIDE, MAX_SIDE))),
        max(8, round(short * rng.uniform(MIN_SIDE, MAX_SIDE))),
    )


def _place(pixels: Pixels, size: tuple[int, int], rng: random.Random) -> tuple[int, int]:
    """A random top-left corner that keeps the region inside the photo (off the very edge)."""
    height, width = pixels.shape[:2]
    margin_x, margin_y = width // 20, height // 20
    x = rng.randint(margin_x, max(margin_x, width - size[0] - margin_x))
    y = rng.randint(margin_y, max(margin_y, height - size[1] - margin_y))
    return x, y


def _textured_place(pixels: Pixels, size: tuple[int, int], rng: random.Random) -> tuple[int, int]:
    """Of a few random places, the one with the most detail (where there is something)."""
    gray = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY).astype(np.float32)
    edges = np.abs(cv2.Laplacian(gray, cv2.CV_32F))
    tries = [_place(pixels, size, rng) for _ in range(8)]
    return max(
        tries, key=lambda p: float(edges[p[1] : p[1] + size[1], p[0] : p[0] + size[0]].mean())
    )


def paste(pixels: Pixels, other: Pixels, rng: random.Random) -> tuple[Pixels, Box]:
    """Paste a patch cut from another photo."""
    w, h = _side(pixels, rng)
    donor = cv2.resize(other, (max(w, other.shape[1]), max(h, other.shape[0])))
    sx = rng.randint(0, donor.shape[1] - w)
    sy = rng.randint(0, donor.shape[0] - h)
    x, y = _place(pixels, (w, h), rng)
    out = pixels.copy()
    out[y : y + h, x : x + w] = donor[sy : sy + h, sx : sx + w]
    return out, (x, y, x + w, y + h)


def inpaint(pixels: Pixels, other: Pixels, rng: random.Random) -> tuple[Pixels, Box]:
    """Remove what is in an ellipse where there is detail, by inpainting (Telea)."""
    w, h = _side(pixels, rng)
    x, y = _textured_place(pixels, (w, h), rng)
    mask = np.zeros(pixels.shape[:2], np.uint8)
    cv2.ellipse(mask, (x + w // 2, y + h // 2), (w // 2, h // 2), 0, 0, 360, 255, -1)
    out = cv2.inpaint(np.ascontiguousarray(pixels), mask, 5, cv2.INPAINT_TELEA)
    ys, xs = np.nonzero(mask)
    return np.asarray(out, np.uint8), (
        int(xs.min()),
        int(ys.min()),
        int(xs.max()) + 1,
        int(ys.max()) + 1,
    )


def text(pixels: Pixels, other: Pixels, rng: random.Random) -> tuple[Pixels, Box]:
    """Paint a word in a large font, white, black, yellow or red."""
    image = Image.fromarray(pixels)
    short = min(image.size)
    font = ImageFont.load_default(size=max(10, round(short * rng.uniform(0.07, 0.12))))
    words = rng.choice(WORDS)
    colour = rng.choice([(255, 255, 255), (0, 0, 0), (255, 220, 0), (220, 20, 20)])
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = (round(v) for v in draw.textbbox((0, 0), words, font=font))
    x, y = _place(pixels, (right - left, bottom - top), rng)
    draw.text((x - left, y - top), words, fill=colour, font=font)
    box = [round(v) for v in draw.textbbox((x - left, y - top), words, font=font)]
    width, height = image.size
    return np.asarray(image), (
        max(0, box[0]),
        max(0, box[1]),
        min(width, box[2]),
        min(height, box[3]),
    )


def clone(pixels: Pixels, other: Pixels, rng: random.Random) -> tuple[Pixels, Box]:
    """Copy a region of the photo over another part of it (the one it differs from most)."""
    w, h = _side(pixels, rng)
    source = _place(pixels, (w, h), rng)
    patch = pixels[source[1] : source[1] + h, source[0] : source[0] + w].astype(np.float32)

    def differs(place: tuple[int, int]) -> float:
        under = pixels[place[1] : place[1] + h, place[0] : place[0] + w].astype(np.float32)
        apart = abs(place[0] - source[0]) >= w or abs(place[1] - source[1]) >= h
        return float(np.abs(under - patch).mean()) if apart else -1.0

    x, y = max((_place(pixels, (w, h), rng) for _ in range(8)), key=differs)
    out = pixels.copy()
    out[y : y + h, x : x + w] = patch.astype(np.uint8)
    return out, (x, y, x + w, y + h)


def recolour(pixels: Pixels, other: Pixels, rng: random.Random) -> tuple[Pixels, Box]:
    """Turn a region's hue by a third of the circle and give it colour if it had little."""
    w, h = _side(pixels, rng)
    x, y = _textured_place(pixels, (w, h), rng)
    region = np.ascontiguousarray(pixels[y : y + h, x : x + w])
    hsv = cv2.cvtColor(region, cv2.COLOR_RGB2HSV).astype(np.int32)  # hue 0..179
    hsv[..., 0] = (hsv[..., 0] + rng.choice((60, 120))) % 180
    hsv[..., 1] = np.maximum(hsv[..., 1], 150)
    hsv[..., 2] = np.maximum(hsv[..., 2], 60)
    out = pixels.copy()
    out[y : y + h, x : x + w] = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    return out, (x, y, x + w, y + h)


MANIPULATIONS: Final[dict[str, Manipulation]] = {
    "paste": paste,
    "inpaint": inpaint,
    "text": text,
    "clone": clone,
    "recolour": recolour,
}


def manipulate(name: str, image: Image.Image, other: Image.Image, seed: int) -> Manipulated:
    """Apply one manipulation, then resize to 80% and recompress; the box follows the resize."""
    rng = random.Random(f"{name}:{seed}")
    pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    donor = np.asarray(other.convert("RGB"), dtype=np.uint8)
    out, box = MANIPULATIONS[name](pixels, donor, rng)
    edited = Image.fromarray(out)
    size = (
        max(1, round(edited.width * RESIZE_FACTOR)),
        max(1, round(edited.height * RESIZE_FACTOR)),
    )
    fx, fy = size[0] / edited.width, size[1] / edited.height
    resized = edited.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    resized.save(buffer, format="JPEG", quality=QUALITY)
    scaled = (round(box[0] * fx), round(box[1] * fy), round(box[2] * fx), round(box[3] * fy))
    return Manipulated(data=buffer.getvalue(), box=scaled)
