"""Time the index engines on synthetic vectors: upsert, query p50/p99, HNSW build, reopen.

    .venv/bin/python -m store.benchmark --points 10000 --engines edge local

Prints one JSON object per engine. Not a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Literal

import numpy as np

from store.edge import EdgeIndex
from store.factory import open_local_index
from store.index import PointRecord, VectorIndex, VectorSpec
from store.keys import point_id

NAME = "vector"  # the one named vector of the benchmark's points


def _percentiles(index: VectorIndex, queries: np.ndarray) -> dict[str, float]:
    times = []
    for vector in queries:
        start = time.perf_counter()
        index.query(vector, using=NAME, top_k=10)
        times.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99))}


def run(
    engine: Literal["edge", "local"], points: int, dim: int, queries: int, batch: int
) -> dict[str, object]:
    """Fill a fresh folder with `points` random unit vectors and time the engine."""
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix=f"bench-{engine}-") as tmp:
        folder = Path(tmp) / "qdrant"
        specs = [VectorSpec(NAME, dim, "cosine")]
        # hnsw_after above the catalog size: the build is timed separately below.
        index = open_local_index(
            folder,
            "bench",
            specs,
            upsert_batch=batch,
            engine=engine,
            hnsw_after=points + 1,
        )
        start = time.perf_counter()
        for first in range(0, points, batch):
            n = min(batch, points - first)
            chunk = rng.normal(size=(n, dim)).astype(np.float32)
            index.upsert(
                [
                    PointRecord(point_id(f"p{first + i}"), {NAME: v}, {"n": first + i})
                    for i, v in enumerate(chunk)
                ]
            )
        result: dict[str, object] = {
            "engine": engine,
            "points": points,
            "dim": dim,
            "upsert_s": round(time.perf_counter() - start, 2),
        }
        probe = rng.normal(size=(queries, dim)).astype(np.float32)
        result["query_exact"] = _percentiles(index, probe)
        if isinstance(index, EdgeIndex):
            start = time.perf_counter()
            index.build_hnsw(wait=True)
            result["hnsw_build_s"] = round(time.perf_counter() - start, 2)
            result["indexed_vectors"] = index.shard.info().indexed_vectors_count
            result["query_hnsw"] = _percentiles(index, probe)
        index.close()
        start = time.perf_counter()
        again = open_local_index(folder, "bench", specs, engine=engine)
        again.count()
        result["reopen_s"] = round(time.perf_counter() - start, 2)
        again.close()
    return result


def main() -> None:
    """Command line: points, engines, queries."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument(
        "--engines", nargs="+", default=["edge", "local"], choices=["edge", "local"]
    )
    args = parser.parse_args()
    for engine in args.engines:
        print(json.dumps(run(engine, args.points, args.dim, args.queries, args.batch)), flush=True)


if __name__ == "__main__":
    main()
