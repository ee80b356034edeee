"""`imgsearch bench`: ingest throughput against the encoder's own speed, and query latency."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from app.demo import write_demo_catalog
from config import Settings
from embed.decode import decode_image
from embed.encoder import load_encoder
from ingest.pipeline import Pipeline
from ingest.sources.folder import FolderSource
from ingest.state import StateStore
from search.service import SearchService
from store.images import LocalImageStore
from store.index import open_local_index


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

        index = open_local_index(":memory:", "bench", settings.qdrant.distance)
        state = StateStore(root / "state.sqlite")
        pipeline = Pipeline(settings, index, LocalImageStore(root / "store"), encoder, state)
        report = pipeline.run([FolderSource("bench", root / "images")])
        ingest_rate = report.total().new / report.duration_s
        print(
            f"ingest end to end:  {ingest_rate:7.1f} images/s ({count} images: fetch, decode, "
            f"store, thumbnail, embed, upsert) = {100 * ingest_rate / encode_rate:.0f}% of the "
            "encoder's rate"
        )

        search = SearchService(index, pipeline.images, encoder)
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
        index.close()
        state.close()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `bench` subcommand."""
    p = sub.add_parser("bench", help="measure ingest throughput and search latency")
    p.add_argument("--images", type=int, default=160, help="generated images to ingest")
    p.add_argument("--queries", type=int, default=20)
    p.set_defaults(handler=cmd_bench)
