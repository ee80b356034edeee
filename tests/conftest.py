"""Shared fixtures: isolated settings, generated images, the encoder, S3 on loopback."""

from __future__ import annotations

import io
import os
import random
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from config import Settings
from embed.descriptors import Descriptors, build_descriptors, specs
from embed.encoder import Encoder, load_encoder
from store.factory import open_local_index
from store.index import VectorIndex

# A loopback port nothing listens on (the discard port): a model fetch fails at once, offline.
OFFLINE_URL = "http://127.0.0.1:9"


@pytest.fixture(autouse=True)
def _no_schedule_left_running() -> Iterator[None]:
    """A page run in this process (AppTest) starts the app's schedule for its own runtime; it
    must not outlive its test, or a later test's "Run now" reaches that old runtime instead."""
    yield
    worker = sys.modules.get("app.worker")
    if worker is not None:
        worker.stop_in_app_scheduler()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No IMGSEARCH_ variable or .env from the developer's shell leaks into a test, and no test
    reaches the internet for a model: in-process settings fetch from a dead loopback port, the
    torch cache (where SSCD and CLIP are fetched to) is the test's own, and the Hugging Face hub
    is offline for the test and the imgsearch processes it starts."""
    for key in list(os.environ):
        if key.startswith("IMGSEARCH_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("IMGSEARCH_VERDICT__SSCD_BASE_URL", OFFLINE_URL)
    monkeypatch.setenv("IMGSEARCH_TEXT__BASE_URL", OFFLINE_URL)
    # fp32, as make_settings: precision auto would quantize the model in every test's own
    # torch cache (tens of seconds); int8 has its own tests (tests/test_int8.py)
    monkeypatch.setenv("IMGSEARCH_EMBED__PRECISION", "fp32")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a test: random weights, small batches, everything under data_dir, and no
    model fetched from the internet (text search off, SSCD fetched from a dead loopback port,
    unless a test says otherwise)."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        # fp32 on every CPU: tests compare vectors closely (bf16 has its own tests)
        "embed": {"weights": "random", "batch_size": 8, "device": "cpu", "precision": "fp32"},
        "worker": {"retry_backoff_s": 0},
        "verdict": {"sscd_base_url": OFFLINE_URL},
        "text": {"enabled": False, "base_url": OFFLINE_URL},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings rooted in this test's temporary folder."""
    return make_settings(tmp_path / "data")


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    """The seeded random-weight encoder, built once for the whole session."""
    from config import EmbedSettings

    return load_encoder(
        EmbedSettings(weights="random", batch_size=8, device="cpu", precision="fp32")
    )


def open_catalog(where: Path | str, settings: Settings) -> VectorIndex:
    """An embedded index declaring every descriptor of these settings, as the runtime opens it."""
    return open_local_index(
        where, settings.qdrant.collection, specs=specs(settings), engine=settings.qdrant.engine
    )


def make_descriptors(settings: Settings, encoder: Encoder) -> Descriptors:
    """The descriptor registry for these settings, on the session's encoder (no SSCD)."""
    return build_descriptors(settings, encoder)


def photo(name: str) -> Image.Image:
    """A real photograph bundled with scikit-image (a dev dependency), as RGB."""
    import warnings

    import skimage.data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


def draw_image(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A distinct RGB picture per seed: coloured background, shapes and stripes."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, tuple(rng.randint(0, 255) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = rng.randint(0, size[0] - 10), rng.randint(0, size[1] - 10)
        x1, y1 = x0 + rng.randint(5, size[0] // 2), y0 + rng.randint(5, size[1] // 2)
        color = tuple(rng.randint(0, 255) for _ in range(3))
        if rng.random() < 0.5:
            draw.ellipse([x0, y0, x1, y1], fill=color)
        else:
            draw.rectangle([x0, y0, x1, y1], fill=color)
    return image


def image_bytes(seed: int, fmt: str = "JPEG", size: tuple[int, int] = (160, 120)) -> bytes:
    """Encoded bytes of draw_image(seed)."""
    buffer = io.BytesIO()
    draw_image(seed, size).save(buffer, format=fmt)
    return buffer.getvalue()


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 HTTP endpoint on loopback (moto's server mode), for the whole session."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A fresh private bucket on the loopback S3 endpoint."""
    import uuid

    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name
