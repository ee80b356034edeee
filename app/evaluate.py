"""`imgsearch eval copies DIR`: a copy-detection benchmark built from any folder of photos.

The photos are split (by a hash of their bytes, so the split is stable) into a catalog half and a
held-out half. The catalog half is ingested into a throw-away catalog through the real pipeline
with the current settings. Every photo then gets the fixed set of edits of search/edits.py and
each edited copy is checked at the shipped defaults:
- an edit of a catalog photo must be found (recall), and only its own original;
- an edit of a held-out photo must get "none" (any "copy" or "exact" is a false positive).
Recall and false positives are printed for the whole verdict and for each layer alone.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config import Settings
from embed.decode import EXTENSIONS, DecodeError, decode_image
from ingest.sources.folder import FolderSource
from search.edits import EDITS, GROUPS
from store.keys import point_id

LAYERS = ("sha256", "pdq", "sscd", "geometry")


@dataclass
class Tally:
    """Counts for one edit (or the held-out set)."""

    queries: int = 0
    verdict: int = 0  # found (catalog) or wrongly called a copy (held-out)
    wrong: int = 0  # a catalog query matched to another catalog photo
    layers: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "queries": self.queries,
            "verdict": self.verdict,
            "wrong": self.wrong,
            "layers": dict(self.layers),
        }


def photos_in(folder: Path) -> list[Path]:
    """Image files under folder, sorted."""
    suffixes = {f".{e}" for e in EXTENSIONS.values()} | {".jpeg", ".tiff"}
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def split(paths: list[Path], holdout: float) -> tuple[list[Path], list[Path]]:
    """A stable catalog / held-out split by a hash of each file's bytes."""

    def rank(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    ordered = sorted(paths, key=rank)
    cut = round(len(ordered) * (1 - holdout))
    return sorted(ordered[:cut]), sorted(ordered[cut:])


def evaluate_copies(
    settings: Settings,
    folder: Path,
    *,
    holdout: float = 0.5,
    edits: list[str] | None = None,
    seeds: int = 1,
) -> dict[str, Any]:
    """Run the benchmark and return its figures (see module docstring)."""
    from app.runtime import Runtime

    names = edits or list(EDITS)
    paths = photos_in(folder)
    if len(paths) < 2:
        raise ValueError(f"{folder} holds fewer than 2 photos")
    catalog, held_out = split(paths, holdout)
    with tempfile.TemporaryDirectory(prefix="imgsearch-eval-") as tmp:
        root = Path(tmp)
        staged = root / "catalog"
        staged.mkdir()
        for i, path in enumerate(catalog):
            (staged / f"{i:05d}{path.suffix.lower()}").write_bytes(path.read_bytes())
        scratch = settings.model_copy(
            update={
                "data_dir": root / "data",
                "qdrant": settings.qdrant.model_copy(update={"url": ""}),
                "storage": settings.storage.model_copy(update={"url": ""}),
                "sources": [],
            }
        )
        runtime = Runtime(scratch)
        try:
            report = runtime.pipeline.run([FolderSource("eval", staged)])
            ids = {
                path: point_id(hashlib.sha256(path.read_bytes()).hexdigest()) for path in catalog
            }
            found: dict[str, Tally] = {name: Tally() for name in names}
            false: Tally = Tally()
            misses: list[dict[str, str]] = []  # catalog copies not found, held-out ones called
            timings: list[float] = []
            for number, path in enumerate(paths):
                try:
                    photo = decode_image(path.read_bytes()).image
                except DecodeError:
                    continue
                original = ids.get(path)
                for name, variant in itertools.product(names, range(seeds)):
                    # Each seed draws another crop offset, caption, rotation direction...
                    query = decode_image(EDITS[name](photo, number + 1000 * variant))
                    per_layer: dict[str, set[str]] = {}
                    started = time.perf_counter()
                    verdict = runtime.search.detector.check(query, per_layer=per_layer)
                    timings.append(1000 * (time.perf_counter() - started))
                    called = verdict.ids()
                    tally = found[name] if original else false
                    tally.queries += 1
                    if (original and original not in called) or (not original and called):
                        misses.append({"photo": path.name, "edit": name, "verdict": verdict.kind})
                    if original:
                        tally.verdict += original in called
                        tally.wrong += bool(called - {original})
                        for layer, hits in per_layer.items():
                            tally.layers[layer] += original in hits
                    else:
                        tally.verdict += bool(called)
                        for layer, hits in per_layer.items():
                            tally.layers[layer] += bool(hits)
            layers = {k: v for k, v in verdict.layers.items()}
        finally:
            runtime.close()
    timings.sort()
    return {
        "photos": len(paths),
        "catalog": report.total().new,
        "held_out": len(held_out),
        "layers": layers,
        "edits": {name: tally.as_dict() for name, tally in found.items()},
        "false_positives": false.as_dict(),
        "misses": misses,
        "check_ms": {
            "p50": round(statistics.median(timings), 1) if timings else None,
            "p95": round(timings[int(0.95 * (len(timings) - 1))], 1) if timings else None,
        },
    }


def print_table(figures: dict[str, Any]) -> None:
    """The benchmark as a table for people."""
    print(
        f"{figures['photos']} photos: {figures['catalog']} in the catalog, "
        f"{figures['held_out']} held out; layers (last query): "
        + ", ".join(f"{k} {v}" for k, v in figures["layers"].items())
    )
    header = f"{'edit':<36}{'queries':>8}{'verdict':>9}" + "".join(f"{x:>10}" for x in LAYERS)
    print("\nRecall on edited copies of catalog photos (wrong = matched another photo)")
    print(header + f"{'wrong':>7}")
    groups = {name: group for group, names in GROUPS.items() for name in names}
    for name, tally in figures["edits"].items():
        n = max(tally["queries"], 1)
        cells = "".join(f"{tally['layers'].get(x, 0) / n:>10.2f}" for x in LAYERS)
        label = f"{name} ({groups.get(name, '-')})"
        recall = tally["verdict"] / n
        print(f"{label:<36}{tally['queries']:>8}{recall:>9.2f}{cells}{tally['wrong']:>7}")
    fp = figures["false_positives"]
    cells = "".join(f"{fp['layers'].get(x, 0):>10}" for x in LAYERS)
    print("\nFalse positives on edited copies of held-out photos (count)")
    print(header)
    print(f"{'held-out copies':<36}{fp['queries']:>8}{fp['verdict']:>9}{cells}")
    for miss in figures["misses"]:
        print(f"  missed or wrongly called: {miss['photo']} ({miss['edit']}): {miss['verdict']}")
    ms = figures["check_ms"]
    print(
        f"\ncheck time per query (all layers, exhaustive): p50 {ms['p50']} ms, p95 {ms['p95']} ms"
    )


def cmd_eval_copies(args: argparse.Namespace, settings: Settings) -> int:
    """Build and run the copy-detection benchmark on a folder of photos."""
    try:
        figures = evaluate_copies(
            settings,
            Path(args.directory),
            holdout=args.holdout,
            edits=args.edit or None,
            seeds=args.seeds,
        )
    except ValueError as exc:
        print(f"{exc}.", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(figures))
    else:
        print_table(figures)
    return 0


def evaluate_verification(settings: Settings, folder: Path) -> dict[str, Any]:
    """Geometric verification alone, pairwise: every edit of every photo against every photo.

    Reports, per edit, how many edited copies verify against their own original, and over all
    other pairs how many verify (false positives), with the figures that set the thresholds: the
    lowest correlation of a true pair and the highest of a false one.
    """
    from search import verify

    s = settings.verdict
    photos: dict[str, Any] = {}
    for path in photos_in(folder):
        try:
            photos[path.name] = decode_image(path.read_bytes()).image
        except DecodeError:
            continue
    side, n = s.verify_side, s.verify_features
    originals = {
        name: verify.extract(im, side=side, n_features=n, mirror=False)
        for name, im in photos.items()
    }
    thresholds: dict[str, Any] = {
        "min_inliers": s.verify_min_inliers,
        "min_correlation": s.verify_min_correlation,
        "min_overlap": s.verify_min_overlap,
    }
    recall: dict[str, list[int]] = {name: [0, 0] for name in EDITS}
    false = [0, 0]
    lowest_true: list[tuple[float, str, str]] = []
    highest_false: list[tuple[float, str, str, str]] = []
    for seed, (name, image) in enumerate(photos.items()):
        for edit, apply in EDITS.items():
            query = verify.extract(decode_image(apply(image, seed)).image, side=side, n_features=n)
            for other, candidate in originals.items():
                found = verify.verify(query, candidate, **thresholds)
                called = found.is_copy
                if other == name:
                    recall[edit][0] += called
                    recall[edit][1] += 1
                    lowest_true.append((found.correlation, name, edit))
                else:
                    false[0] += called
                    false[1] += 1
                    highest_false.append((found.correlation, name, edit, other))
    lowest_true.sort()
    highest_false.sort(reverse=True)
    return {
        "photos": sorted(photos),
        "thresholds": thresholds,
        "recall": {edit: {"found": f, "of": n} for edit, (f, n) in recall.items()},
        "false_positives": {"found": false[0], "of": false[1]},
        "lowest_true_correlations": [list(x) for x in lowest_true[:5]],
        "highest_false_correlations": [list(x) for x in highest_false[:5]],
    }


def cmd_eval_verify(args: argparse.Namespace, settings: Settings) -> int:
    """Pairwise figures of the geometric verifier on a folder of photos."""
    figures = evaluate_verification(settings, Path(args.directory))
    if args.json:
        print(json.dumps(figures))
        return 0
    print(f"{len(figures['photos'])} photos; thresholds {figures['thresholds']}")
    for edit, r in figures["recall"].items():
        print(f"  {edit:<28}{r['found']:>4} of {r['of']} verified against their original")
    fp = figures["false_positives"]
    print(f"  false positives: {fp['found']} of {fp['of']} pairs of different photos")
    print(f"  lowest correlations of true pairs: {figures['lowest_true_correlations']}")
    print(f"  highest correlations of false pairs: {figures['highest_false_correlations']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `eval` command group."""
    group = sub.add_parser("eval", help="measure search quality on your own photos")
    kinds = group.add_subparsers(dest="eval_kind", required=True)
    p = kinds.add_parser("copies", help="copy-detection benchmark from a folder of photos")
    p.add_argument("directory")
    p.add_argument("--holdout", type=float, default=0.5, help="share of photos kept out")
    p.add_argument("--edit", action="append", default=[], choices=list(EDITS))
    p.add_argument("--seeds", type=int, default=1, help="variants of each edit per photo")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_eval_copies)
    p = kinds.add_parser("verify", help="pairwise figures of the geometric verifier alone")
    p.add_argument("directory")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_eval_verify)
