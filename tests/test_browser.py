"""End to end in a real browser: `imgsearch serve`, headless Chromium, upload, read the answer."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.runtime import Runtime
from ingest.sources.folder import FolderSource
from tests.conftest import free_port, image_bytes, make_settings

CHROMIUM = "/usr/bin/chromium"  # Debian's build; `make test` installs it (Playwright cannot here)
ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.browser


@pytest.fixture
def served_app(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    settings = make_settings(tmp_path / "data")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):
        (photos / f"shot{i}.png").write_bytes(image_bytes(300 + i, "PNG"))
    (photos / "shot2.json").write_text(
        '{"title": "Protest on the bridge", "source_uri": "https://news.example/bridge"}'
    )
    runtime = Runtime(settings)
    try:
        runtime.pipeline.run([FolderSource("news", photos)])
    finally:
        runtime.close()  # the app process takes the embedded index next
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGSEARCH_")}
    env.update(
        IMGSEARCH_DATA_DIR=str(settings.data_dir),
        IMGSEARCH_EMBED__WEIGHTS="random",
        IMGSEARCH_EMBED__DEVICE="cpu",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=2).text == "ok":
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, "the app exited during start-up"
            time.sleep(0.5)
        else:
            pytest.fail("the app did not answer on its port within 90 s")
        yield url, photos / "shot2.png"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_upload_in_a_real_browser_finds_the_image_first(
    served_app: tuple[str, Path], tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, query = served_app
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            expect(page.get_by_text("Have we seen this image")).to_be_visible(timeout=60_000)
            page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(
                str(query)
            )
            expect(page.get_by_text("Published before")).to_be_visible(timeout=60_000)
            first = page.get_by_text("1. Protest on the bridge")
            expect(first).to_be_visible()
            expect(page.get_by_text("same file").first).to_be_visible()
            # Visitors get no developer toolbar: no "Deploy" button.
            expect(page.get_by_role("button", name="Deploy")).to_have_count(0)
            page.screenshot(path=str(tmp_path / "result.png"), full_page=True)
        finally:
            browser.close()
