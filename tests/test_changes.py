"""The "what changed" map on real photos: local edits are boxed, whole-picture edits are not.

The photos are scikit-image's astronaut and coffee, of the tuning set; the held-out photos that
the README reports on are never used here.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.eval_changes import HELD_OUT, TUNE, boxed
from search import verify
from search.changes import KINDS, Changes, Region, _fit, what_changed
from search.edits import apply
from search.local_edits import manipulate
from tests.conftest import photo

Box = tuple[int, int, int, int]


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return photo("astronaut")


@pytest.fixture(scope="module")
def coffee() -> Image.Image:
    return photo("coffee")


def decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def shared(image: Image.Image) -> Image.Image:
    """Resized to 80% and recompressed, as a shared copy is."""
    size = (round(image.width * 0.8), round(image.height * 0.8))
    buffer = io.BytesIO()
    image.resize(size, Image.Resampling.LANCZOS).save(buffer, format="JPEG", quality=75)
    return decode(buffer.getvalue())


def union_share(changes: Changes, size: tuple[int, int]) -> float:
    mask = np.zeros((size[1], size[0]), bool)
    for region in changes.regions:
        x0, y0, x1, y1 = region.box
        mask[y0:y1, x0:x1] = True
    return float(mask.mean())


def test_the_tests_use_no_held_out_photo() -> None:
    assert {"astronaut", "coffee", "brick", "grass"} <= set(TUNE)
    assert not set(TUNE) & set(HELD_OUT)


def test_a_pasted_patch_is_boxed(astronaut: Image.Image, coffee: Image.Image) -> None:
    pixels = np.asarray(astronaut).copy()
    pixels[300:400, 320:430] = np.asarray(coffee)[150:250, 250:360]  # a cup over the suit
    query = shared(Image.fromarray(pixels))
    truth: Box = (256, 240, 344, 320)  # the patch at 80%
    changes = what_changed(query, astronaut, against="astronaut")
    assert changes is not None
    assert boxed(changes, truth, query.size), changes.regions
    assert len(changes.regions) == 1
    region = changes.regions[0]
    assert region.kind == "content replaced"
    assert region.share == pytest.approx(
        (region.box[2] - region.box[0]) * (region.box[3] - region.box[1]) / (410 * 410)
    )
    assert 0.02 < changes.changed_share < 0.08
    assert "resized" in changes.global_edits
    assert changes.scale == pytest.approx(0.8, abs=0.01)
    assert changes.summary().startswith("a region of ")


def test_boxed_needs_the_region_and_no_more() -> None:
    """The scoring itself can fail: a box off the region, or one far too large."""
    truth: Box = (100, 100, 200, 200)

    def changes(*boxes: Box) -> Changes:
        regions = tuple(Region(box=box, share=0.0, kind="content replaced") for box in boxes)
        return Changes("x", 1.0, 0.0, False, 1.0, 1.0, 0.0, regions, ())

    assert boxed(changes((110, 110, 210, 190)), truth, (400, 400))
    assert not boxed(changes((150, 150, 300, 300)), truth, (400, 400))  # covers a quarter
    assert not boxed(changes((0, 0, 300, 300)), truth, (400, 400))  # 8x the area elsewhere
    assert not boxed(changes(), truth, (400, 400))
    assert not boxed(None, truth, (400, 400))


@pytest.mark.parametrize(
    ("manipulation", "kind"),
    [("text", "text added"), ("inpaint", "content removed or smoothed")],
)
def test_painted_text_and_an_inpainted_removal_are_boxed_and_told(
    astronaut: Image.Image, coffee: Image.Image, manipulation: str, kind: str
) -> None:
    copy = manipulate(manipulation, astronaut, coffee, 0)
    query = decode(copy.data)
    changes = what_changed(query, astronaut, against="astronaut")
    assert changes is not None
    assert boxed(changes, copy.box, query.size), (copy.box, changes.regions)
    assert changes.regions[0].kind == kind


def test_a_low_texture_change_that_keypoints_miss_is_found(astronaut: Image.Image) -> None:
    """A soft brightening of the flat dark background: no keypoint in it, the dense map sees it."""
    pixels = np.asarray(astronaut).astype(np.float32)
    yy, xx = np.mgrid[0:512, 0:512]
    blob = np.exp(-(((xx - 104) / 28.0) ** 2 + ((yy - 88) / 28.0) ** 2))
    pixels += 45.0 * blob[..., None]
    edited = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    points = verify.extract(edited, side=1024, n_features=3000).points
    inside = (np.abs(points[:, 0] - 104) < 40) & (np.abs(points[:, 1] - 88) < 40)
    assert int(inside.sum()) <= 2  # the keypoints do not see it
    query = shared(edited)
    changes = what_changed(query, astronaut, against="astronaut")
    assert changes is not None
    truth: Box = (round(66 * 0.8), round(50 * 0.8), round(142 * 0.8), round(126 * 0.8))
    assert boxed(changes, truth, query.size), changes.regions


def soft_picture(change: bool) -> Image.Image:
    """Colour washes with no corner or edge in them: nothing for keypoints to hold on to."""
    yy, xx = np.mgrid[0:300, 0:400].astype(np.float32)
    rng = np.random.default_rng(3)
    pixels = np.full((300, 400, 3), 60.0, np.float32)
    for _ in range(6):
        cx, cy, r = rng.uniform(0, 400), rng.uniform(0, 300), rng.uniform(40, 110)
        wash = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        pixels += rng.uniform(0, 150, 3) * wash[..., None]
    if change:  # a reddening, soft-edged (sigma 22 px) around (250, 120)
        blob = np.exp(-((xx - 250) ** 2 + (yy - 120) ** 2) / (2 * 22.0**2))
        pixels += np.array([70.0, -40.0, -40.0]) * blob[..., None]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def test_a_picture_without_keypoints_is_aligned_densely() -> None:
    original = soft_picture(change=False)
    untouched = shared(original)
    assert isinstance(_fit(untouched, original), str)  # the keypoints find no transform
    found = what_changed(untouched, original, against="soft")
    assert found is not None  # the dense fit does
    assert found.regions == ()
    assert found.scale == pytest.approx(0.8, abs=0.01)
    assert found.global_edits == ("resized",)
    query = shared(soft_picture(change=True))
    changes = what_changed(query, original, against="soft")
    assert changes is not None
    truth: Box = (165, 61, 235, 131)  # two sigmas around the centre, at 80%
    assert boxed(changes, truth, query.size), changes.regions
    assert changes.regions[0].kind == "colour changed"


WHOLE = {
    "resize": "resized",
    "recompress": "",
    "resize+recompress": "resized",
    "mirror": "mirrored",
    "crop": "cropped 19%",
    "brightness": "brightness changed",
    "grayscale": "greyscale",
    "rotate": "rotated 4°",
    "caption": "caption bar added",
    "border": "border added",
}


@pytest.mark.parametrize("edit", list(WHOLE))
@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_whole_picture_edits_report_no_region(edit: str, name: str) -> None:
    original = photo(name)
    query = decode(apply(edit, original, 0))
    changes = what_changed(query, original, against=name)
    assert changes is not None
    assert changes.regions == ()
    assert changes.changed_share == 0.0
    if WHOLE[edit]:
        assert WHOLE[edit] in changes.global_edits
    assert changes.mirrored == (edit == "mirror")
    assert changes.summary().startswith("no local change")
    if edit in ("resize", "recompress", "mirror"):
        assert changes.overlap_query > 0.97 and changes.overlap_original > 0.97
    if edit == "recompress":
        assert changes.global_edits == ()


def test_a_mirrored_copy_is_boxed_where_the_upload_has_the_change(
    astronaut: Image.Image, coffee: Image.Image
) -> None:
    pixels = np.asarray(astronaut).copy()
    pixels[40:140, 30:130] = np.asarray(coffee)[150:250, 250:350]
    query = shared(Image.fromarray(pixels[:, ::-1]))  # the patch lands on the right
    truth: Box = (round((512 - 130) * 0.8), 32, round((512 - 30) * 0.8), 112)
    changes = what_changed(query, astronaut, against="astronaut")
    assert changes is not None
    assert changes.mirrored
    assert boxed(changes, truth, query.size), changes.regions


def test_boxes_are_in_the_upload_pixels_when_the_query_was_decoded_smaller(
    astronaut: Image.Image, coffee: Image.Image
) -> None:
    copy = manipulate("paste", astronaut, coffee, 1)
    upload = decode(copy.data)
    small = upload.resize((upload.width // 2, upload.height // 2), Image.Resampling.BOX)
    full = what_changed(upload, astronaut, against="astronaut")
    halved = what_changed(small, astronaut, against="astronaut", query_size=upload.size)
    assert full is not None and halved is not None
    assert boxed(halved, copy.box, upload.size), (copy.box, halved.regions)
    assert halved.scale == pytest.approx(full.scale, rel=0.02)
    for a, b in zip(full.regions[0].box, halved.regions[0].box, strict=True):
        assert abs(a - b) <= 8
    assert halved.changed_share == pytest.approx(full.changed_share, abs=0.01)


def test_the_json_shape(astronaut: Image.Image, coffee: Image.Image) -> None:
    copy = manipulate("recolour", astronaut, coffee, 0)
    changes = what_changed(decode(copy.data), astronaut, against="abc123")
    assert changes is not None
    shape = json.loads(json.dumps(changes.as_dict()))
    assert set(shape) == {"against", "transform", "overlap", "changed_share", "regions", "global"}
    assert shape["against"] == "abc123"
    assert set(shape["transform"]) == {"scale", "rotation_deg", "mirrored"}
    assert set(shape["overlap"]) == {"query", "original"}
    assert shape["global"] == list(changes.global_edits)
    assert shape["regions"]
    for region in shape["regions"]:
        assert set(region) == {"box", "share", "kind"}
        assert len(region["box"]) == 4 and all(isinstance(v, int) for v in region["box"])
        assert region["kind"] in KINDS
        assert 0 < region["share"] <= 1


def test_unrelated_photos_give_none_and_say_why(
    astronaut: Image.Image, coffee: Image.Image, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="search.changes"):
        assert what_changed(coffee, astronaut, against="astronaut") is None
    assert "no transform fitted" in caplog.text
    assert what_changed(photo("brick"), coffee, against="coffee") is None
    assert what_changed(photo("grass"), photo("brick"), against="brick") is None  # two textures


def test_local_edits_are_seeded_and_boxed_inside_the_copy(
    astronaut: Image.Image, coffee: Image.Image
) -> None:
    for name in ("paste", "inpaint", "text", "clone", "recolour"):
        first = manipulate(name, astronaut, coffee, 3)
        assert manipulate(name, astronaut, coffee, 3) == first
        assert manipulate(name, astronaut, coffee, 4).data != first.data
        x0, y0, x1, y1 = first.box
        copy = decode(first.data)
        assert copy.size == (410, 410)
        assert 0 <= x0 < x1 <= copy.width and 0 <= y0 < y1 <= copy.height
        area = (x1 - x0) * (y1 - y0) / (copy.width * copy.height)
        assert 0.003 < area < 0.12, name


def test_eval_changes_prints_both_rates(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app import eval_changes
    from app.cli import main

    monkeypatch.setattr(eval_changes, "HELD_OUT", ("astronaut",))
    assert main(["eval", "changes", "--seeds", "1", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    held_out = figures["held-out"]
    assert held_out["photos"] == ["astronaut"]
    assert sum(r["of"] for r in held_out["local"].values()) == 5
    assert sum(r["of"] for r in held_out["whole"].values()) == 14
    assert held_out["local_boxed"] >= 0.8
    assert held_out["whole_false"] == 0.0


def test_eval_changes_reports_on_a_folder_of_photos_and_leaves_out_broken_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import main

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("coffee", "rocket"):
        photo(name).resize((300, 200)).save(folder / f"{name}.jpg", quality=92)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a picture")
    (folder / "notes.txt").write_text("not a photo")
    assert main(["eval", "changes", str(folder), "--seeds", "1", "--json"]) == 0
    out, err = capsys.readouterr()
    figures = json.loads(out.strip().splitlines()[-1])
    assert list(figures) == [str(folder)]  # the folder instead of the held-out photos
    result = figures[str(folder)]
    assert result["photos"] == ["coffee.jpg", "rocket.jpg"]
    assert sum(r["of"] for r in result["local"].values()) == 10
    assert "broken.jpg is left out" in err
    (folder / "rocket.jpg").unlink()
    assert main(["eval", "changes", str(folder)]) == 2  # one photo: nothing to compare
    assert "fewer than two photos" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "factor"), [("rocket", 1.35), ("coffee", 1.6), ("page", 1.6)])
def test_brightening_that_clips_highlights_is_no_region(name: str, factor: float) -> None:
    from PIL import ImageEnhance

    original = photo(name)
    upload = io.BytesIO()
    ImageEnhance.Brightness(original).enhance(factor).save(upload, "JPEG", quality=90)
    changes = what_changed(decode(upload.getvalue()), original, against="x")
    assert changes is not None
    assert changes.regions == ()  # the clipped whites are the curve's, not a local edit
    assert "brightness changed" in changes.global_edits


def test_eval_changes_verdict_checks_each_copy_through_a_scratch_catalog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app import eval_changes
    from app.cli import main

    monkeypatch.setenv("IMGSEARCH_EMBED__WEIGHTS", "random")
    monkeypatch.setenv("IMGSEARCH_TEXT__ENABLED", "false")
    monkeypatch.setenv("IMGSEARCH_DATA_DIR", str(tmp_path / "untouched"))
    monkeypatch.setattr(eval_changes, "HELD_OUT", ("coffee", "rocket"))
    assert main(["eval", "changes", "--seeds", "1", "--verdict", "--json"]) == 0
    verdicts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["held-out"]["verdicts"]
    assert verdicts["copies"] == 10
    assert verdicts["verdict_copy"] >= 0.9  # a local edit, resized and recompressed, is a copy
    assert verdicts["boxed_in_check"] >= 0.7
    assert verdicts["wrong_original"] == 0
    assert not (tmp_path / "untouched").exists()  # the user's catalog is never written
