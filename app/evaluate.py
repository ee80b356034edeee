"""Search-quality evaluations on the user's own photos, each in a throw-away catalog.

- `eval labels DIR`: ranking quality of similar-image search on a labelled folder (one subfolder
  per class), metrics of search/metrics.py;
- `eval text FILE`: the same metrics for text queries (CLIP);
- `eval copies DIR`: the copy-detection benchmark below;
- `eval verify DIR`: the geometric verifier alone, pairwise.

`eval copies DIR`: the photos are split (by a hash of their bytes, so the split is stable) into a
catalog half and a held-out half. The catalog half is ingested into a throw-away catalog through
the real pipeline with the current settings. Every photo then gets the fixed set of edits of
search/edits.py and each edited copy is checked at the shipped defaults:
- an edit of a catalog photo must be found (recall), and only its own original;
- an edit of a held-out photo must get "none" (any "copy" or "exact" is a false positive).
Recall and false positives are printed for the whole verdict and for each layer alone.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app import eval_changes
from app.runtime import Runtime, scratch_runtime
from config import Settings
from embed.clip import OFF as TEXT_OFF
from embed.decode import EXTENSIONS, DecodeError, decode_image
from embed.descriptors import CLIP, IMAGE, TextSearchUnavailable
from ingest.sources.folder import FolderSource
from search.edits import EDITS, GROUPS
from search.metrics import Judged, summarise
from store.keys import point_id

log = logging.getLogger(__name__)
LAYERS = ("sha256", "pdq", "sscd", "geometry")
RANKED_BY = (IMAGE, CLIP)  # the vectors `eval labels --descriptor` can rank with
QUERY_BATCH = 64


class BadEvalInput(ValueError):
    """The folder or query file cannot be evaluated; the message says why in one sentence."""


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
        with scratch_runtime(settings, root / "data") as runtime:
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
                    query = runtime.search.decode(EDITS[name](photo, number + 1000 * variant))
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


# --- ranking quality: eval labels and eval text ------------------------------------------------


@dataclass(frozen=True)
class LabelledSet:
    """Images of a folder by class: each subfolder is a class; loose images are distractors."""

    root: Path
    paths: list[str]  # every image, relative to root, posix
    classes: dict[str, list[str]]  # class (subfolder name) -> its images

    @staticmethod
    def class_of(path: str) -> str | None:
        """The class of an image (its first folder), None for a loose distractor."""
        parts = path.split("/")
        return parts[0] if len(parts) > 1 else None


def read_labelled(folder: Path) -> LabelledSet:
    """The labelled images under folder (any depth below the class subfolder)."""
    if not folder.is_dir():
        raise BadEvalInput(f"{folder} is not a folder")
    paths = [p.relative_to(folder).as_posix() for p in photos_in(folder)]
    paths = [p for p in paths if not any(part.startswith(".") for part in p.split("/"))]
    classes: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        label = LabelledSet.class_of(path)
        if label is not None:
            classes[label].append(path)
    return LabelledSet(folder, paths, dict(classes))


@dataclass
class Catalog:
    """The throw-away catalog of a labelled set: which image is which point."""

    ids: dict[str, str]  # relative path -> point id (for images that made it into the catalog)
    paths_of: dict[str, list[str]]  # point id -> its paths (identical files share one point)
    failed: list[str]  # images that could not be ingested


def ingest_labelled(runtime: Runtime, labelled: LabelledSet) -> Catalog:
    """Ingest the folder through the real pipeline and map its images to points."""
    runtime.pipeline.run([FolderSource("eval", labelled.root)])
    wanted = {
        path: point_id(hashlib.sha256((labelled.root / path).read_bytes()).hexdigest())
        for path in labelled.paths
    }
    present = runtime.index.existing(sorted(set(wanted.values())))
    ids = {path: pid for path, pid in wanted.items() if pid in present}
    paths_of: dict[str, list[str]] = defaultdict(list)
    for path, pid in ids.items():
        paths_of[pid].append(path)
    failed = [path for path in labelled.paths if path not in ids]
    return Catalog(ids, dict(paths_of), failed)


def ranked_paths(
    runtime: Runtime,
    catalog: Catalog,
    vectors: Sequence[np.ndarray],
    *,
    using: str,
    k: int,
    exclude: Sequence[str | None],
) -> list[list[str]]:
    """For each query vector, the top k image paths (never the query's own path)."""
    out: list[list[str]] = []
    for start in range(0, len(vectors), QUERY_BATCH):
        chunk = vectors[start : start + QUERY_BATCH]
        # One more point than k: the query's own point comes back too and is dropped.
        answers = runtime.index.query_many(chunk, using=using, top_k=k + 1)
        for hits, own in zip(answers, exclude[start : start + QUERY_BATCH], strict=True):
            paths = [p for hit in hits for p in catalog.paths_of.get(hit.id, []) if p != own]
            out.append(paths[:k])
    return out


def evaluate_labels(
    settings: Settings, folder: Path, *, k: int = 10, descriptor: str = IMAGE
) -> dict[str, Any]:
    """Each labelled image searches all the others; relevant = the same class (see README)."""
    if descriptor not in RANKED_BY:
        raise BadEvalInput(f"the descriptor must be one of {', '.join(RANKED_BY)}")
    if descriptor == CLIP and not settings.text.enabled:
        raise TextSearchUnavailable(TEXT_OFF)
    labelled = read_labelled(folder)
    if not any(len(paths) >= 2 for paths in labelled.classes.values()):
        raise BadEvalInput(
            f"{folder} has no class subfolder with 2 or more images: put the images of each class "
            "in a subfolder of their own"
        )
    with scratch_runtime(settings) as runtime:
        label = _ranking_model(runtime, descriptor)
        catalog = ingest_labelled(runtime, labelled)
        queries = [p for p in labelled.paths if p in catalog.ids and labelled.class_of(p)]
        points = runtime.index.get(
            sorted({catalog.ids[p] for p in queries}), with_vectors=[descriptor]
        )
        stored = {hit.id: hit.vectors[descriptor] for hit in points if descriptor in hit.vectors}
        queries = [p for p in queries if catalog.ids[p] in stored]
        rankings = ranked_paths(
            runtime,
            catalog,
            [stored[catalog.ids[p]] for p in queries],
            using=descriptor,
            k=k,
            exclude=queries,
        )
    judged = []
    for query, ranked in zip(queries, rankings, strict=True):
        label_of_query = labelled.class_of(query)
        others = [p for p in labelled.classes[str(label_of_query)] if p != query]
        total = sum(p in catalog.ids for p in others)
        judged.append(Judged([labelled.class_of(p) == label_of_query for p in ranked], total))
    return {
        "k": k,
        "descriptor": descriptor,
        "model": label,
        "classes": len(labelled.classes),
        "images": len(catalog.ids),
        "failed": catalog.failed,
        "without_relevant": sum(j.total == 0 for j in judged),
        "metrics": summarise(judged, k),
        "queries": [
            {"query": q, "ranked": ranked} for q, ranked in zip(queries, rankings, strict=True)
        ],
    }


def read_text_queries(file: Path, labelled: LabelledSet) -> dict[str, set[str]]:
    """`query<TAB>relevant path or category` lines: each text and its relevant images.

    A path is relative to the labelled folder; a category is a class subfolder (all its images).
    Several lines may give one query more relevant images; blank lines and `#` lines are skipped.
    """
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadEvalInput(f"cannot read {file} as UTF-8 text ({exc})") from exc
    known = set(labelled.paths)
    queries: dict[str, set[str]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise BadEvalInput(
                f"line {number} of {file} is not `query<TAB>relevant path or category`"
            )
        text, target = parts[0].strip(), parts[1].strip().strip("/")
        if target in labelled.classes:
            relevant = set(labelled.classes[target])
        elif target in known:
            relevant = {target}
        else:
            raise BadEvalInput(
                f"line {number} of {file}: {target} is neither an image nor a class subfolder "
                f"of {labelled.root}"
            )
        queries.setdefault(text, set()).update(relevant)
    if not queries:
        raise BadEvalInput(f"{file} has no `query<TAB>relevant path or category` line")
    return queries


def evaluate_text(
    settings: Settings, file: Path, *, folder: Path | None = None, k: int = 10
) -> dict[str, Any]:
    """Text queries against the CLIP vectors of a labelled folder (default: the file's folder)."""
    if not settings.text.enabled:
        raise TextSearchUnavailable(TEXT_OFF)
    labelled = read_labelled(folder if folder is not None else file.parent)
    queries = read_text_queries(file, labelled)
    with scratch_runtime(settings) as runtime:
        label = _ranking_model(runtime, CLIP)
        catalog = ingest_labelled(runtime, labelled)
        texts = list(queries)
        vectors = [runtime.descriptors.encode_text(text) for text in texts]
        rankings = ranked_paths(
            runtime, catalog, vectors, using=CLIP, k=k, exclude=[None] * len(texts)
        )
    judged = [
        Judged(
            [p in queries[text] for p in ranked],
            sum(p in catalog.ids for p in queries[text]),
        )
        for text, ranked in zip(texts, rankings, strict=True)
    ]
    return {
        "k": k,
        "descriptor": CLIP,
        "model": label,
        "images": len(catalog.ids),
        "failed": catalog.failed,
        "without_relevant": sum(j.total == 0 for j in judged),
        "metrics": summarise(judged, k),
        "queries": [
            {"query": text, "ranked": ranked} for text, ranked in zip(texts, rankings, strict=True)
        ],
    }


def _ranking_model(runtime: Runtime, descriptor: str) -> str:
    """The model behind the ranking vector; text search off is one sentence before any work."""
    descriptors = runtime.descriptors
    if descriptor not in descriptors:
        raise TextSearchUnavailable(TEXT_OFF)
    if descriptor == IMAGE and runtime.encoder.is_random:
        log.warning("the image encoder has random weights: these figures are meaningless")
    return descriptors[descriptor].label


def print_ranking(figures: dict[str, Any], what: str) -> None:
    """The figures of eval labels / eval text for people."""
    failed = figures["failed"]
    print(
        f"{what}: {len(figures['queries'])} queries, {figures['images']} images in the catalog"
        + (f" ({len(failed)} could not be read)" if failed else "")
        + f", ranked by {figures['descriptor']} ({figures['model']})"
    )
    if figures["without_relevant"]:
        print(f"{figures['without_relevant']} queries have no relevant image and are left out")
    print(
        "  ".join(
            f"{name.upper().replace('MAP', 'mAP').replace('NDCG', 'nDCG')} "
            + ("-" if value is None else f"{value:.3f}")
            for name, value in figures["metrics"].items()
        )
    )


def cmd_eval_labels(args: argparse.Namespace, settings: Settings) -> int:
    """Ranking quality of similar-image search on a labelled folder."""
    try:
        figures = evaluate_labels(
            settings, Path(args.directory), k=args.k, descriptor=args.descriptor
        )
    except BadEvalInput as exc:
        print(f"{exc}.", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(figures))
    else:
        print_ranking(figures, f"eval labels {args.directory}")
    return 0


def cmd_eval_text(args: argparse.Namespace, settings: Settings) -> int:
    """Ranking quality of text search on a labelled folder."""
    try:
        figures = evaluate_text(
            settings,
            Path(args.file),
            folder=Path(args.dir) if args.dir else None,
            k=args.k,
        )
    except BadEvalInput as exc:
        print(f"{exc}.", file=sys.stderr)
        return 2
    except ValueError as exc:  # an empty query text
        print(f"{str(exc).capitalize()}.", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(figures))
    else:
        print_ranking(figures, f"eval text {args.file}")
    return 0


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a whole number of at least 1")
    return number


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
    p = kinds.add_parser(
        "labels", help="ranking quality of similar-image search on a folder of class subfolders"
    )
    p.add_argument("directory", help="one subfolder per class; loose images are distractors")
    p.add_argument("--k", type=_positive, default=10, help="cut-off of the metrics (default 10)")
    p.add_argument("--descriptor", choices=RANKED_BY, default=IMAGE, help="the ranking vector")
    p.add_argument("--json", action="store_true", help="figures and rankings as one JSON line")
    p.set_defaults(handler=cmd_eval_labels)
    p = kinds.add_parser("text", help="ranking quality of text search (CLIP) on a labelled folder")
    p.add_argument("file", help="lines of `query<TAB>relevant path or category`")
    p.add_argument("--dir", default="", help="the labelled folder (default: the file's folder)")
    p.add_argument("--k", type=_positive, default=10, help="cut-off of the metrics (default 10)")
    p.add_argument("--json", action="store_true", help="figures and rankings as one JSON line")
    p.set_defaults(handler=cmd_eval_text)
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
    eval_changes.register(kinds)
