"""Models fetched on first use: a real HTTP server on 127.0.0.1 serves small SSCD and CLIP files.

The server counts the requests per path, so a test sees what was downloaded, how often, and
that "off" or a cached file asks for nothing.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from app.cli import main
from config import TextSettings
from embed import clip as clip_module
from embed import model as model_module
from embed import sscd as sscd_module
from embed import weights
from embed.clip import ClipEncoder, declared_dim, fetched_folder, load_clip
from embed.sscd import SSCD_FILE, SscdEncoder, load_sscd
from embed.weights import FetchFailed, Pin, fetch
from tests.conftest import OFFLINE_URL, free_port, image_bytes
from tests.test_clip import save_tiny_clip
from tests.test_sscd import TinySscd, save_scripted

pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)
REVISION = "0123456789abcdef0123456789abcdef01234567"


class ModelServer:
    """Files by URL path on 127.0.0.1, with a request count per path; `delay_s` slows each
    answer (so two clients overlap)."""

    def __init__(self, files: dict[str, bytes], delay_s: float = 0.0) -> None:
        self.files = files
        self.delay_s = delay_s
        self.requests: Counter[str] = Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests[self.path] += 1
                time.sleep(server.delay_s)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def total(self) -> int:
        return sum(self.requests.values())


@contextmanager
def serve(files: dict[str, bytes], delay_s: float = 0.0) -> Iterator[ModelServer]:
    """A ModelServer answering in a thread for the duration of the block."""
    server = ModelServer(files, delay_s)
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        thread.join(timeout=10)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def _fresh_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test is a fresh process: no loaded model, no remembered failure, its own caches."""
    monkeypatch.setitem(model_module._cache, SscdEncoder, {})  # type: ignore[misc]
    monkeypatch.setitem(model_module._cache, ClipEncoder, {})  # type: ignore[misc]
    monkeypatch.setattr(weights, "_failed", {})
    monkeypatch.setattr(sscd_module, "_off_logged", set())
    monkeypatch.setattr(clip_module, "_off_logged", set())
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE")


def new_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a second process sees: the files in the cache, nothing in memory."""
    monkeypatch.setitem(model_module._cache, SscdEncoder, {})  # type: ignore[misc]
    monkeypatch.setitem(model_module._cache, ClipEncoder, {})  # type: ignore[misc]
    monkeypatch.setattr(weights, "_failed", {})


@pytest.fixture(scope="module")
def sscd_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A small scripted module of SSCD's shape (512-d), as the bytes a server sends."""
    return save_scripted(TinySscd(), tmp_path_factory.mktemp("sscd") / SSCD_FILE).read_bytes()


@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch, sscd_bytes: bytes) -> Pin:
    """The SSCD pin set to the small module's SHA-256 and size (the real one pins Meta's file)."""
    pin = Pin(sha256(sscd_bytes), len(sscd_bytes))
    monkeypatch.setattr(sscd_module, "SSCD_PIN", pin)
    return pin


def cached_sscd(tmp_path: Path) -> Path:
    return tmp_path / "hub" / "checkpoints" / SSCD_FILE


# --- the fetcher -------------------------------------------------------------------------------


def test_a_file_is_downloaded_once_and_then_read_from_the_cache(tmp_path: Path) -> None:
    data = b"model bytes " * 1000
    dest = tmp_path / "cache" / "model.bin"
    with serve({"/m.bin": data}) as server:
        assert fetch(f"{server.url}/m.bin", dest, Pin(sha256(data), len(data))) == dest
        assert fetch(f"{server.url}/m.bin", dest, Pin(sha256(data), len(data))) == dest
    assert dest.read_bytes() == data
    assert server.requests == {"/m.bin": 1}
    assert [p.name for p in dest.parent.iterdir() if p.name.endswith(".part")] == []


def test_a_wrong_checksum_is_refused_and_leaves_no_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dest = tmp_path / "cache" / "model.bin"
    with (
        serve({"/m.bin": b"not the pinned file"}) as server,
        caplog.at_level(logging.WARNING),
        pytest.raises(FetchFailed, match="SHA-256 is not the pinned one") as caught,
    ):
        fetch(f"{server.url}/m.bin", dest, Pin("0" * 64))
    assert not dest.exists()
    assert [p.name for p in dest.parent.iterdir() if not p.name.endswith(".lock")] == []
    assert "\n" not in str(caught.value)
    assert sha256(b"not the pinned file") in caplog.text  # the details are in the log


def test_a_file_larger_than_its_pinned_size_is_refused(tmp_path: Path) -> None:
    data = b"x" * 5000
    dest = tmp_path / "model.bin"
    with (
        serve({"/m.bin": data}) as server,
        pytest.raises(FetchFailed, match="larger than the expected 100 bytes"),
    ):
        fetch(f"{server.url}/m.bin", dest, Pin(sha256(data), 100))
    assert not dest.exists()


def test_an_http_error_is_one_sentence_and_is_not_retried_in_the_process(tmp_path: Path) -> None:
    with serve({}) as server:
        url = f"{server.url}/missing.bin"
        for _ in range(3):
            with pytest.raises(FetchFailed) as caught:
                fetch(url, tmp_path / "missing.bin", Pin(None))
    assert str(caught.value) == f"{url} could not be fetched: the server answered HTTP 404"
    assert caught.value.status == 404
    assert server.requests == {"/missing.bin": 1}  # remembered for the process


def test_no_server_fails_within_seconds(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(FetchFailed, match="no connection"):
        fetch(f"http://127.0.0.1:{free_port()}/m.bin", tmp_path / "m.bin", Pin(None))
    assert time.monotonic() - started < weights.CONNECT_TIMEOUT_S + 1
    assert not (tmp_path / "m.bin").exists()


def test_two_threads_fetching_one_file_download_it_once(tmp_path: Path) -> None:
    data = b"shared " * 10000
    dest = tmp_path / "cache" / "model.bin"
    results: list[Path] = []
    with serve({"/m.bin": data}, delay_s=0.5) as server:
        threads = [
            threading.Thread(
                target=lambda: results.append(fetch(f"{server.url}/m.bin", dest, Pin(sha256(data))))
            )
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert results == [dest, dest]
    assert server.requests == {"/m.bin": 1}


# --- SSCD --------------------------------------------------------------------------------------


def test_sscd_is_fetched_on_first_use_and_loaded_from_the_cache_afterwards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sscd_bytes: bytes, pinned: Pin
) -> None:
    with serve({f"/{SSCD_FILE}": sscd_bytes}) as server:
        encoder = load_sscd("", base_url=server.url)
        assert encoder is not None and encoder.path == cached_sscd(tmp_path)
        assert encoder.embed([]).shape == (0, 512)
        assert cached_sscd(tmp_path).read_bytes() == sscd_bytes
        assert load_sscd("", base_url=server.url) is encoder
        new_process(monkeypatch)
        again = load_sscd("", base_url=server.url)
        assert again is not None and again is not encoder
    assert server.requests == {f"/{SSCD_FILE}": 1}


def test_sscd_with_the_wrong_checksum_is_off_and_nothing_is_cached(
    tmp_path: Path, sscd_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    # The real pin (Meta's 98.8 MB file) does not match the small module the server sends.
    with serve({f"/{SSCD_FILE}": sscd_bytes}) as server, caplog.at_level(logging.INFO):
        assert load_sscd("", base_url=server.url) is None
        assert load_sscd("", base_url=server.url) is None
    assert server.requests == {f"/{SSCD_FILE}": 1}
    assert not cached_sscd(tmp_path).exists()
    assert [p.name for p in cached_sscd(tmp_path).parent.glob("*.part")] == []
    off = [r.getMessage() for r in caplog.records if r.name == "embed.sscd"]
    assert len(off) == 1 and "SSCD copy-detection layer is off" in off[0]


def test_sscd_without_a_server_is_off_in_one_line_saying_how_to_provide_the_file(
    tmp_path: Path, pinned: Pin, caplog: pytest.LogCaptureFixture
) -> None:
    base = f"http://127.0.0.1:{free_port()}"
    with caplog.at_level(logging.INFO, logger="embed.sscd"):
        for _ in range(3):
            assert load_sscd("", base_url=base) is None
    (line,) = [r.getMessage() for r in caplog.records if r.name == "embed.sscd"]
    assert line.startswith("SSCD copy-detection layer is off:")
    assert f"{base}/{SSCD_FILE}" in line and "IMGSEARCH_VERDICT__SSCD_WEIGHTS" in line
    assert str(tmp_path / "hub" / "checkpoints") in line
    assert "\n" not in line and ". " not in line


def test_sscd_off_asks_for_nothing(sscd_bytes: bytes, pinned: Pin) -> None:
    with serve({f"/{SSCD_FILE}": sscd_bytes}) as server:
        assert load_sscd("off", base_url=server.url) is None
        assert load_sscd(" OFF ", base_url=server.url) is None
    assert server.total == 0


def test_a_configured_sscd_path_asks_for_nothing(tmp_path: Path, sscd_bytes: bytes) -> None:
    path = tmp_path / "mine" / SSCD_FILE
    path.parent.mkdir()
    path.write_bytes(sscd_bytes)
    with serve({f"/{SSCD_FILE}": sscd_bytes}) as server:
        encoder = load_sscd(str(path), base_url=server.url)
    assert encoder is not None and encoder.path == path
    assert server.total == 0


# --- CLIP --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The tiny CLIP's files, by name, as a hub serves them."""
    folder = save_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")
    return {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}


def hub(files: dict[str, bytes], model: str = "tiny/clip") -> dict[str, bytes]:
    return {f"/{model}/resolve/{REVISION}/{name}": data for name, data in files.items()}


def clip_settings(base_url: str, **overrides: object) -> TextSettings:
    values: dict[str, object] = {
        "enabled": True,
        "model": "tiny/clip",
        "revision": REVISION,
        "base_url": base_url,
    }
    return TextSettings.model_validate({**values, **overrides})


def test_clip_is_fetched_on_first_use_and_loaded_from_the_cache_afterwards(
    monkeypatch: pytest.MonkeyPatch, clip_files: dict[str, bytes]
) -> None:
    pins = {name: sha256(data) for name, data in clip_files.items()}
    with serve(hub(clip_files)) as server:
        settings = clip_settings(server.url, sha256=pins)
        assert declared_dim(settings) is None  # an unknown hub model: declared once fetched
        encoder = load_clip(settings)
        assert encoder is not None and encoder.folder == fetched_folder(settings)
        assert encoder.embed_text("a red car").shape == (512,)
        assert declared_dim(settings) == 512
        fetched = dict(server.requests)
        new_process(monkeypatch)
        assert load_clip(settings) is not None
    served = {f"/tiny/clip/resolve/{REVISION}/{name}" for name in clip_files}
    assert {path for path, n in fetched.items() if n} >= served
    assert all(n == 1 for n in fetched.values())  # each file once, a missing one once
    assert server.requests == fetched  # the second process asked for nothing


def test_clip_with_a_wrong_checksum_is_off_and_its_weights_are_not_cached(
    clip_files: dict[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    with serve(hub(clip_files)) as server, caplog.at_level(logging.WARNING):
        settings = clip_settings(server.url, sha256={"model.safetensors": "0" * 64})
        assert load_clip(settings) is None
        assert load_clip(settings) is None
    assert not (fetched_folder(settings) / "model.safetensors").exists()
    assert not (fetched_folder(settings) / clip_module.COMPLETE).exists()
    (line,) = [r.getMessage() for r in caplog.records if r.name == "embed.clip"]
    assert line.startswith("Text search is off:") and "IMGSEARCH_TEXT__ENABLED=false" in line


def test_without_a_server_both_layers_are_off_in_one_line_each_and_the_rest_works(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The defaults on a machine with no network: both layers off, ingest and search work."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(3):
        (photos / f"p{seed}.jpg").write_bytes(image_bytes(seed))
    dead = f"http://127.0.0.1:{free_port()}"
    for key, value in {
        "IMGSEARCH_DATA_DIR": str(tmp_path / "data"),
        "IMGSEARCH_EMBED__WEIGHTS": "random",
        "IMGSEARCH_EMBED__DEVICE": "cpu",
        "IMGSEARCH_VERDICT__SSCD_BASE_URL": dead,
        "IMGSEARCH_TEXT__BASE_URL": dead,
        "IMGSEARCH_LOG_LEVEL": "WARNING",
    }.items():
        monkeypatch.setenv(key, value)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        assert main(["ingest", str(photos)]) == 0
        assert main(["search", str(photos / "p1.jpg"), "--json"]) == 0
    assert time.monotonic() - started < 120
    lines = [r.getMessage() for r in caplog.records if r.name in ("embed.sscd", "embed.clip")]
    assert len(lines) == 2  # one each, for both commands of this process
    assert lines[0].startswith("SSCD copy-detection layer is off:")
    assert lines[1].startswith("Text search is off:")
    assert "Traceback" not in capsys.readouterr().err
    assert main(["search", "--text", "a red car"]) == 2  # the one sentence, no traceback
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("Text search is off")


def test_clip_off_asks_for_nothing(clip_files: dict[str, bytes]) -> None:
    with serve(hub(clip_files)) as server:
        settings = clip_settings(server.url, enabled=False)
        assert load_clip(settings) is None
        assert declared_dim(settings) is None
    assert server.total == 0


def test_hf_hub_offline_keeps_clip_from_asking(
    monkeypatch: pytest.MonkeyPatch, clip_files: dict[str, bytes]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with serve(hub(clip_files)) as server:
        assert load_clip(clip_settings(server.url)) is None
    assert server.total == 0


def test_the_default_clip_model_is_declared_before_it_is_fetched() -> None:
    settings = TextSettings(base_url=OFFLINE_URL)
    assert settings.enabled is True and settings.model == "openai/clip-vit-base-patch32"
    assert declared_dim(settings) == 512
    assert len(settings.revision) == 40  # a commit, not a branch
