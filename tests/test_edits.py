"""The benchmark's edits: the named set, their effect, and the same bytes for the same seed."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from search.edits import EDITS, GROUPS, apply

skimage_data = pytest.importorskip("skimage.data")

NAMES = [
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
]


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A real photo, 451 x 300 (odd width on purpose)."""
    return Image.fromarray(skimage_data.chelsea()).convert("RGB")


def _decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    return image


def _jpeg(image: Image.Image, quality: int = 90) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _gray(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.float32)


def test_the_benchmark_has_exactly_the_named_edits_in_two_groups() -> None:
    assert list(EDITS) == NAMES
    grouped = [*GROUPS["simple"], *GROUPS["geometric"]]
    assert sorted(grouped) == sorted(NAMES)
    assert set(GROUPS["geometric"]) == {"crop", "border", "rotate", "crop+border+rotate"}


@pytest.mark.parametrize("name", NAMES)
def test_every_edit_returns_the_same_jpeg_bytes_for_the_same_seed(
    photo: Image.Image, name: str
) -> None:
    first = EDITS[name](photo, 3)

    assert first[:2] == b"\xff\xd8"
    assert EDITS[name](photo.copy(), 3) == first
    _decode(first).load()


def test_the_seed_moves_the_crop_and_changes_the_caption(photo: Image.Image) -> None:
    crops = {EDITS["crop"](photo, seed) for seed in range(6)}
    captions = {EDITS["caption"](photo, seed) for seed in range(6)}

    assert len(crops) > 1
    assert len(captions) > 1


def test_sizes_change_as_documented(photo: Image.Image) -> None:
    width, height = photo.size  # 451 x 300

    def size(name: str) -> tuple[int, int]:
        return _decode(EDITS[name](photo, 0)).size

    assert size("resize") == (338, 225)
    assert size("crop") == (406, 270)
    assert size("caption") == (451, 336)
    assert size("border") == (541, 360)
    assert size("mirror") == size("grayscale") == size("brightness") == (width, height)
    rotated = size("rotate")
    assert rotated[0] > width and rotated[1] > height


@pytest.mark.parametrize("seed", range(8))
def test_the_crop_keeps_90_percent_and_is_never_centred(photo: Image.Image, seed: int) -> None:
    cropped = _gray(_decode(EDITS["crop"](photo, seed)))

    scores = cv2.matchTemplate(_gray(photo), cropped, cv2.TM_SQDIFF)
    _, _, (left, top), _ = cv2.minMaxLoc(scores)

    slack_x, slack_y = photo.width - cropped.shape[1], photo.height - cropped.shape[0]
    for offset, slack in ((left, slack_x), (top, slack_y)):
        assert not 0.3 * slack < offset < 0.7 * slack


@pytest.mark.parametrize("seed", range(4))
def test_the_caption_is_a_plain_bar_with_text_above_or_below(photo: Image.Image, seed: int) -> None:
    captioned = _gray(_decode(EDITS["caption"](photo, seed)))
    bar = round(photo.height * 0.12)
    top, bottom = captioned[:bar], captioned[-bar:]
    original = _gray(photo)

    # One end is the photo, the other a black or white bar with some ink on it.
    on_top = np.abs(captioned[bar:] - original).mean() < np.abs(captioned[:-bar] - original).mean()
    strip = top if on_top else bottom
    background = np.median(strip)
    assert background < 20 or background > 235
    assert 0.01 < (np.abs(strip - background) > 100).mean() < 0.5


def test_mirror_is_a_left_right_flip(photo: Image.Image) -> None:
    mirrored = _gray(_decode(EDITS["mirror"](photo, 0)))

    assert np.abs(mirrored - _gray(_jpeg(ImageOps.mirror(photo)))).mean() < 1.0
    assert np.abs(mirrored - _gray(photo)).mean() > 10.0


def test_grayscale_drops_the_colour(photo: Image.Image) -> None:
    assert _decode(EDITS["grayscale"](photo, 0)).mode == "L"
    assert _decode(EDITS["grayscale+brightness"](photo, 0)).mode == "L"


def test_brightness_raises_dark_pixels_by_35_percent(photo: Image.Image) -> None:
    before = _gray(photo)
    after = _gray(_decode(EDITS["brightness"](photo, 0)))
    dark = before < 150  # well below clipping

    assert after[dark].mean() / before[dark].mean() == pytest.approx(1.35, abs=0.03)


def test_border_is_white_and_rotate_fills_its_corners_white(photo: Image.Image) -> None:
    bordered = _gray(_decode(EDITS["border"](photo, 0)))
    rotated = _gray(_decode(EDITS["rotate"](photo, 0)))

    assert bordered[:20].min() > 240 and bordered[:, :30].min() > 240
    for corner in (rotated[:5, :5], rotated[:5, -5:], rotated[-5:, :5], rotated[-5:, -5:]):
        assert corner.min() > 240


def test_recompression_is_lossier_than_the_default_quality(photo: Image.Image) -> None:
    plain = EDITS["mirror"](photo, 0)  # quality 90
    recompressed = EDITS["recompress"](photo, 0)  # quality 40
    error = np.abs(_gray(_decode(recompressed)) - _gray(photo)).mean()

    assert len(recompressed) < len(plain) / 2
    assert 0.5 < error < 10.0


def test_an_unknown_step_is_refused(photo: Image.Image) -> None:
    with pytest.raises(KeyError, match="sharpen"):
        apply("resize+sharpen", photo, 0)
