"""`imgsearch bench`: the encoder against a plain torchvision baseline, ingestion end to end,
index and search latency at a catalog size, reopening and memory, in one throw-away data dir.

Nothing touches the configured catalog: the run builds its own data dir in a temporary folder,
with the configured embedded engine (a Qdrant server URL and an S3 store are not used).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision.models import resnet50

from app.runtime import Runtime
from config import Settings
from embed.cpu import cpu_flags, describe_cpu
from embed.decode import DecodedImage, decode_image
from embed.descriptors import IMAGE, needed_fit, specs
from embed.descriptors.base import ModelDescriptor
from embed.encoder import NATIVE_BF16_FLAGS, Encoder, load_encoder
from ingest.sources.folder import FolderSource
from search.edits import EDITS
from search.service import Query
from store.factory import open_index
from store.images import make_thumbnail
from store.index import PointRecord, VectorIndex
from store.keys import point_id

BASELINE_BATCH = 16
PHOTO_SIZE = (1600, 1067)  # a typical web news photo
SEARCH_EDITS = ("resize", "crop+border+rotate", "mirror+caption", "recompress")
FILL_BATCH = 1000
KEYS = (
    "encoder_images_per_s",
    "baseline_images_per_s",
    "ingest_images_per_s",
    "catalog",
    "query_p50_ms",
    "query_p99_ms",
    "search_p50_ms",
    "changes_p50_ms",
    "reopen_s",
    "peak_rss_mb",
)
# What ran: strings, a mapping, and the int8 self-check's figure (null where int8 was not tried).
DESCRIBED = ("precision", "cpu", "int8_agreement", "search_cpu_ms", "ingest_cpu_ms")


@dataclass(frozen=True)
class BenchSizes:
    """How much work each part of the benchmark does."""

    images: int = 32  # generated photos ingested end to end (also the encoder's test set)
    catalog: int = 2000  # index size for the query, search and reopen figures
    queries: int = 100  # index queries timed
    searches: int = 12  # uploads timed end to end
    rounds: int = 2  # encoder and baseline alternate this many times (fairer on a busy machine)


def run_bench(
    settings: Settings, sizes: BenchSizes, note: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    """Run every measurement and return the figures as one JSON-ready dict."""
    baseline_threads = torch.get_num_threads()  # torch's own choice, before the encoder's
    started = time.perf_counter()
    figures: dict[str, Any] = {"load_avg_start": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory(prefix="imgsearch-bench-") as tmp:
        root = Path(tmp)
        bench_settings = _throwaway(settings, root / "data")
        note(f"generating {sizes.images} photo-like images ({PHOTO_SIZE[0]}x{PHOTO_SIZE[1]})")
        paths = write_photo_like(root / "photos", sizes.images)

        began = time.perf_counter()
        encoder = load_encoder(bench_settings.embed)
        figures["model_load_s"] = round(time.perf_counter() - began, 2)
        figures.update(_describe(encoder, bench_settings, baseline_threads))
        note(f"encoder: {encoder.plan.describe()}; baseline: {baseline_threads} thread(s)")

        tensors = [encoder.preprocess(decode_image(p.read_bytes()).image) for p in paths]
        note(f"encoder against the baseline, {sizes.rounds} x {len(tensors)} images each")
        ours, baseline = time_encoders(encoder, tensors, baseline_threads, sizes.rounds)
        figures["encoder_images_per_s"] = round(ours, 2)
        figures["baseline_images_per_s"] = round(baseline, 2)
        figures["encoder_speedup"] = round(ours / baseline, 2)

        with Runtime(bench_settings) as runtime:
            note(f"ingesting {len(paths)} images end to end")
            report = runtime.pipeline.run([FolderSource("bench", root / "photos")])
            new = report.total().new
            figures["ingest_images"] = new
            figures["ingest_images_per_s"] = round(new / report.duration_s, 2)
            figures["ingest_vs_encoder"] = round(figures["ingest_images_per_s"] / ours, 2)

            index = runtime.index
            note(f"filling the catalog to {sizes.catalog} points")
            figures.update(fill_catalog(index, bench_settings, sizes.catalog))
            figures["catalog"] = index.count()
            note(f"timing {sizes.queries} index queries")
            figures.update(time_queries(index, sizes.queries))

            note(f"timing {sizes.searches} uploads end to end")
            figures.update(time_searches(runtime, paths, sizes.searches))
            note("CPU time stage by stage, of an ingested image and of a search")
            figures["ingest_cpu_ms"] = ingest_stages(runtime, paths)
            figures["search_cpu_ms"] = search_stages(runtime, paths, sizes.searches)

        note("reopening the catalog")
        began = time.perf_counter()
        index = open_index(bench_settings, specs(bench_settings))
        try:
            index.ensure_collection()
            reopened = index.count()
            figures["reopen_s"] = round(time.perf_counter() - began, 3)
            began = time.perf_counter()
            index.query(_unit(np.random.default_rng(1), 2048), using=IMAGE, top_k=12)
            figures["first_query_after_reopen_ms"] = round(1000 * (time.perf_counter() - began), 2)
            figures["reopened_count"] = reopened
        finally:
            index.close()
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    figures["load_avg_end"] = round(os.getloadavg()[0], 2)
    figures["total_s"] = round(time.perf_counter() - started, 1)
    return figures


def _throwaway(settings: Settings, data_dir: Path) -> Settings:
    """The settings with a temporary data dir, the embedded engine and a local image store."""
    return settings.model_copy(
        update={
            "data_dir": data_dir,
            "qdrant": settings.qdrant.model_copy(update={"url": ""}),
            "storage": settings.storage.model_copy(update={"url": ""}),
            "sources": [],
        }
    )


def _describe(encoder: Encoder, settings: Settings, baseline_threads: int) -> dict[str, Any]:
    return {
        "device": str(encoder.device),
        "precision": encoder.plan.precision,
        "int8_agreement": (
            None if encoder.int8_check is None else round(encoder.int8_check.agreement, 5)
        ),
        "int8_neighbours": (
            None if encoder.int8_check is None else round(encoder.int8_check.neighbours, 3)
        ),
        "cpu": describe_cpu(),
        "autocast": encoder.plan.autocast,
        "runtime": encoder.plan.runtime,
        "encoder_threads": encoder.plan.threads,
        "native_bf16": bool(NATIVE_BF16_FLAGS & cpu_flags()),
        "torch_threads": torch.get_num_threads(),
        "baseline_threads": baseline_threads,
        "cores": len(os.sched_getaffinity(0)),
        "batch_size": settings.embed.batch_size,
        "weights": encoder.weights_label,
        "engine": settings.qdrant.engine,
        "quantization": settings.qdrant.quantization,
    }


def time_encoders(
    encoder: Encoder, tensors: Sequence[torch.Tensor], baseline_threads: int, rounds: int
) -> tuple[float, float]:
    """Images/s of the encoder and of a plain torchvision ResNet50 loop on the same tensors.

    The baseline is what one would write first: torchvision's ResNet50, eager fp32, NCHW,
    batch 16, torch.no_grad, torch's default threads. Rounds alternate so that load from other
    processes falls on both alike.
    """
    baseline = resnet50(weights=None).eval()
    ours_threads = torch.get_num_threads()
    ours_s = baseline_s = 0.0

    def run_baseline() -> None:
        with torch.no_grad():
            for start in range(0, len(tensors), BASELINE_BATCH):
                baseline(torch.stack(list(tensors[start : start + BASELINE_BATCH])))

    encoder.embed_tensors(tensors[: encoder.settings.batch_size])  # warm-up
    torch.set_num_threads(baseline_threads)
    with torch.no_grad():
        baseline(torch.stack(list(tensors[:BASELINE_BATCH])))  # warm-up
    try:
        for _ in range(max(1, rounds)):
            torch.set_num_threads(ours_threads)
            began = time.perf_counter()
            encoder.embed_tensors(tensors)
            ours_s += time.perf_counter() - began
            torch.set_num_threads(baseline_threads)
            began = time.perf_counter()
            run_baseline()
            baseline_s += time.perf_counter() - began
    finally:
        torch.set_num_threads(ours_threads)
    total = len(tensors) * max(1, rounds)
    return total / ours_s, total / baseline_s


def fill_catalog(index: VectorIndex, settings: Settings, size: int) -> dict[str, Any]:
    """Add synthetic points (random unit vectors, +-1 hashes) until the catalog holds `size`.

    Each point carries every declared vector that the ingested images carry, and a payload
    like a parsed feed item's, so filters and the verdict's candidate search see a real shape.
    """
    rng = np.random.default_rng(0)
    sample = next(index.scroll(1, with_vectors=[s.name for s in specs(settings)]), None)
    names = list(sample.vectors) if sample and sample.vectors else ["image"]
    sizes = {s.name: s.size for s in specs(settings)}
    signed = {s.name for s in specs(settings) if s.distance == "dot"}  # PDQ: +1/-1 bits
    start = index.count()
    began = time.perf_counter()
    epoch = datetime(2024, 1, 1, tzinfo=UTC)
    for first in range(start, size, FILL_BATCH):
        n = min(FILL_BATCH, size - first)
        blocks = {
            name: (
                rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(n, sizes[name]))
                if name in signed
                else _units(rng, n, sizes[name])
            )
            for name in names
        }
        index.upsert(
            [
                PointRecord(
                    point_id(f"bench-synthetic-{first + i}"),
                    {name: block[i] for name, block in blocks.items()},
                    {
                        "source": f"synthetic-{(first + i) % 7}",
                        "category": f"category-{(first + i) % 5}",
                        "title": f"synthetic picture {first + i}",
                        "published_at": (epoch + timedelta(minutes=first + i)).isoformat(),
                    },
                )
                for i in range(n)
            ]
        )
    figures: dict[str, Any] = {"fill_s": round(time.perf_counter() - began, 2)}
    build = getattr(index, "build_hnsw", None)  # Qdrant Edge: the HNSW graph, as after a day
    if callable(build):
        began = time.perf_counter()
        build(wait=True)
        figures["hnsw_build_s"] = round(time.perf_counter() - began, 2)
    return figures


def time_queries(index: VectorIndex, count: int) -> dict[str, Any]:
    """Latency of `index.query` alone (the image vector, top 12) for random unit vectors."""
    rng = np.random.default_rng(2)
    vectors = _units(rng, count + 3, 2048)
    for vector in vectors[:3]:  # warm-up: caches, lazily loaded segments
        index.query(vector, using=IMAGE, top_k=12)
    timings = []
    for vector in vectors[3:]:
        began = time.perf_counter()
        index.query(vector, using=IMAGE, top_k=12)
        timings.append(1000 * (time.perf_counter() - began))
    return {
        "queries": len(timings),
        "query_p50_ms": _percentile(timings, 50),
        "query_p99_ms": _percentile(timings, 99),
    }


def time_searches(runtime: Runtime, paths: Sequence[Path], count: int) -> dict[str, Any]:
    """Latency of one upload through SearchService: decode, descriptors, verdict, top 12.

    The uploads are edited copies (resized, cropped, mirrored, ...) of ingested photos, so the
    copy verdict does its full work, geometric verification included.
    """
    search = runtime.search
    uploads = [
        EDITS[SEARCH_EDITS[i % len(SEARCH_EDITS)]](decode_image(path.read_bytes()).image, i)
        for i, path in enumerate(paths[: count + 1] or paths)
    ]
    search.search(Query(images=(uploads[0],), top_k=12))  # warm-up
    timings = []
    changes_ms = []  # the "what changed" map of an edited copy, on its own (inside the search)
    verdicts: dict[str, int] = {}
    for data in uploads[1:]:
        began = time.perf_counter()
        result = search.search(Query(images=(data,), top_k=12))
        timings.append(1000 * (time.perf_counter() - began))
        verdicts[result.verdict.kind] = verdicts.get(result.verdict.kind, 0) + 1
        if result.verdict.kind == "copy":
            began = time.perf_counter()
            search.with_changes(replace(result, changes=None), data)
            changes_ms.append(1000 * (time.perf_counter() - began))
    return {
        "searches": len(timings),
        "search_p50_ms": _percentile(timings, 50),
        "search_p95_ms": _percentile(timings, 95),
        "search_verdicts": verdicts,
        "changes_checks": len(changes_ms),
        "changes_p50_ms": _percentile(changes_ms, 50),
    }


def _cpu_ms(work: Callable[[], object], per: int = 1) -> float:
    """CPU time of `work` in all this process's threads (the model's too), in ms per item."""
    began = time.process_time()
    work()
    return round(1000 * (time.process_time() - began) / max(1, per), 2)


def ingest_stages(runtime: Runtime, paths: Sequence[Path]) -> dict[str, float]:
    """CPU ms per image of ingestion's stages, one stage at a time over the bench's photos:
    decode (at the size every descriptor needs), thumbnail, each descriptor's per-image work
    (`prepare`: hashes, model inputs) and each model's batches (`model`, per image)."""
    side = runtime.settings.storage.thumbnail_px
    files = [path.read_bytes() for path in paths]
    fit = needed_fit(side)
    n = len(files)
    images: list[Image.Image] = []
    stages = {
        "decode": _cpu_ms(lambda: images.extend(decode_image(d, fit=fit).image for d in files), n),
        "thumbnail": _cpu_ms(lambda: [make_thumbnail(image, side) for image in images], n),
    }
    for descriptor in runtime.descriptors:
        prepared: list[Any] = []

        def prepare(d: Any = descriptor, out: list[Any] = prepared) -> None:
            out.extend(d.prepare(image) for image in images)

        stages[f"{descriptor.name}_prepare"] = _cpu_ms(prepare, n)
        if isinstance(descriptor, ModelDescriptor):
            stages[f"{descriptor.name}_model"] = _cpu_ms(partial(descriptor.compute, prepared), n)
    stages["sum"] = round(sum(stages.values()), 2)
    return stages


def search_stages(runtime: Runtime, paths: Sequence[Path], count: int) -> dict[str, float]:
    """CPU ms per upload of a search's stages, one stage at a time, on the edited uploads of
    `time_searches`: decode, each descriptor's query vectors, the image vector's index query,
    the copy verdict given those neighbours (its hash layers computed again, their index
    queries, geometric verification), and the whole search (`total`, the "what changed" map
    included)."""
    search = runtime.search
    uploads = [
        EDITS[SEARCH_EDITS[i % len(SEARCH_EDITS)]](decode_image(path.read_bytes()).image, i)
        for i, path in enumerate(paths[1 : count + 1] or paths)
    ]
    n = len(uploads)
    decoded: list[DecodedImage] = []
    stages = {"decode": _cpu_ms(lambda: decoded.extend(search.decode(u) for u in uploads), n)}
    vectors: dict[str, list[list[np.ndarray]]] = {}
    for descriptor in runtime.descriptors:
        out = vectors.setdefault(descriptor.name, [])

        def query(d: Any = descriptor, o: list[list[np.ndarray]] = out) -> None:
            o.extend(d.query_vectors(q.image) for q in decoded)

        stages[f"{descriptor.name}_query"] = _cpu_ms(query, n)
    neighbours: list[Any] = []

    def rank() -> None:
        for found in vectors[IMAGE]:
            neighbours.append(runtime.index.query(found[0], using=IMAGE, top_k=12))

    stages["image_index_query"] = _cpu_ms(rank, n)
    pairs = list(zip(decoded, neighbours, strict=True))
    stages["verdict"] = _cpu_ms(lambda: [search.detector.check(q, h) for q, h in pairs], n)
    stages["total"] = _cpu_ms(
        lambda: [search.search(Query(images=(u,), top_k=12)) for u in uploads], n
    )
    return stages


def _percentile(timings: Sequence[float], q: float) -> float:
    return round(float(np.percentile(timings, q)), 2) if timings else 0.0


def _unit(rng: np.random.Generator, size: int) -> np.ndarray:
    return _units(rng, 1, size)[0]


def _units(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    vectors = rng.normal(size=(n, size)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def photo_like(rng: np.random.Generator, size: tuple[int, int] = PHOTO_SIZE) -> Image.Image:
    """A picture with a photo's statistics: 1/f texture, a few objects, sensor grain.

    Natural images have an amplitude spectrum close to 1/f; with grain on top, a JPEG of it is
    as large and as costly to decode as a news photo of the same size (~350 KB at 1600x1067),
    which flat drawings are not.
    """
    width, height = size
    small_w, small_h = width // 4, height // 4
    fy = np.fft.fftfreq(small_h)[:, None]
    fx = np.fft.rfftfreq(small_w)[None, :]
    frequency = np.hypot(fx, fy)
    frequency[0, 0] = 1.0
    amplitude = frequency**-1.2
    fields = []
    for _ in range(3):  # luminance and two colour-difference fields
        phase = np.exp(2j * np.pi * rng.random(amplitude.shape))
        field = np.fft.irfft2(amplitude * phase, s=(small_h, small_w))
        fields.append((field - field.mean()) / field.std())
    luminance, c1, c2 = fields
    base = rng.uniform(70, 180, size=3)
    tint = rng.normal(0, 12, size=(2, 3))
    pixels = (
        base[None, None, :]
        + 40 * luminance[..., None]
        + c1[..., None] * tint[0]
        + c2[..., None] * tint[1]
    )
    picture = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for _ in range(int(rng.integers(2, 6))):
        x, y = int(rng.integers(0, small_w)), int(rng.integers(0, small_h))
        r = int(rng.integers(small_w // 30, small_w // 10))
        colour = tuple(int(v) for v in rng.integers(20, 236, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x - r, y - r, x + r, y + 2 * r], fill=colour)
    picture = picture.resize(size, Image.Resampling.BICUBIC)
    grain = rng.integers(-5, 6, size=(height, width, 1), dtype=np.int16)
    noisy = np.clip(np.asarray(picture, dtype=np.int16) + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(noisy)


def write_photo_like(directory: Path, count: int, seed: int = 11) -> list[Path]:
    """Write `count` photo-like JPEGs with sidecar metadata; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    start = datetime(2024, 3, 1, 6, 0, tzinfo=UTC)
    paths = []
    for n in range(count):
        path = directory / f"photo-{n:05d}.jpg"
        photo_like(rng).save(path, quality=88)
        sidecar = {
            "title": f"Generated photo {n + 1}",
            "category": f"category-{n % 5}",
            "published_at": (start + timedelta(hours=n)).isoformat().replace("+00:00", "Z"),
        }
        path.with_suffix(".json").write_text(json.dumps(sidecar))
        paths.append(path)
    return paths


def format_table(figures: dict[str, Any]) -> str:
    """The figures as a readable table."""
    f = figures
    rows = [
        (
            "encoder",
            f"{f['encoder_images_per_s']:.1f} images/s",
            f"{f['device']} {f['precision']}{' autocast' if f['autocast'] else ''}, "
            f"{'ONNX Runtime' if f['runtime'] == 'onnx' else 'torch channels_last'}, "
            f"{f['encoder_threads'] or f['torch_threads']} thread(s), batch {f['batch_size']}, "
            f"{f['weights']}",
        ),
        (
            "baseline",
            f"{f['baseline_images_per_s']:.1f} images/s",
            f"torchvision ResNet50 eager fp32 NCHW, batch {BASELINE_BATCH}, "
            f"{f['baseline_threads']} thread(s): encoder = {f['encoder_speedup']:.2f}x",
        ),
        (
            "ingest",
            f"{f['ingest_images_per_s']:.1f} images/s",
            f"{f['ingest_images']} photo-like JPEGs end to end = "
            f"{100 * f['ingest_vs_encoder']:.0f}% of the encoder's rate",
        ),
        (
            "index query",
            f"p50 {f['query_p50_ms']:.1f} ms",
            f"p99 {f['query_p99_ms']:.1f} ms, {f['queries']} queries at {f['catalog']} images "
            f"({f['engine']}; filled in {f['fill_s']} s"
            + (f", HNSW built in {f['hnsw_build_s']} s)" if "hnsw_build_s" in f else ")"),
        ),
        (
            "search",
            f"p50 {f['search_p50_ms']:.0f} ms",
            f"p95 {f['search_p95_ms']:.0f} ms, {f['searches']} edited uploads (decode, "
            f"descriptors, verdict, top 12); verdicts {f['search_verdicts']}",
        ),
        (
            "reopen",
            f"{f['reopen_s']:.2f} s",
            f"{f['reopened_count']} images; first query after it "
            f"{f['first_query_after_reopen_ms']:.0f} ms",
        ),
        ("memory", f"{f['peak_rss_mb']:.0f} MB", "peak resident set of this process"),
    ]
    width = max(len(value) for _, value, _ in rows)
    lines = [f"{name:<12} {value:>{width}}   {detail}" for name, value, detail in rows]
    lines.append(
        f"{'machine':<12} {f['cores']:>{width - 6}} cores   load average "
        f"{f['load_avg_start']} -> {f['load_avg_end']}; native bf16 {f['native_bf16']}; "
        f"{f['total_s']} s in all"
    )
    cpu = f["cpu"]
    has = [flag for flag, on in cpu.items() if flag != "model" and on]
    lines.append(f"{'cpu':<12} {cpu['model']}: {', '.join(has) or 'none of the flags'}")
    if f["int8_agreement"] is not None:
        lines.append(
            f"{'int8 check':<12} mean cosine {f['int8_agreement']} against fp32 on the probe "
            f"photos (bar 0.99); running {f['precision']}"
        )
    for name in ("ingest_cpu_ms", "search_cpu_ms"):
        parts = ", ".join(f"{stage} {ms:.0f}" for stage, ms in f[name].items())
        lines.append(f"{name.removesuffix('_ms').replace('_', ' '):<12} ms: {parts}")
    return "\n".join(lines)


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    """Print the figures: one JSON object with --json, else a table (progress on stderr)."""
    sizes = BenchSizes(
        images=args.images,
        catalog=args.catalog,
        queries=args.queries,
        searches=args.searches,
        rounds=args.rounds,
    )

    def note(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    figures = run_bench(settings, sizes, note)
    print(json.dumps(figures) if args.json else format_table(figures))
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `bench` subcommand."""
    defaults = BenchSizes()
    p = sub.add_parser(
        "bench",
        help="measure the encoder against a torchvision baseline, ingestion, query and search",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--catalog",
        type=_positive,
        default=defaults.catalog,
        help=f"index size for the query, search and reopen figures (default {defaults.catalog})",
    )
    p.add_argument(
        "--images",
        type=_positive,
        default=defaults.images,
        help=f"generated photos to encode and ingest (default {defaults.images})",
    )
    p.add_argument("--queries", type=_positive, default=defaults.queries)
    p.add_argument("--searches", type=_positive, default=defaults.searches)
    p.add_argument(
        "--rounds",
        type=_positive,
        default=defaults.rounds,
        help="times the encoder and the baseline alternate over the images",
    )
    p.set_defaults(handler=cmd_bench)
