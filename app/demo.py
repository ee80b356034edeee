"""A demo catalog the project draws itself: visually distinct groups, with sidecar metadata."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

SIZE = (320, 240)
Painter = Callable[[random.Random], Image.Image]


def _jitter(rng: random.Random, color: tuple[int, int, int], amount: int = 30) -> tuple[int, ...]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in color)


def sunset(rng: random.Random) -> Image.Image:
    """Warm vertical gradient with a low sun."""
    top, bottom = _jitter(rng, (60, 20, 90)), _jitter(rng, (250, 140, 40))
    image = Image.new("RGB", SIZE)
    draw = ImageDraw.Draw(image)
    for y in range(SIZE[1]):
        t = y / SIZE[1]
        draw.line(
            [(0, y), (SIZE[0], y)],
            fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)),
        )
    x, r = rng.randint(60, 260), rng.randint(20, 40)
    draw.ellipse([x - r, 170 - r, x + r, 170 + r], fill=_jitter(rng, (255, 220, 120), 15))
    draw.rectangle([0, 190, SIZE[0], SIZE[1]], fill=_jitter(rng, (30, 20, 40), 10))
    return image


def checkerboard(rng: random.Random) -> Image.Image:
    """Two-colour checkerboard of random cell size."""
    a, b = _jitter(rng, (240, 240, 240), 15), _jitter(rng, (20, 20, 20), 15)
    cell = rng.randint(16, 48)
    image = Image.new("RGB", SIZE, a)
    draw = ImageDraw.Draw(image)
    for y in range(0, SIZE[1], cell):
        for x in range(0, SIZE[0], cell):
            if (x // cell + y // cell) % 2:
                draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=b)
    return image


def ocean(rng: random.Random) -> Image.Image:
    """Blue sine waves."""
    image = Image.new("RGB", SIZE, _jitter(rng, (20, 60, 140)))
    draw = ImageDraw.Draw(image)
    period, phase = rng.uniform(20, 60), rng.uniform(0, math.tau)
    for row in range(0, SIZE[1], 12):
        points = [(x, row + 6 * math.sin(x / period + phase + row)) for x in range(0, SIZE[0], 4)]
        draw.line(points, fill=_jitter(rng, (150, 200, 255), 20), width=3)
    return image


def forest(rng: random.Random) -> Image.Image:
    """Green triangles (trees) on a darker ground."""
    image = Image.new("RGB", SIZE, _jitter(rng, (120, 170, 220), 20))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 180, SIZE[0], SIZE[1]], fill=_jitter(rng, (60, 40, 20), 15))
    for _ in range(rng.randint(8, 16)):
        x, h = rng.randint(0, SIZE[0]), rng.randint(60, 150)
        draw.polygon([(x, 190 - h), (x - 25, 190), (x + 25, 190)], fill=_jitter(rng, (20, 110, 40)))
    return image


def night(rng: random.Random) -> Image.Image:
    """Dark sky with stars and a moon."""
    image = Image.new("RGB", SIZE, _jitter(rng, (5, 5, 25), 5))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(80, 160)):
        x, y = rng.randint(0, SIZE[0]), rng.randint(0, SIZE[1])
        draw.point((x, y), fill=(255, 255, rng.randint(200, 255)))
    x, y, r = rng.randint(40, 280), rng.randint(30, 100), rng.randint(12, 24)
    draw.ellipse([x - r, y - r, x + r, y + r], fill=(235, 235, 210))
    return image


def stripes(rng: random.Random) -> Image.Image:
    """Bold diagonal stripes in two saturated colours."""
    a, b = _jitter(rng, (220, 30, 40), 25), _jitter(rng, (250, 210, 30), 25)
    image = Image.new("RGB", SIZE, a)
    draw = ImageDraw.Draw(image)
    width = rng.randint(12, 30)
    for offset in range(-SIZE[1], SIZE[0], 2 * width):
        draw.polygon(
            [
                (offset, 0),
                (offset + width, 0),
                (offset + width + SIZE[1], SIZE[1]),
                (offset + SIZE[1], SIZE[1]),
            ],
            fill=b,
        )
    return image


def bubbles(rng: random.Random) -> Image.Image:
    """Soft pastel circles, blurred."""
    image = Image.new("RGB", SIZE, _jitter(rng, (245, 235, 245), 10))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(10, 25)):
        x, y, r = rng.randint(0, SIZE[0]), rng.randint(0, SIZE[1]), rng.randint(10, 45)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=_jitter(rng, (200, 150, 220), 40))
    return image.filter(ImageFilter.GaussianBlur(2))


def city(rng: random.Random) -> Image.Image:
    """Grey skyline with lit windows."""
    image = Image.new("RGB", SIZE, _jitter(rng, (170, 180, 190), 15))
    draw = ImageDraw.Draw(image)
    x = 0
    while x < SIZE[0]:
        w, h = rng.randint(25, 55), rng.randint(60, 200)
        draw.rectangle([x, SIZE[1] - h, x + w, SIZE[1]], fill=_jitter(rng, (60, 60, 70), 15))
        for wy in range(SIZE[1] - h + 8, SIZE[1] - 8, 14):
            for wx in range(x + 5, x + w - 5, 10):
                if rng.random() < 0.5:
                    draw.rectangle([wx, wy, wx + 4, wy + 6], fill=(250, 230, 120))
        x += w + rng.randint(2, 8)
    return image


GROUPS: dict[str, tuple[str, Painter]] = {
    "sunsets": ("Sunset over the bay", sunset),
    "checkerboards": ("Checkerboard pattern", checkerboard),
    "ocean": ("Waves on the open sea", ocean),
    "forest": ("Pine forest", forest),
    "night": ("Night sky with moon", night),
    "stripes": ("Diagonal stripes", stripes),
    "bubbles": ("Pastel bubbles", bubbles),
    "city": ("City skyline at dusk", city),
}


def write_demo_catalog(directory: Path, per_group: int = 40, seed: int = 7) -> int:
    """Write per_group JPEGs per group with NAME.json sidecars; returns the number of images."""
    rng = random.Random(seed)
    start = datetime(2024, 1, 1, 8, 0, tzinfo=UTC)
    count = 0
    for group, (title, paint) in GROUPS.items():
        folder = directory / group
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(per_group):
            name = f"{group}-{n:03d}"
            paint(rng).save(folder / f"{name}.jpg", quality=90)
            published = start + timedelta(days=rng.randint(0, 700), minutes=rng.randint(0, 1440))
            sidecar = {
                "title": f"{title} #{n + 1}",
                "description": f"Generated demo image from the '{group}' group.",
                "category": group,
                "source_uri": f"https://demo.imgsearch.example/{group}/{name}",
                "published_at": published.isoformat().replace("+00:00", "Z"),
            }
            (folder / f"{name}.json").write_text(json.dumps(sidecar, indent=2))
            count += 1
    return count


# Real photographs bundled inside scikit-image's wheel (no download); `cat` repeats `chelsea`.
SAMPLE_PHOTOS = (
    "astronaut",
    "brick",
    "camera",
    "cell",
    "chelsea",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "page",
    "retina",
    "rocket",
    "text",
)
SAMPLE_FILES = ("motorcycle_left.png", "motorcycle_right.png", "clock_motion.png")


def write_sample_photos(directory: Path) -> int:
    """Write scikit-image's bundled photographs as JPEG files; RuntimeError if not installed."""
    try:
        import skimage
        import skimage.data
    except ImportError as exc:
        raise RuntimeError(
            "the sample photos come with scikit-image: pip install scikit-image"
        ) from exc
    directory.mkdir(parents=True, exist_ok=True)
    count = 0
    for name in SAMPLE_PHOTOS:
        pixels = getattr(skimage.data, name)()
        Image.fromarray(pixels).convert("RGB").save(directory / f"{name}.jpg", quality=95)
        count += 1
    folder = Path(skimage.__file__).parent / "data"
    for filename in SAMPLE_FILES:
        if (folder / filename).is_file():
            with Image.open(folder / filename) as image:
                image.convert("RGB").save(directory / f"{Path(filename).stem}.jpg", quality=95)
            count += 1
    return count
