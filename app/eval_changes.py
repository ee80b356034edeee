"""`imgsearch eval changes`: how well the "what changed" map boxes local edits, and stays quiet.

Copies with one local manipulation (`search.local_edits`) must get their region boxed: the
boxes cover at least half of the true region and add at most 1.5x its area elsewhere. The
whole-picture edits of the copy benchmark (`search.edits`) must box no more than 2% of the
picture. Photos are scikit-image's bundled ones (a dev dependency), split once and for all into
a TUNE set, that the thresholds were chosen on, and a HELD_OUT set, that they are reported on;
or every photo in a folder (`imgsearch eval changes DIR`), for pictures nobody tuned on.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
from PIL import Image

from app.runtime import scratch_runtime
from config import Settings
from ingest.sources.folder import FolderSource
from search.changes import Changes, what_changed
from search.edits import EDITS
from search.local_edits import MANIPULATIONS, manipulate
from store.keys import point_id

TUNE: Final = (
    "astronaut",
    "coffee",
    "rocket",
    "coins",
    "retina",
    "immunohistochemistry",
    "brick",
    "grass",
    "page",
    "clock",
)
# Skies and gradients (camera, colorwheel), a repetitive texture (gravel), text, dark and
# night photos (moon, hubble_deep_field), fur (chelsea), microscopy (cell).
HELD_OUT: Final = (
    "camera",
    "chelsea",
    "hubble_deep_field",
    "moon",
    "text",
    "gravel",
    "cell",
    "colorwheel",
)
# A folder's photos are shrunk to this long side first, as a picture shared on the web is.
FOLDER_SIDE: Final = 1600
PHOTO_SUFFIXES: Final = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff")
MIN_COVER: Final = 0.5
MAX_EXTRA: Final = 1.5
MAX_FALSE_SHARE: Final = 0.02


def skimage_photo(name: str) -> Image.Image:
    """One of scikit-image's bundled photos, as RGB."""
    import skimage.data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


def folder_photos(folder: Path) -> dict[str, Image.Image]:
    """Every photo in the folder (not recursive), RGB, no longer than FOLDER_SIDE, by file name."""
    photos: dict[str, Image.Image] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in PHOTO_SUFFIXES:
            continue
        try:
            with Image.open(path) as image:
                picture = image.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            print(f"{path.name} is left out: not a readable image ({exc}).", file=sys.stderr)
            continue
        picture.thumbnail((FOLDER_SIDE, FOLDER_SIDE), Image.Resampling.LANCZOS)
        photos[path.name] = picture
    return photos


def boxed(changes: Changes | None, truth: tuple[int, int, int, int], size: tuple[int, int]) -> bool:
    """Whether the boxes cover half the true box and add at most 1.5x its area elsewhere."""
    if changes is None:
        return False
    union = np.zeros((size[1], size[0]), bool)
    for region in changes.regions:
        x0, y0, x1, y1 = region.box
        union[y0:y1, x0:x1] = True
    x0, y0, x1, y1 = truth
    area = max(1, (x1 - x0) * (y1 - y0))
    inside = int(union[y0:y1, x0:x1].sum())
    extra = int(union.sum()) - inside
    return inside >= MIN_COVER * area and extra <= MAX_EXTRA * area


def _decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def evaluate_changes(images: Mapping[str, Image.Image], seeds: int) -> dict[str, Any]:
    """The two rates on these photos: local manipulations boxed, whole-picture edits boxing >2%."""
    photos = tuple(images)
    local: dict[str, dict[str, int]] = {name: {"found": 0, "of": 0} for name in MANIPULATIONS}
    missed: list[str] = []
    started = time.perf_counter()
    calls = 0
    for index, name in enumerate(photos):
        original = images[name]
        donor = images[photos[(index + 1) % len(photos)]]
        for manipulation in MANIPULATIONS:
            for seed in range(seeds):
                copy = manipulate(manipulation, original, donor, seed)
                query = _decode(copy.data)
                changes = what_changed(query, original, against=name)
                calls += 1
                hit = boxed(changes, copy.box, query.size)
                local[manipulation]["of"] += 1
                local[manipulation]["found"] += int(hit)
                if not hit:
                    missed.append(f"{name}/{manipulation}/{seed}")
    whole: dict[str, dict[str, int]] = {name: {"false": 0, "of": 0} for name in EDITS}
    false: list[str] = []
    highest = 0.0
    for name in photos:
        original = images[name]
        for edit, apply in EDITS.items():
            for seed in range(seeds):
                query = _decode(apply(original, seed))
                changes = what_changed(query, original, against=name)
                calls += 1
                share = changes.changed_share if changes is not None else 0.0
                highest = max(highest, share)
                whole[edit]["of"] += 1
                if share > MAX_FALSE_SHARE:
                    whole[edit]["false"] += 1
                    false.append(f"{name}/{edit}/{seed}: {share:.3f}")
    elapsed = time.perf_counter() - started
    found = sum(r["found"] for r in local.values())
    of = sum(r["of"] for r in local.values())
    wrong = sum(r["false"] for r in whole.values())
    total = sum(r["of"] for r in whole.values())
    return {
        "photos": list(photos),
        "seeds": seeds,
        "local": local,
        "local_boxed": round(found / of, 4) if of else 0.0,
        "local_missed": missed,
        "whole": whole,
        "whole_false": round(wrong / total, 4) if total else 0.0,
        "whole_false_cases": false,
        "highest_whole_share": round(highest, 4),
        "ms_per_call": round(1000 * elapsed / max(1, calls), 1),
    }


def evaluate_verdicts(
    settings: Settings, images: Mapping[str, Image.Image], seeds: int
) -> dict[str, Any]:
    """Through the product: the photos ingested into a throw-away catalog, each manipulated copy
    checked as an upload is (`SearchService.search_bytes`); the share called a copy of its own
    original, and the share whose changed region the check's `changes` boxes."""
    photos = tuple(images)
    with tempfile.TemporaryDirectory(prefix="imgsearch-eval-") as tmp:
        folder = Path(tmp) / "catalog"
        folder.mkdir()
        ids: dict[str, str] = {}
        for number, name in enumerate(photos):
            buffer = io.BytesIO()
            images[name].save(buffer, "JPEG", quality=92)
            (folder / f"{number:04d}.jpg").write_bytes(buffer.getvalue())
            ids[name] = point_id(hashlib.sha256(buffer.getvalue()).hexdigest())
        with scratch_runtime(settings, Path(tmp) / "data") as runtime:
            runtime.pipeline.run([FolderSource("eval", folder)])
            tally = {"copy": 0, "boxed": 0, "wrong": 0, "of": 0}
            missed: list[str] = []
            for index, name in enumerate(photos):
                donor = images[photos[(index + 1) % len(photos)]]
                for manipulation in MANIPULATIONS:
                    for seed in range(seeds):
                        copy = manipulate(manipulation, images[name], donor, seed)
                        result = runtime.search.search_bytes(copy.data, top_k=3)
                        called = result.verdict.ids()
                        found = result.verdict.kind == "copy" and ids[name] in called
                        size = _decode(copy.data).size
                        hit = found and boxed(result.changes, copy.box, size)
                        tally["of"] += 1
                        tally["copy"] += int(found)
                        tally["boxed"] += int(hit)
                        tally["wrong"] += int(bool(called - {ids[name]}))
                        if not hit:
                            missed.append(f"{name}/{manipulation}/{seed}: {result.verdict.kind}")
    of = max(1, tally["of"])
    return {
        "copies": tally["of"],
        "verdict_copy": round(tally["copy"] / of, 4),
        "boxed_in_check": round(tally["boxed"] / of, 4),
        "wrong_original": tally["wrong"],
        "missed": missed,
    }


def print_changes(figures: dict[str, Any], title: str) -> None:
    """The figures of one photo set as a table."""
    print(f"{title}: {', '.join(figures['photos'])} ({figures['seeds']} seeds)")
    for name, r in figures["local"].items():
        print(f"  {name:<28}{r['found']:>4} of {r['of']} boxed")
    print(f"  local manipulations boxed: {figures['local_boxed']:.3f}")
    for name, r in figures["whole"].items():
        print(f"  {name:<28}{r['false']:>4} of {r['of']} box more than 2%")
    print(f"  whole-picture edits boxing more than 2%: {figures['whole_false']:.3f}")
    print(f"  largest boxed share on a whole-picture edit: {figures['highest_whole_share']}")
    print(f"  {figures['ms_per_call']} ms per comparison")
    verdicts = figures.get("verdicts")
    if verdicts:
        print(
            f"  through the check ({verdicts['copies']} copies): copy verdict "
            f"{verdicts['verdict_copy']:.3f}, boxed {verdicts['boxed_in_check']:.3f}, "
            f"another picture named {verdicts['wrong_original']}"
        )


def cmd_eval_changes(args: argparse.Namespace, settings: Settings) -> int:
    """Print the what-changed figures on the held-out photos (and the tuning ones with --tune)."""
    sets: list[tuple[str, tuple[str, ...]]] = [("tune", TUNE)] if args.tune else []
    if args.folder is None:
        sets.append(("held-out", HELD_OUT))
    chosen = {title: {name: skimage_photo(name) for name in names} for title, names in sets}
    if args.folder is not None:
        photos = folder_photos(Path(args.folder))
        if len(photos) < 2:
            print(
                f"{args.folder} holds fewer than two photos: nothing to compare.", file=sys.stderr
            )
            return 2
        chosen[str(args.folder)] = photos
    figures = {title: evaluate_changes(photos, args.seeds) for title, photos in chosen.items()}
    if args.verdict:
        for title, photos in chosen.items():
            figures[title]["verdicts"] = evaluate_verdicts(settings, photos, args.seeds)
    if args.json:
        print(json.dumps(figures))
        return 0
    for title, result in figures.items():
        print_changes(result, title)
    return 0


def register(kinds: argparse._SubParsersAction) -> None:
    """Add `eval changes` to the eval command group."""
    p = kinds.add_parser(
        "changes", help="the what-changed map on scikit-image's photos (needs scikit-image)"
    )
    p.add_argument(
        "folder",
        nargs="?",
        help="a folder of photos to report on instead of scikit-image's held-out ones",
    )
    p.add_argument("--seeds", type=int, default=2, help="variants of each edit per photo")
    p.add_argument(
        "--tune", action="store_true", help="also the photos the thresholds were tuned on"
    )
    p.add_argument(
        "--verdict",
        action="store_true",
        help="also check every manipulated copy through a throw-away catalog of the photos",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_eval_changes)
