"""Writes embed/probes/: the photos the int8 encoders are calibrated and checked on.

`python -m tests.probe_photos` makes them from scikit-image's sample photographs (a dev extra,
never needed at run time: the JPEGs are committed and ship as package data). Calibration and
probe photos come from different photographs, so the self-check never sees a photo that set
the quantization ranges. Each photograph gives two overlapping crops, so every probe has a true
nearest neighbour (its sibling) for the self-check's neighbour test. Licences: embed/probes/
README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parent.parent / "embed" / "probes"
SHORT = 288  # SSCD's input short side; ResNet50 resizes to 256 and crops 224
SIZE = (384, SHORT)  # 4:3 crops
# scikit-image photographs with a stated licence (public domain or CC0), per set.
CALIBRATION = (
    "astronaut",
    "coffee",
    "hubble_deep_field",
    "retina",
    "brick",
    "grass",
    "clock",
    "text",
)
PROBES = ("chelsea", "rocket", "immunohistochemistry", "coins", "gravel", "camera")
# Where each of the two crops sits, as a share of the free width and height.
CROPS = ((0.0, 0.2), (0.6, 0.8))


def crops(name: str) -> list[Image.Image]:
    """Two overlapping 4:3 crops of a scikit-image photograph, RGB, 384x288."""
    from skimage import data

    pixels = np.asarray(getattr(data, name)())
    if pixels.dtype == bool:
        pixels = pixels.astype(np.uint8) * 255
    image = Image.fromarray(pixels).convert("RGB")
    scale = max(SIZE[0] / image.width, SIZE[1] / image.height) * 1.25  # room to move the crop
    image = image.resize(
        (round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS
    )
    out = []
    for fx, fy in CROPS:
        left = round(fx * (image.width - SIZE[0]))
        top = round(fy * (image.height - SIZE[1]))
        out.append(image.crop((left, top, left + SIZE[0], top + SIZE[1])))
    return out


def main(out: Path = OUT) -> int:
    """Write calibration-*.jpg and probe-*.jpg into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.jpg"):
        old.unlink()
    for prefix, names in (("calibration", CALIBRATION), ("probe", PROBES)):
        for name in names:
            for n, crop in enumerate(crops(name)):
                crop.save(out / f"{prefix}-{name}-{n}.jpg", quality=85, optimize=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT))
