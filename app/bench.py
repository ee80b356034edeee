"""`imgsearch bench`: ingest throughput against the encoder's own speed, and query latency."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from app.demo import write_demo_catalog
from config import Settings
from embed.decode import decode_image
from embed.descriptors import build_descriptors, specs
from embed.encoder import load_encoder
from ingest.pipeline import Pipeline
from ingest.sources.folder import FolderSource
from ingest.state import StateStore
from search.edits import EDITS
from search.service import SearchService
from store.images import LocalImageStore
from store.index import PointRecord, open_local_index
from store.keys import point_id


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    """Print throughput and latency figures on generated images (nothing persists)."""
    encoder = load_encoder(settings.embed)
    print(
        f"device {encoder.device}, torch threads {torch.get_num_threads()}, "
        f"weights {encoder.weights_label}, batch size {settings.embed.batch_size}"
    )
    with tempfile.TemporaryDirectory(prefix="imgsearch-bench-") as tmp:
        root = Path(tmp)
        per_group = max(1, args.images // 8)
        count = write_demo_catalog(root / "images", per_group=per_group)
        paths = sorted((root / "images").rglob("*.jpg"))

        tensors = [encoder.preprocess(decode_image(p.read_bytes()).image) for p in paths]
        encoder.embed_tensors(tensors[: settings.embed.batch_size])  # warm-up
        started = time.perf_counter()
        encoder.embed_tensors(tensors)
        encode_rate = len(tensors) / (time.perf_counter() - started)
        print(f"encoder only:       {encode_rate:7.1f} images/s ({len(tensors)} images)")

        descriptors = build_descriptors(settings, encoder)
        index = open_local_index(":memory:", "bench", specs=specs(settings))
        state = StateStore(root / "state.sqlite")
        pipeline = Pipeline(settings, index, LocalImageStore(root / "store"), descriptors, state)
        report = pipeline.run([FolderSource("bench", root / "images")])
        ingest_rate = report.total().new / report.duration_s
        print(
            f"ingest end to end:  {ingest_rate:7.1f} images/s ({count} images: fetch, decode, "
            f"store, thumbnail, embed, upsert) = {100 * ingest_rate / encode_rate:.0f}% of the "
            "encoder's rate"
        )

        search = SearchService(index, pipeline.images, descriptors, settings.verdict)
        queries = [p.read_bytes() for p in paths[: args.queries]]
        timings = []
        for data in queries:
            started = time.perf_counter()
            search.search_bytes(data, top_k=12)
            timings.append(1000 * (time.perf_counter() - started))
        timings.sort()
        p95 = timings[min(len(timings) - 1, int(0.95 * len(timings)))]
        print(
            f"search (decode, embed, top-12 of {index.count()}): p50 "
            f"{statistics.median(timings):.0f} ms, p95 {p95:.0f} ms over {len(timings)} queries"
        )
        if args.catalog:
            bench_check(search, paths, args.catalog, args.queries)
        index.close()
        state.close()
    return 0


def bench_check(search: SearchService, paths: list[Path], catalog: int, queries: int) -> None:
    """Time `check` (decode, every descriptor, the verdict's layers, similar images) per query
    at `catalog` points: the real images already ingested plus synthetic points up to the size.
    """
    index = search.index
    rng = np.random.default_rng(0)
    extra = max(0, catalog - index.count())
    started = time.perf_counter()
    for start in range(0, extra, 1000):
        n = min(1000, extra - start)
        image = rng.normal(size=(n, 2048)).astype(np.float32)
        layout = np.abs(rng.normal(size=(n, 320))).astype(np.float32)
        bits = rng.integers(0, 2, size=(n, 256)).astype(np.float32)
        index.upsert(
            [
                PointRecord(
                    point_id(f"synthetic-{start + i}"),
                    {
                        "image": image[i] / np.linalg.norm(image[i]),
                        "layout": layout[i] / np.linalg.norm(layout[i]),
                        "pdq": bits[i],
                    },
                    {"title": f"synthetic {start + i}"},
                )
                for i in range(n)
            ]
        )
    print(f"catalog filled to {index.count()} points in {time.perf_counter() - started:.1f} s")
    originals = [decode_image(p.read_bytes()).image for p in paths[:queries]]
    edits = ["resize", "crop+border+rotate", "mirror+caption"]
    timings = []
    verdicts: dict[str, int] = {}
    for seed, original in enumerate(originals):
        data = EDITS[edits[seed % len(edits)]](original, seed)
        began = time.perf_counter()
        result = search.search_bytes(data, top_k=12)
        timings.append(1000 * (time.perf_counter() - began))
        verdicts[result.verdict.kind] = verdicts.get(result.verdict.kind, 0) + 1
    timings.sort()
    p95 = timings[min(len(timings) - 1, int(0.95 * len(timings)))]
    print(
        f"check (decode, descriptors, verdict, top-12) at {index.count()} images: p50 "
        f"{statistics.median(timings):.0f} ms, p95 {p95:.0f} ms over {len(timings)} edited "
        f"copies; verdicts {verdicts}"
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `bench` subcommand."""
    p = sub.add_parser("bench", help="measure ingest throughput and search latency")
    p.add_argument("--images", type=int, default=160, help="generated images to ingest")
    p.add_argument("--queries", type=int, default=20)
    p.add_argument(
        "--catalog",
        type=int,
        default=0,
        help="also time `check` with the catalog filled to this many points (e.g. 10000)",
    )
    p.set_defaults(handler=cmd_bench)
