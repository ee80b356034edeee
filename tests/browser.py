"""A real `imgsearch serve` on 127.0.0.1 and Debian's headless Chromium, for the browser test and
`make screenshots`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import OFFLINE_URL, free_port

CHROMIUM = "/usr/bin/chromium"  # Debian's build; `make browser` installs it (Playwright cannot)
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STARTUP_S = 90


@contextmanager
def served(data_dir: Path, log: Path | None = None) -> Iterator[str]:
    """`imgsearch serve` on a free loopback port over data_dir (random weights); yields its URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGSEARCH_")}
    env.update(
        IMGSEARCH_DATA_DIR=str(data_dir),
        IMGSEARCH_EMBED__WEIGHTS="random",
        IMGSEARCH_EMBED__DEVICE="cpu",
        IMGSEARCH_EMBED__PRECISION="fp32",  # int8 has its own tests (test_int8.py)
        IMGSEARCH_VERDICT__SSCD_BASE_URL=OFFLINE_URL,
        IMGSEARCH_TEXT__BASE_URL=OFFLINE_URL,
    )
    with log.open("wb") if log else open(os.devnull, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + STARTUP_S
            while True:
                try:
                    if httpx.get(f"{url}/_stcore/health", timeout=2).text == "ok":
                        break
                except httpx.HTTPError:
                    pass
                if process.poll() is not None:
                    raise RuntimeError("the app exited during start-up")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the app did not answer on its port within {STARTUP_S} s")
                time.sleep(0.5)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright's Browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def upload(page: Any, label: str, path: Path) -> None:
    """Choose a file in the uploader with this label."""
    uploader = page.get_by_test_id("stFileUploader").filter(has_text=label)
    uploader.locator('input[type="file"]').set_input_files(str(path))
