"""PDQ hashes and border trimming on real photos: copies match, different photos do not."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pdqhash
import pytest
from PIL import Image, ImageOps
from skimage import data

from config import VerdictSettings
from embed.borders import border_box, trim_borders
from embed.pdq import BITS, DIHEDRAL, PdqHash, bits_from_hex, hamming, pdq_dihedral, pdq_hash

PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket")
MATCH = VerdictSettings().pdq_max_distance  # Meta's threshold: 31 of 256 bits
MIN_QUALITY = VerdictSettings().pdq_min_quality


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    """The scikit-image sample photos as RGB images."""
    return {name: Image.fromarray(getattr(data, name)()).convert("RGB") for name in PHOTOS}


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    """`image` after a JPEG round trip."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(buffer).convert("RGB")


def distance(a: Image.Image, b: Image.Image) -> int:
    """Hamming distance between the PDQ hashes of two images."""
    return hamming(pdq_hash(a).bits, pdq_hash(b).bits)


def best_dihedral(query: Image.Image, catalog: Image.Image) -> int:
    """The smallest distance from any dihedral variant of `query` to the catalog hash."""
    variants, _ = pdq_dihedral(query)
    return min(hamming(variant, pdq_hash(catalog).bits) for variant in variants)


# --- hashes and their format -------------------------------------------------------------------


def test_a_hash_is_256_bits_with_a_64_digit_hex(photos: dict[str, Image.Image]) -> None:
    hashed = pdq_hash(photos["chelsea"])
    assert hashed.bits.shape == (BITS,)
    assert hashed.bits.dtype == np.uint8
    assert set(np.unique(hashed.bits)) <= {0, 1}
    assert len(hashed.hex()) == 64
    assert int(hashed.hex(), 16) == int("".join(map(str, hashed.bits)), 2)
    np.testing.assert_array_equal(bits_from_hex(hashed.hex()), hashed.bits)


def test_hex_is_the_reference_hash256_format_of_pdqhash_bits(
    photos: dict[str, Image.Image],
) -> None:
    # pdqhash returns bit k of the reference Hash256 (words w[k // 16], bit k % 16) at index
    # 255 - k; the reference prints w[15] down to w[0] as %04hx. Rebuild that by hand.
    image = photos["coffee"]
    raw, _ = pdqhash.compute(np.asarray(image.resize((512, 341), Image.Resampling.BICUBIC)))
    bit = np.asarray(raw)[::-1]  # bit[k] = reference bit k
    words = [sum(int(bit[16 * w + b]) << b for b in range(16)) for w in range(16)]
    reference = "".join(f"{word:04x}" for word in reversed(words))
    assert PdqHash(bits=np.asarray(raw), quality=100).hex() == reference
    assert pdq_hash(image, trim=False).hex() == reference  # 600x400 goes to 512x341


def test_hashes_are_immutable_values(photos: dict[str, Image.Image]) -> None:
    first, second = pdq_hash(photos["rocket"]), pdq_hash(photos["rocket"])
    assert first == second and hash(first) == hash(second)
    assert first != pdq_hash(photos["coffee"])
    with pytest.raises(ValueError, match="read-only"):
        first.bits[0] = 1 - first.bits[0]


def test_malformed_hex_and_bit_vectors_are_refused() -> None:
    with pytest.raises(ValueError, match="64 hex digits"):
        bits_from_hex("abcd")
    with pytest.raises(ValueError, match="not a PDQ hex"):
        bits_from_hex("zz" * 32)
    with pytest.raises(ValueError, match="256 bits"):
        PdqHash(bits=np.zeros(255, dtype=np.uint8), quality=0)


def test_hamming_counts_differing_bits() -> None:
    bits = bits_from_hex("f" * 16 + "0" * 48)
    assert hamming(bits, bits) == 0
    assert hamming(bits, 1 - bits) == BITS
    assert hamming(bits, np.zeros(BITS, dtype=np.uint8)) == 64
    with pytest.raises(ValueError, match="shapes"):
        hamming(bits, bits[:128])


# --- copies match ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PHOTOS)
def test_a_resized_recompressed_copy_matches(photos: dict[str, Image.Image], name: str) -> None:
    photo = photos[name]
    copy = jpeg(photo.resize((photo.width * 2 // 3, photo.height * 2 // 3)), quality=60)
    assert distance(copy, photo) <= MATCH


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize(
    "turn", [Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.ROTATE_90], ids=["mirror", "rot90"]
)
def test_a_mirrored_or_rotated_copy_matches_through_a_dihedral_variant(
    photos: dict[str, Image.Image], name: str, turn: Image.Transpose
) -> None:
    photo = photos[name]
    copy = jpeg(photo.transpose(turn), quality=75)
    assert distance(copy, photo) > MATCH  # the plain hash does not see it
    assert best_dihedral(copy, photo) <= MATCH


def test_each_dihedral_variant_is_the_hash_of_the_turned_photo(
    photos: dict[str, Image.Image],
) -> None:
    # Hashed from turned pixels, a lossless mirror or rotation matches exactly; and the order
    # is pdqhash.compute_dihedral's, whose DCT-domain variants land near (not on) these.
    photo = photos["chelsea"]
    variants, quality = pdq_dihedral(photo)
    assert len(variants) == 8 and quality == pdq_hash(photo).quality
    reference, _ = pdqhash.compute_dihedral(np.asarray(photo))
    for variant, turn, theirs in zip(variants, DIHEDRAL, reference, strict=True):
        turned = photo if turn is None else photo.transpose(turn)
        assert hamming(variant, pdq_hash(turned).bits) == 0
        assert hamming(variant, np.asarray(theirs)) <= MATCH


@pytest.mark.parametrize("size", [None, (700, 451), (333, 600), (1600, 1067), (64, 90)])
def test_the_turned_hashes_are_pdqhash_s_on_the_turned_pixels_bit_for_bit(
    photos: dict[str, Image.Image], size: tuple[int, int] | None
) -> None:
    # pdq_dihedral computes 7 of its 8 variants with its own linear-algebra PDQ pipeline:
    # every photo, sizes with odd and even box windows and a side of 64, every turn.
    for photo in photos.values():
        image = photo if size is None else photo.resize(size, Image.Resampling.BICUBIC)
        variants, quality = pdq_dihedral(image, trim=False)
        for variant, turn in zip(variants, DIHEDRAL, strict=True):
            turned = image if turn is None else image.transpose(turn)
            assert hamming(variant, pdq_hash(turned, trim=False).bits) == 0, (size, turn)
        assert quality == pdq_hash(image, trim=False).quality


def test_a_4000px_photo_hashes_like_its_small_copy(photos: dict[str, Image.Image]) -> None:
    photo = photos["coffee"]
    big = photo.resize((4000, 2667), Image.Resampling.BICUBIC)
    assert distance(big, photo) <= 8


# --- borders -----------------------------------------------------------------------------------


def white_frame(image: Image.Image) -> Image.Image:
    return ImageOps.expand(image, border=image.width // 10, fill="white")


def black_letterbox(image: Image.Image) -> Image.Image:
    return ImageOps.expand(image, border=(0, image.height // 4), fill="black")


def grey_pillarbox_jpeg(image: Image.Image) -> Image.Image:
    return jpeg(ImageOps.expand(image, border=(image.width // 5, 0), fill=(128, 128, 128)), 70)


def white_frame_jpeg(image: Image.Image) -> Image.Image:
    return jpeg(white_frame(image), quality=50)


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize(
    "frame", [white_frame, black_letterbox, grey_pillarbox_jpeg, white_frame_jpeg]
)
def test_a_framed_or_letterboxed_copy_still_matches(
    photos: dict[str, Image.Image], name: str, frame: object
) -> None:
    photo = photos[name]
    copy = frame(photo)  # type: ignore[operator]
    assert hamming(pdq_hash(copy, trim=False).bits, pdq_hash(photo).bits) > MATCH
    assert distance(copy, photo) <= MATCH


def test_a_clean_border_is_cut_to_the_pixel(photos: dict[str, Image.Image]) -> None:
    photo = photos["rocket"]  # 640 x 427
    framed = ImageOps.expand(photo, border=(37, 11, 50, 64), fill=(200, 30, 30))
    assert border_box(framed) == (37, 11, 37 + 640, 11 + 427)
    big = ImageOps.expand(photo.resize((3200, 2135)), border=(3, 120, 3, 120), fill="black")
    assert border_box(big) == (3, 120, 3 + 3200, 120 + 2135)  # 3 px: thinner than one probe


def test_a_frame_inside_a_frame_is_cut_too(photos: dict[str, Image.Image]) -> None:
    photo = photos["coffee"]
    framed = ImageOps.expand(ImageOps.expand(photo, border=30, fill="white"), 60, fill="black")
    assert border_box(framed) == (90, 90, 90 + photo.width, 90 + photo.height)


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee", "rocket"])
def test_a_photo_without_borders_is_returned_unchanged(
    photos: dict[str, Image.Image], name: str
) -> None:
    assert trim_borders(photos[name]) is photos[name]


def test_a_uniform_band_of_the_photo_trims_the_same_with_or_without_a_frame(
    photos: dict[str, Image.Image],
) -> None:
    # The cameraman's sky is uniform within the tolerance, so it goes like a border would;
    # what matters is that a framed copy is cut down to the same place.
    photo = photos["camera"]
    alone = trim_borders(photo)
    assert alone.height < photo.height
    framed = trim_borders(white_frame(photo))
    assert abs(framed.width - alone.width) <= 2 and abs(framed.height - alone.height) <= 2
    assert distance(white_frame(photo), photo) <= 8


def test_a_dark_textured_edge_is_kept_but_a_flat_black_bar_is_cut(
    photos: dict[str, Image.Image],
) -> None:
    photo = photos["chelsea"]
    rng = np.random.default_rng(7)
    night = rng.integers(0, 40, size=(60, photo.width, 3), dtype=np.uint8)  # dark, not uniform
    stacked = Image.new("RGB", (photo.width, photo.height + 60))
    stacked.paste(Image.fromarray(night), (0, 0))
    stacked.paste(photo, (0, 60))
    assert trim_borders(stacked) is stacked
    barred = Image.new("RGB", stacked.size, (4, 4, 4))
    barred.paste(photo, (0, 60))
    assert border_box(barred) == (0, 60, photo.width, 60 + photo.height)


def test_at_most_max_fraction_is_cut_per_side(photos: dict[str, Image.Image]) -> None:
    canvas = Image.new("RGB", (1000, 800), "white")
    canvas.paste(photos["astronaut"].resize((50, 50)), (475, 375))
    left, top, right, bottom = border_box(canvas, max_fraction=0.4) or (0, 0, 0, 0)
    assert (left, top, right, bottom) == (400, 320, 600, 480)


@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255), (90, 140, 30)])
def test_a_flat_image_is_kept_whole_and_has_low_quality(colour: tuple[int, int, int]) -> None:
    flat = Image.new("RGB", (300, 200), colour)
    assert trim_borders(flat) is flat
    assert pdq_hash(flat).quality < MIN_QUALITY
    assert pdq_dihedral(flat)[1] < MIN_QUALITY


def test_photos_have_full_quality(photos: dict[str, Image.Image]) -> None:
    assert all(pdq_hash(photo).quality >= MIN_QUALITY for photo in photos.values())


@pytest.mark.parametrize("size", [(1, 500), (500, 1), (1, 1), (2, 2), (3, 700), (20, 4000)])
def test_slivers_and_tiny_images_neither_crash_nor_vanish(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))
    trimmed = trim_borders(image)
    assert trimmed.width >= 1 and trimmed.height >= 1
    assert pdq_hash(image).bits.shape == (BITS,)
    assert len(pdq_dihedral(image)[0]) == 8


def test_images_in_other_modes_are_trimmed_and_hashed(photos: dict[str, Image.Image]) -> None:
    framed = white_frame(photos["rocket"])
    expected = border_box(framed)
    for mode in ("L", "RGBA", "P", "CMYK"):
        assert border_box(framed.convert(mode)) == expected
        assert hamming(pdq_hash(framed.convert(mode)).bits, pdq_hash(framed).bits) <= MATCH


def test_different_photos_are_far_apart(photos: dict[str, Image.Image]) -> None:
    gaps = [distance(a, b) for a, b in itertools.combinations(photos.values(), 2)]
    assert min(gaps) > MATCH
    assert 96 <= float(np.mean(gaps)) <= 160  # unrelated hashes differ in about half the bits
