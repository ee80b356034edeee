"""`imgsearch bench`: the figures a user reads, in one JSON object, from a throw-away catalog."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from app.bench import DESCRIBED, KEYS, photo_like
from embed.cpu import MATTERS
from tests.conftest import OFFLINE_URL

ROOT = Path(__file__).resolve().parents[1]


def bench(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IMGSEARCH_")}
    environ.update(
        IMGSEARCH_DATA_DIR=str(tmp_path / "data"),
        IMGSEARCH_EMBED__WEIGHTS="random",
        IMGSEARCH_EMBED__DEVICE="cpu",
        IMGSEARCH_VERDICT__SSCD_BASE_URL=OFFLINE_URL,
        IMGSEARCH_TEXT__BASE_URL=OFFLINE_URL,
        IMGSEARCH_LOG_LEVEL="WARNING",
        TMPDIR=str(tmp_path),
    )
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "bench", *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=ROOT,
        timeout=600,
    )


def test_bench_json_prints_one_object_with_every_figure_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    sizes = ["--images", "3", "--catalog", "40", "--queries", "5", "--searches", "2"]
    done = bench(["--json", *sizes, "--rounds", "1"], tmp_path)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)  # stdout is the object alone; progress goes to stderr
    for key in KEYS:
        assert isinstance(figures[key], int | float) and not isinstance(figures[key], bool), key
        assert figures[key] >= 0, key
    assert figures["catalog"] == 40
    assert set(DESCRIBED) <= set(figures)
    # precision auto on a CPU: int8 once its self-check passed (random weights pass it)
    assert figures["precision"] == "int8" and figures["runtime"] == "onnx"
    assert 0.99 <= figures["int8_agreement"] <= 1.0
    assert set(figures["cpu"]) == {"model", *MATTERS}
    assert all(isinstance(figures["cpu"][flag], bool) for flag in MATTERS)
    for name in ("ingest_cpu_ms", "search_cpu_ms"):
        stages = figures[name]
        hashing = "pdq_prepare" if name.startswith("ingest") else "pdq_query"
        assert {"decode", hashing} <= set(stages)
        assert all(isinstance(ms, float | int) and ms >= 0 for ms in stages.values()), stages
    assert figures["search_cpu_ms"]["total"] > 0 and figures["ingest_cpu_ms"]["image_model"] > 0
    assert figures["reopened_count"] == 40
    assert figures["ingest_images"] == 3
    assert figures["encoder_images_per_s"] > 0 and figures["baseline_images_per_s"] > 0
    assert figures["peak_rss_mb"] > 100  # ResNet50 alone is ~100 MB of weights
    # The configured data dir is never touched and the temporary catalog is gone.
    assert not (tmp_path / "data").exists()
    assert not list(tmp_path.glob("imgsearch-bench-*"))


def test_bench_refuses_a_catalog_of_zero_in_one_line(tmp_path: Path) -> None:
    done = bench(["--catalog", "0"], tmp_path)
    assert done.returncode == 2
    assert "must be 1 or more" in done.stderr
    assert "Traceback" not in done.stderr


def test_photo_like_images_have_a_photos_spectrum_not_a_drawings() -> None:
    # Natural photos: spectral power falls off as about 1/f^2 (slopes of -1.5 to -3 on log-log);
    # white noise is flat (0), and a flat drawing has almost no power at middle frequencies.
    image = np.asarray(photo_like(np.random.default_rng(3), (512, 384)).convert("L"), float)
    power = np.abs(np.fft.rfft2(image - image.mean())) ** 2
    fy = np.fft.fftfreq(image.shape[0])[:, None]
    fx = np.fft.rfftfreq(image.shape[1])[None, :]
    radius = np.hypot(fx, fy)
    band = (radius > 0.01) & (radius < 0.1)
    slope = np.polyfit(np.log(radius[band]), np.log(power[band] + 1e-9), 1)[0]
    assert -3.0 < slope < -1.5
