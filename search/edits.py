"""The fixed, seeded edits of the copy-detection benchmark: an RGB photo in, JPEG bytes out.

Each edit is a chain of steps applied in order, then encoded as JPEG quality 90, or quality 40
when the chain ends in `recompress`. A seed picks the free choices (crop offset, caption side,
colour and words, rotation direction), so the same photo and seed always give the same bytes.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from typing import Final

from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

Edit = Callable[[Image.Image, int], bytes]
Step = Callable[[Image.Image, random.Random], Image.Image]

QUALITY: Final = 90  # every edit's output, except a chain ending in `recompress`
RECOMPRESS_QUALITY: Final = 40
RESIZE_FACTOR: Final = 0.75
CROP_KEEP: Final = 0.90  # fraction of width and of height kept
CAPTION_HEIGHT: Final = 0.12  # bar height as a fraction of the image height
BRIGHTNESS: Final = 1.35
BORDER: Final = 0.10  # border on each side, as a fraction of that side's length
ROTATE_DEGREES: Final = 4.0
CAPTIONS: Final = (
    "Breaking: you will not believe this",
    "Shared 1,204 times",
    "LOOK AT THIS",
    "Photo of the day",
    "via @somebody",
)


def _resize(image: Image.Image, rng: random.Random) -> Image.Image:
    """Scale both sides to 75%."""
    width = max(1, round(image.width * RESIZE_FACTOR))
    height = max(1, round(image.height * RESIZE_FACTOR))
    return image.resize((width, height), Image.Resampling.LANCZOS)


def _recompress(image: Image.Image, rng: random.Random) -> Image.Image:
    """Round-trip through JPEG quality 40 (a no-op when it ends the chain: encoding does it)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=RECOMPRESS_QUALITY)
    return Image.open(io.BytesIO(buffer.getvalue())).convert(image.mode)


def _crop(image: Image.Image, rng: random.Random) -> Image.Image:
    """Keep 90% x 90%, offset towards a corner chosen by the seed (never the centre)."""
    width = max(1, round(image.width * CROP_KEEP))
    height = max(1, round(image.height * CROP_KEEP))

    def offset(slack: int) -> int:
        near = rng.uniform(0.0, 0.3)
        return round(slack * (near if rng.random() < 0.5 else 1.0 - near))

    left = offset(image.width - width)
    top = offset(image.height - height)
    return image.crop((left, top, left + width, top + height))


def _caption(image: Image.Image, rng: random.Random) -> Image.Image:
    """Add a white or black bar of 12% of the height above or below, with a line of text."""
    bar = max(1, round(image.height * CAPTION_HEIGHT))
    background, ink = ("white", "black") if rng.random() < 0.5 else ("black", "white")
    on_top = rng.random() < 0.5
    words = rng.choice(CAPTIONS)
    out = Image.new(image.mode, (image.width, image.height + bar), background)
    out.paste(image, (0, bar if on_top else 0))
    font = ImageFont.load_default(size=max(6, round(bar * 0.6)))
    top = 0 if on_top else image.height
    draw = ImageDraw.Draw(out)
    draw.text((max(1, bar // 4), top + bar // 2), words, fill=ink, font=font, anchor="lm")
    return out


def _mirror(image: Image.Image, rng: random.Random) -> Image.Image:
    """Flip left to right."""
    return ImageOps.mirror(image)


def _grayscale(image: Image.Image, rng: random.Random) -> Image.Image:
    """Drop colour (kept one-channel, as a real grayscale upload would be)."""
    return image.convert("L")


def _brightness(image: Image.Image, rng: random.Random) -> Image.Image:
    """Brighten by 35% (highlights clip)."""
    return ImageEnhance.Brightness(image).enhance(BRIGHTNESS)


def _border(image: Image.Image, rng: random.Random) -> Image.Image:
    """Pad with white: 10% of the width left and right, 10% of the height top and bottom."""
    pad_x = max(1, round(image.width * BORDER))
    pad_y = max(1, round(image.height * BORDER))
    return ImageOps.expand(image, border=(pad_x, pad_y, pad_x, pad_y), fill="white")


def _rotate(image: Image.Image, rng: random.Random) -> Image.Image:
    """Rotate 4 degrees (direction from the seed), growing the canvas, corners white."""
    degrees = ROTATE_DEGREES if rng.random() < 0.5 else -ROTATE_DEGREES
    return image.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor="white")


STEPS: Final[dict[str, Step]] = {
    "resize": _resize,
    "recompress": _recompress,
    "crop": _crop,
    "caption": _caption,
    "mirror": _mirror,
    "grayscale": _grayscale,
    "brightness": _brightness,
    "border": _border,
    "rotate": _rotate,
}

# Which edits a copy detector should survive without a geometric model (photometric or
# whole-image changes) and which move or cut content so that only local features find them.
GROUPS: Final[dict[str, tuple[str, ...]]] = {
    "simple": (
        "resize",
        "recompress",
        "caption",
        "mirror",
        "grayscale",
        "brightness",
        "resize+recompress",
        "mirror+caption",
        "grayscale+brightness",
        "resize+caption+recompress",
    ),
    "geometric": ("crop", "border", "rotate", "crop+border+rotate"),
}


def apply(name: str, image: Image.Image, seed: int) -> bytes:
    """Apply the edit `name` (steps joined by "+") to an image and encode it as JPEG."""
    steps = name.split("+")
    unknown = [step for step in steps if step not in STEPS]
    if unknown:
        raise KeyError(f"unknown edit step(s): {', '.join(unknown)}")
    rng = random.Random(f"{name}:{seed}")
    out = image.convert("RGB")
    quality = RECOMPRESS_QUALITY if steps[-1] == "recompress" else QUALITY
    for index, step in enumerate(steps):
        if step == "recompress" and index == len(steps) - 1:
            break  # the final encoding is the recompression
        out = STEPS[step](out, rng)
    buffer = io.BytesIO()
    out.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _edit(name: str) -> Edit:
    """An `Edit` bound to one edit name."""

    def run(image: Image.Image, seed: int) -> bytes:
        return apply(name, image, seed)

    run.__name__ = name.replace("+", "_")
    run.__doc__ = f"The benchmark edit {name!r}: RGB image and seed in, JPEG bytes out."
    return run


NAMES: Final = (
    "resize",
    "recompress",
    "crop",
    "caption",
    "mirror",
    "grayscale",
    "brightness",
    "border",
    "rotate",
    "resize+recompress",
    "mirror+caption",
    "grayscale+brightness",
    "resize+caption+recompress",
    "crop+border+rotate",
)
EDITS: Final[dict[str, Edit]] = {name: _edit(name) for name in NAMES}
