"""`make screenshots`: docs/search.png and docs/catalog.png, taken in headless Chromium.

Builds the demo catalog `make run` builds (app/demo.py: photographs from four sources) in a
temporary data dir, starts `imgsearch serve` on it (random weights: the verdict and what changed
are real, the similarity scores are not), uploads the demo's doctored astronaut (a pasted patch)
and opens the catalog page. Run: `python -m tests.screenshots [OUT_DIR]`.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from app.demo import TRY_THESE, write_demo_catalog
from app.runtime import Runtime
from tests.browser import chromium, served, upload
from tests.conftest import make_settings

WAIT_MS = 120_000
QUERY = TRY_THESE[0].file  # the astronaut with a pasted patch


def build_catalog(root: Path) -> tuple[Path, Path]:
    """The demo catalog ingested into root/data; returns the data dir and the demo's uploads."""
    demo = write_demo_catalog(root / "demo")
    sources = json.loads(demo.sources.read_text())
    settings = make_settings(root / "data", sources=sources)
    runtime = Runtime(settings)
    try:
        runtime.pipeline.run(runtime.declared_sources())
    finally:
        runtime.close()  # the app process opens the index next
    return settings.data_dir, demo.try_these[0].parent


def images_loaded(page: Any) -> None:
    """Wait until the script run has finished and every image on the page has arrived."""
    page.wait_for_function(
        """() => {
            const running = document.querySelector('[data-testid="stStatusWidget"]');
            const images = [...document.querySelectorAll('[data-testid="stImage"] img')];
            return !running && images.length > 0
                && images.every((i) => i.complete && i.naturalWidth > 0);
        }""",
        timeout=WAIT_MS,
    )


def take(out: Path) -> None:
    """Write search.png and catalog.png into out."""
    from playwright.sync_api import expect

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="imgsearch-shots-") as tmp:
        root = Path(tmp)
        data_dir, uploads = build_catalog(root)
        query = uploads / QUERY
        with served(data_dir, root / "serve.log") as url, chromium() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 1900})
            page.goto(url)
            expect(page.get_by_text("Have we seen this image")).to_be_visible(timeout=WAIT_MS)
            upload(page, "Images like this", query)
            expect(page.get_by_text("Published before")).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_text("Most similar images")).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_role("button", name="Load more")).to_be_visible(timeout=WAIT_MS)
            images_loaded(page)
            page.screenshot(path=str(out / "search.png"))
            page.get_by_role("link", name="Catalog").click()
            expect(page.get_by_text("Images per source")).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_test_id("stVegaLiteChart")).to_have_count(7, timeout=WAIT_MS)
            page.set_viewport_size({"width": 1400, "height": 2300})
            images_loaded(page)
            page.screenshot(path=str(out / "catalog.png"))
    print(f"wrote {out / 'search.png'} and {out / 'catalog.png'}")


if __name__ == "__main__":
    take(Path(sys.argv[1] if len(sys.argv) > 1 else "docs"))
