"""`imgsearch bank bench`: what matching a picture against large banks costs.

A throw-away data dir (never the configured catalog) gets a bank of N entries with random
vectors for every declared descriptor (PDQ as random +-1 bits) and 16 stored pictures their
payloads point to, plus one real banked picture. Then `Banks.match` (what every check and every
ingested image pays) is timed for an unrelated picture and for an edited copy of the banked
one, with the exact search a fresh index uses and, with --hnsw, after the HNSW build. Not a
test: the figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from app.runtime import Runtime
from config import Settings
from embed.decode import DecodedImage, decode_image
from embed.descriptors import IMAGE, PDQ, specs
from search.banks import Membership
from search.service import query_fit
from store.edge import EdgeIndex
from store.index import PointRecord
from store.keys import point_id

PICTURES = 16  # distinct stored pictures the random entries point to (geometric checks)


def picture(seed: int, side: int = 640) -> Image.Image:
    """A photo-like picture: blurred noise under random shapes (texture for local features)."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (side * 3 // 4, side, 3), dtype=np.uint8)
    image = Image.fromarray(noise).filter(ImageFilter.GaussianBlur(3))
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x, y = rng.integers(0, side, 2)
        w, h = rng.integers(10, side // 4, 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.rectangle([int(x), int(y), int(x + w), int(y + h)], outline=colour, width=3)
    return image


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def fill(runtime: Runtime, entries: int, batch: int = 256) -> float:
    """Upsert `entries` random entries into the banks' index; returns the seconds it took."""
    rng = np.random.default_rng(0)
    keys = []
    for i in range(PICTURES):
        data = jpeg(picture(1000 + i))
        key = f"bench/{i}.jpg"
        runtime.images.put(key, data, "image/jpeg")
        keys.append(key)
    declared = [s for s in specs(runtime.settings) if s.name in runtime.descriptors]
    member = Membership("bench", "random entry", "", "bench", "2030-01-01T00:00:00Z").as_dict()
    start = time.perf_counter()
    for first in range(0, entries, batch):
        records = []
        for n in range(first, min(entries, first + batch)):
            vectors: dict[str, np.ndarray] = {}
            for spec in declared:
                v = rng.normal(size=spec.size).astype(np.float32)
                vectors[spec.name] = np.sign(v) + (v == 0) if spec.binary else v / np.linalg.norm(v)
            payload = {
                "sha256": f"bench{n}",
                "image_key": keys[n % PICTURES],
                "thumbnail_key": keys[n % PICTURES],
                "banks": [member],
            }
            records.append(PointRecord(point_id(f"bench{n}"), vectors, payload))
        runtime.bank_index.upsert(records)
    return time.perf_counter() - start


def timed(call: Callable[[], Any], repeats: int) -> dict[str, float]:
    """First call (cold caches), then p50 and p99 of the repeats, in milliseconds."""
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return {
        "first_ms": round(times[0], 1),
        "p50_ms": round(float(np.percentile(times[1:], 50)), 2),
        "p99_ms": round(float(np.percentile(times[1:], 99)), 2),
    }


def measure(runtime: Runtime, repeats: int) -> dict[str, Any]:
    """Time a match of an unrelated picture and of an edited copy of the banked one."""
    banks = runtime.banks
    fit = query_fit(runtime.settings.verdict)

    def decoded(image: Image.Image) -> tuple[DecodedImage, np.ndarray]:
        d = decode_image(jpeg(image), max_pixels=runtime.settings.decode.max_pixels, fit=fit)
        return d, runtime.descriptors[IMAGE].query_vectors(d.image)[0]

    other, other_vector = decoded(picture(7))
    banked = picture(8)
    copy, copy_vector = decoded(
        banked.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((480, 360))
    )
    found = banks.match(copy, copy_vector)
    query = runtime.descriptors[PDQ].query_vectors(other.image)
    return {
        "edited_copy_found": [m.evidence.layer for m in found if m.bank == "known"],
        "unrelated": timed(lambda: banks.match(other, other_vector), repeats),
        "edited_copy": timed(lambda: banks.match(copy, copy_vector), repeats),
        # The index's part alone: the PDQ layer's 8 dihedral queries in one round trip.
        "pdq_queries": timed(lambda: banks.index.query_many(query, using=PDQ, top_k=8), repeats),
    }


def run(entries: int, repeats: int, hnsw: bool, base: Settings) -> dict[str, Any]:
    """Fill a throw-away bank of `entries` and time matches (and again after HNSW, if asked)."""
    with tempfile.TemporaryDirectory(prefix="imgsearch-bank-bench-") as tmp:
        settings = base.model_copy(
            update={
                "data_dir": Path(tmp),
                "storage": base.storage.model_copy(update={"url": ""}),
                "qdrant": base.qdrant.model_copy(
                    update={"url": "", "collection": "bench", "hnsw_after": entries + 10}
                ),
            }
        )
        with Runtime(settings) as runtime:
            banks = runtime.banks  # opens the index and loads the models
            result: dict[str, Any] = {
                "entries": entries,
                "no_bank": timed(banks.is_empty, repeats),
            }
            result["upsert_s"] = round(fill(runtime, entries), 2)
            runtime.banks.add("known", jpeg(picture(8)), note="the banked picture")
            result["exact"] = measure(runtime, repeats)
            index = runtime.bank_index
            if hnsw and isinstance(index, EdgeIndex):
                start = time.perf_counter()
                index.build_hnsw(wait=True)
                result["hnsw_build_s"] = round(time.perf_counter() - start, 1)
                result["hnsw"] = measure(runtime, repeats)
    return result


def cmd_bank_bench(args: argparse.Namespace, settings: Settings) -> int:
    """Print what a match against a bank of N entries costs."""
    result = run(args.entries, args.repeats, args.hnsw, settings)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"bank of {result['entries']} random entries (+1 real), upsert {result['upsert_s']} s")
    print(f"no bank at all: p50 {result['no_bank']['p50_ms']} ms per check (one count)")
    for mode in ("exact", "hnsw"):
        if mode not in result:
            continue
        m = result[mode]
        print(
            f"{mode} search:"
            + (f" (HNSW build {result['hnsw_build_s']} s)" if mode == "hnsw" else "")
        )
        for what in ("unrelated", "edited_copy", "pdq_queries"):
            t = m[what]
            print(
                f"  {what:<12} first {t['first_ms']} ms, p50 {t['p50_ms']} ms, p99 {t['p99_ms']} ms"
            )
        print(f"  edited copy found by: {', '.join(m['edited_copy_found']) or 'nothing'}")
    return 0


def add_bench(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`imgsearch bank bench`."""
    p = actions.add_parser("bench", help="time a match against a throw-away bank of N entries")
    p.add_argument("--entries", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--hnsw", action="store_true", help="time again after the HNSW build")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_bank_bench)
