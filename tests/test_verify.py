"""Geometric verification: edited copies are confirmed, look-alikes and textures are not."""

from __future__ import annotations

import io
import itertools
import json

import numpy as np
import pytest
from PIL import Image

from search.edits import EDITS
from search.verify import Features, Verification, extract, verify

skimage_data = pytest.importorskip("skimage.data")


def _rgb(array: np.ndarray) -> Image.Image:
    return Image.fromarray(np.asarray(array)).convert("RGB")


def _stripes(period: float, angle: float, phase: float, size: int = 512) -> Image.Image:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    along = x * np.cos(np.deg2rad(angle)) + y * np.sin(np.deg2rad(angle))
    values = np.where(np.sin(2 * np.pi * along / period + phase) > 0, 230, 30)
    return _rgb(values.astype(np.uint8))


def _decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    """Real photos from scikit-image's sample data."""
    return {
        "astronaut": _rgb(skimage_data.astronaut()),
        "coffee": _rgb(skimage_data.coffee()),
        "camera": _rgb(skimage_data.camera()),
        "rocket": _rgb(skimage_data.rocket()),
        "chelsea": _rgb(skimage_data.chelsea()),
    }


@pytest.fixture(scope="module")
def catalog(photos: dict[str, Image.Image]) -> dict[str, Features]:
    """Features of the original photos, as the catalog side of a comparison."""
    return {name: extract(image, mirror=False) for name, image in photos.items()}


@pytest.fixture(scope="module")
def textures() -> dict[str, Image.Image]:
    """Repetitive textures: photos of bricks, grass and gravel, a checkerboard, stripes."""
    return {
        "brick": _rgb(skimage_data.brick()),
        "grass": _rgb(skimage_data.grass()),
        "gravel": _rgb(skimage_data.gravel()),
        "checkerboard": _rgb(skimage_data.checkerboard()),
        "stripes 15deg": _stripes(12, 15, 0.0),
        "stripes 15deg, other phase": _stripes(12, 15, 2.0),
        "stripes 30deg": _stripes(20, 30, 0.0),
        "stripes 30deg, other phase": _stripes(20, 30, 1.5),
        "stripes 45deg": _stripes(16, 45, 0.0),
        "stripes 75deg": _stripes(12, 75, 1.0),
    }


@pytest.mark.parametrize("edit", list(EDITS))
@pytest.mark.parametrize("name", ["astronaut", "chelsea"])
def test_every_benchmark_edit_of_a_photo_verifies_against_its_original(
    photos: dict[str, Image.Image], catalog: dict[str, Features], name: str, edit: str
) -> None:
    query = extract(_decode(EDITS[edit](photos[name], 7)))

    result = verify(query, catalog[name])

    assert result.is_copy, result.as_dict()
    assert result.mirrored == ("mirror" in edit)
    assert result.correlation >= 0.85 and result.inliers >= 15 and result.overlap >= 0.25


def test_edited_photos_do_not_verify_against_any_other_photo(
    photos: dict[str, Image.Image], catalog: dict[str, Features]
) -> None:
    accepted = []
    for name, image in photos.items():
        for edit in ("resize+caption+recompress", "mirror", "crop+border+rotate"):
            query = extract(_decode(EDITS[edit](image, 1)))
            for other, candidate in catalog.items():
                if other != name and verify(query, candidate).is_copy:
                    accepted.append((name, edit, other))
    assert accepted == []


def test_another_photo_of_the_same_scene_is_not_a_copy() -> None:
    left, right, _ = skimage_data.stereo_motorcycle()

    result = verify(extract(_rgb(left)), extract(_rgb(right)))

    # Many keypoints agree (the scene is the same) but the pixels do not line up (parallax).
    assert result.inliers >= 15
    assert not result.is_copy
    assert result.reason == "aligned pixels differ"


def test_repetitive_textures_match_neither_each_other_nor_photos(
    textures: dict[str, Image.Image], catalog: dict[str, Features]
) -> None:
    features = {name: extract(image) for name, image in textures.items()}
    everything = {**features, **catalog}
    accepted = [
        (query, candidate)
        for query, candidate in itertools.permutations(everything, 2)
        if (query in features or candidate in features)
        and verify(everything[query], everything[candidate]).is_copy
    ]
    assert accepted == []


def test_a_photo_with_a_pasted_patch_of_another_is_a_copy_only_of_the_background(
    photos: dict[str, Image.Image], catalog: dict[str, Features]
) -> None:
    collage = photos["coffee"].copy()
    collage.paste(photos["astronaut"].crop((150, 50, 300, 200)), (400, 200))
    query = extract(collage)

    assert verify(query, catalog["coffee"]).is_copy
    assert not verify(query, catalog["astronaut"]).is_copy


def test_a_small_crop_needs_a_lower_minimum_overlap(
    photos: dict[str, Image.Image], catalog: dict[str, Features]
) -> None:
    query = extract(photos["astronaut"].crop((100, 100, 300, 300)))  # 15% of the area

    strict = verify(query, catalog["astronaut"])
    lenient = verify(query, catalog["astronaut"], min_overlap=0.1)

    assert not strict.is_copy and strict.reason == "overlap too small"
    assert lenient.is_copy
    assert 0.1 <= lenient.overlap < 0.25


@pytest.mark.parametrize(
    "flat",
    [
        Image.new("RGB", (400, 300), (128, 128, 128)),
        Image.new("RGB", (400, 300), "white"),
        _rgb(np.tile(np.linspace(0, 255, 400, dtype=np.uint8), (300, 1))),  # smooth ramp
    ],
    ids=["gray", "white", "ramp"],
)
def test_flat_images_are_never_copies(flat: Image.Image, catalog: dict[str, Features]) -> None:
    features = extract(flat)

    assert not verify(features, features).is_copy
    assert not verify(features, catalog["camera"]).is_copy
    assert not verify(catalog["camera"], features).is_copy


@pytest.mark.parametrize(
    "size", [(0, 0), (1, 1), (8, 8), (1, 500), (500, 1), (2, 3), (63, 63), (70, 3000)]
)
@pytest.mark.parametrize("noisy", [False, True], ids=["flat", "noise"])
def test_tiny_and_odd_sized_images_do_not_raise(
    size: tuple[int, int], noisy: bool, catalog: dict[str, Features]
) -> None:
    width, height = size
    if noisy and width and height:
        pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
    else:
        image = Image.new("RGB", size, (90, 90, 90))

    features = extract(image)

    for result in (
        verify(features, features),
        verify(features, catalog["rocket"]),
        verify(catalog["rocket"], features),
    ):
        assert not result.is_copy


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I", "F"])
def test_any_pil_mode_is_accepted(photos: dict[str, Image.Image], mode: str) -> None:
    image = photos["chelsea"].convert(mode)

    assert verify(extract(image), extract(photos["chelsea"])).is_copy


def test_extract_caps_the_long_side_and_never_upscales() -> None:
    assert extract(Image.new("RGB", (1000, 800))).size == (512, 410)
    assert extract(Image.new("RGB", (300, 200))).size == (300, 200)
    assert extract(Image.new("RGB", (300, 200)), side=128).size == (128, 85)


def test_mirror_features_are_computed_once_and_kept(photos: dict[str, Image.Image]) -> None:
    features = extract(photos["chelsea"])

    assert features.mirrored is features.mirrored
    assert features.mirrored.flipped and not features.flipped
    assert features.mirror and not features.mirrored.mirror
    assert features.gray is not None and features.mirrored.gray is not None
    assert np.array_equal(features.mirrored.gray, features.gray[:, ::-1])


def test_catalog_side_features_are_small_and_still_work_both_ways(
    photos: dict[str, Image.Image], catalog: dict[str, Features]
) -> None:
    catalog_side = catalog["camera"]
    sizes: list[np.ndarray] = [
        catalog_side.points,
        catalog_side.descriptors,
        catalog_side.thumb,
        catalog_side.content,
    ]
    mirrored_copy = extract(_decode(EDITS["mirror+caption"](photos["camera"], 0)))

    assert catalog_side.gray is None and not catalog_side.mirror
    assert sum(array.nbytes for array in sizes) < 80_000
    assert verify(mirrored_copy, catalog_side).is_copy
    # As a query it is compared as published (from its thumbnail), never mirrored.
    assert verify(catalog_side, extract(photos["camera"])).is_copy
    assert not verify(catalog_side, mirrored_copy).is_copy


def test_a_query_extracted_without_mirror_is_not_tried_mirrored(
    photos: dict[str, Image.Image], catalog: dict[str, Features]
) -> None:
    data = EDITS["mirror"](photos["coffee"], 0)

    assert verify(extract(_decode(data)), catalog["coffee"]).is_copy
    assert not verify(extract(_decode(data), mirror=False), catalog["coffee"]).is_copy


def test_a_verification_is_json_ready(
    photos: dict[str, Image.Image], catalog: dict[str, Features]
) -> None:
    result = verify(extract(_decode(EDITS["mirror"](photos["camera"], 0))), catalog["camera"])

    data = json.loads(json.dumps(result.as_dict()))

    assert isinstance(result, Verification)
    assert data["is_copy"] is True and data["mirrored"] is True
    assert set(data) == {"is_copy", "inliers", "correlation", "overlap", "mirrored", "reason"}
