"""The demo catalog: real photographs published by several sources, and doctored copies to try.

`write_demo_catalog` builds what `make run` ingests: scikit-image's bundled colour photographs,
each published first by a wire service, then republished resized by a daily paper, cropped by a
social repost and unchanged by an aggregator (sidecars give each place its title, link and date),
so a search shows a timeline. Beside the catalog, `try-these/` holds doctored copies made with
search/local_edits.py (a pasted patch, a painted slogan, a removed object) and an unrelated
photo, to upload. `write_drawings` keeps the generated drawings (8 labelled groups, for
`imgsearch eval labels`) and `write_sample_photos` the plain photo set (for `imgsearch eval`).
"""

from __future__ import annotations

import json
import math
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from search.edits import apply
from search.local_edits import manipulate

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


def write_drawings(directory: Path, per_group: int = 40, seed: int = 7) -> int:
    """Write per_group drawings per group (a labelled set) with NAME.json sidecars; the count."""
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


class DemoUnavailable(RuntimeError):
    """The photographs cannot be written: scikit-image (the `demo` extra) is not installed."""


def skimage_data() -> Path:
    """The folder of photographs inside scikit-image's wheel (DemoUnavailable without it)."""
    try:
        import skimage  # the optional `demo` extra
    except ImportError as exc:
        raise DemoUnavailable(
            "the demo photographs come with scikit-image, which is not installed: "
            "run make install, or pip install -c constraints.txt -e '.[demo]'"
        ) from exc
    return Path(skimage.__file__).parent / "data"


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
    """Write scikit-image's bundled photographs as JPEG files; DemoUnavailable without it."""
    folder = skimage_data()
    import skimage.data

    directory.mkdir(parents=True, exist_ok=True)
    count = 0
    for name in SAMPLE_PHOTOS:
        pixels = getattr(skimage.data, name)()
        Image.fromarray(pixels).convert("RGB").save(directory / f"{name}.jpg", quality=95)
        count += 1
    for filename in SAMPLE_FILES:
        if (folder / filename).is_file():
            with Image.open(folder / filename) as image:
                image.convert("RGB").save(directory / f"{Path(filename).stem}.jpg", quality=95)
            count += 1
    return count


# -- the demo catalog ------------------------------------------------------------------------


@dataclass(frozen=True)
class Photo:
    """One catalog photograph: its file in scikit-image's data folder, and its story."""

    name: str
    file: str
    title: str
    category: str
    published: datetime  # when the wire service first published it


@dataclass(frozen=True)
class Outlet:
    """A demo source: how it republishes each photo (an edit of search/edits.py), and when."""

    name: str  # the source name the timeline shows
    folder: str
    edit: str | None  # None: the original file, byte for byte
    delay: timedelta  # after the first publication
    title: str  # headline template, {title}
    link: str  # the place's link template, {name} and {date}


@dataclass(frozen=True)
class Doctored:
    """A prepared upload: a catalog photo manipulated by search/local_edits.py."""

    file: str
    photo: str
    manipulation: str  # a name of search/local_edits.py's MANIPULATIONS
    donor: str  # the photo a pasted patch is cut from
    seed: int


@dataclass(frozen=True)
class DemoCatalog:
    """What write_demo_catalog wrote: the files, the distinct images and the uploads to try."""

    catalog: Path  # one folder per source
    files: int
    images: int
    sources: Path  # the source declarations (IMGSEARCH_SOURCES) that ingest the catalog
    try_these: tuple[Path, ...]


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


PHOTOS: tuple[Photo, ...] = (
    Photo("astronaut", "astronaut.png", "Astronaut portrait", "space", _utc("2023-02-14 10:00")),
    Photo("rocket", "rocket.jpg", "Launch day", "space", _utc("2023-09-30 06:30")),
    Photo("coffee", "coffee.png", "Coffee at the summit", "food", _utc("2022-06-01 08:00")),
    Photo("chelsea", "chelsea.png", "The newsroom cat", "animals", _utc("2024-01-05 15:00")),
    Photo(
        "motorcycle",
        "motorcycle_left.png",
        "Workshop motorcycle",
        "transport",
        _utc("2023-05-20 12:15"),
    ),
    Photo("tissue", "ihc.png", "Stained tissue", "science", _utc("2024-03-11 09:45")),
)
# Earliest first: the wire's original, the same file six hours later (one image, two places),
# then two edited republications (each its own image, found as a copy of the original).
OUTLETS: tuple[Outlet, ...] = (
    Outlet(
        "Wire service",
        "wire-service",
        None,
        timedelta(0),
        "{title}",
        "https://wire.example/photos/{date}/{name}",
    ),
    Outlet(
        "News aggregator",
        "news-aggregator",
        None,
        timedelta(hours=6),
        "{title} (via wire)",
        "https://aggregator.example/story/{name}-{date}",
    ),
    Outlet(
        "Daily paper",
        "daily-paper",
        "resize+recompress",
        timedelta(days=1),
        "In pictures: {title}",
        "https://daily-paper.example/{date}/{name}",
    ),
    Outlet(
        "Social repost",
        "social-repost",
        "crop",
        timedelta(days=3),
        "Look at this: {title}",
        "https://social.example/p/{name}-{date}",
    ),
)
TRY_THESE: tuple[Doctored, ...] = (
    Doctored("astronaut-pasted-patch.jpg", "astronaut", "paste", "coffee", 0),
    Doctored("rocket-slogan.jpg", "rocket", "text", "coffee", 11),
    Doctored("coffee-object-removed.jpg", "coffee", "inpaint", "rocket", 3),
)
UNRELATED = ("not-in-catalog.jpg", "hubble_deep_field.jpg")  # (upload, scikit-image's file)
QUALITY = 92  # the wire's JPEG


def _open(folder: Path, file: str) -> Image.Image:
    with warnings.catch_warnings(), Image.open(folder / file) as image:
        warnings.simplefilter("ignore")  # some bundled files carry odd metadata
        return image.convert("RGB")


def _jpeg(image: Image.Image, path: Path, quality: int = QUALITY) -> None:
    image.save(path, format="JPEG", quality=quality)


def write_demo_catalog(directory: Path) -> DemoCatalog:
    """Write the demo catalog under directory/catalog, the uploads under directory/try-these.

    The same arguments always give the same bytes. DemoUnavailable without scikit-image.
    """
    folder = skimage_data()
    directory = directory.resolve()
    catalog, try_these = directory / "catalog", directory / "try-these"
    photos = {photo.name: _open(folder, photo.file) for photo in PHOTOS}
    files = 0
    for outlet in OUTLETS:
        (catalog / outlet.folder).mkdir(parents=True, exist_ok=True)
    for seed, photo in enumerate(PHOTOS):
        original = catalog / OUTLETS[0].folder / f"{photo.name}.jpg"
        for outlet in OUTLETS:
            path = catalog / outlet.folder / f"{photo.name}.jpg"
            if outlet.edit is None:
                if path != original:
                    path.write_bytes(original.read_bytes())
                else:
                    _jpeg(photos[photo.name], path)
            else:
                path.write_bytes(apply(outlet.edit, photos[photo.name], seed))
            published = photo.published + outlet.delay
            sidecar = {
                "title": outlet.title.format(title=photo.title),
                "description": f"{photo.title}, as {outlet.name.lower()} published it.",
                "category": photo.category,
                "source_uri": outlet.link.format(name=photo.name, date=published.date()),
                "published_at": published.isoformat().replace("+00:00", "Z"),
            }
            path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
            files += 1
    try_these.mkdir(parents=True, exist_ok=True)
    uploads = []
    for doctored in TRY_THESE:
        copy = manipulate(
            doctored.manipulation, photos[doctored.photo], photos[doctored.donor], doctored.seed
        )
        (try_these / doctored.file).write_bytes(copy.data)
        uploads.append(try_these / doctored.file)
    unrelated = _open(folder, UNRELATED[1])
    _jpeg(unrelated, try_these / UNRELATED[0], quality=85)
    uploads.append(try_these / UNRELATED[0])
    sources = directory / "sources.json"
    declared = [
        {"name": o.name, "kind": "folder", "location": str(catalog / o.folder)} for o in OUTLETS
    ]
    sources.write_text(json.dumps(declared) + "\n")
    distinct = len(PHOTOS) * len({o.edit for o in OUTLETS})
    return DemoCatalog(catalog, files, distinct, sources, tuple(uploads))
