"""`make screenshots`: docs/search.png and docs/catalog.png, taken in headless Chromium.

Builds a demo catalog in a temporary data dir (the generated groups from three sources, and
scikit-image's sample photographs from a fourth), starts `imgsearch serve` on it (random weights:
the verdict is real, the similarity scores are not), searches with an edited copy of one photo
and opens the catalog page. Run: `python -m tests.screenshots [OUT_DIR]`.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from app.demo import write_demo_catalog, write_sample_photos
from app.runtime import Runtime
from ingest.sources.folder import FolderSource
from search.edits import EDITS
from tests.browser import chromium, served, upload
from tests.conftest import make_settings, photo

WAIT_MS = 120_000
SOURCES = {  # demo groups per source
    "city-desk": ("sunsets", "ocean", "forest"),
    "wire": ("checkerboards", "stripes", "bubbles"),
    "archive": ("night", "city"),
}
CAPTIONS = {  # sample photo -> (title, published)
    "coffee": ("Coffee at the summit", "2022-06-01T08:00:00Z"),
    "astronaut": ("Astronaut portrait", "2023-02-14T10:00:00Z"),
    "rocket": ("Launch day", "2023-09-30T06:30:00Z"),
    "chelsea": ("The newsroom cat", "2024-01-05T15:00:00Z"),
}


def build_catalog(root: Path) -> Path:
    """Demo images and sample photos ingested into root/data; returns the data dir."""
    demo = root / "demo"
    write_demo_catalog(demo, per_group=6)
    sources = []
    for source, groups in SOURCES.items():
        for group in groups:
            shutil.move(demo / group, demo / source / group)
        sources.append(FolderSource(source, demo / source))
    photos = root / "photos"
    write_sample_photos(photos)
    for name, (title, published) in CAPTIONS.items():
        sidecar = {
            "title": title,
            "category": "photos",
            "published_at": published,
            "source_uri": f"https://photo-desk.example/{name}",
        }
        (photos / f"{name}.json").write_text(json.dumps(sidecar))
    sources.append(FolderSource("photo-desk", photos))
    settings = make_settings(root / "data")
    runtime = Runtime(settings)
    try:
        runtime.pipeline.run(sources)
    finally:
        runtime.close()  # the app process opens the index next
    return settings.data_dir


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
        data_dir = build_catalog(root)
        query = root / "edited-coffee.jpg"
        query.write_bytes(EDITS["crop+border+rotate"](photo("coffee"), 0))
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
