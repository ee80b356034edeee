"""End to end in a real browser: `imgsearch serve`, headless Chromium, the way a visitor clicks.

Upload -> verdict -> "More like this" re-runs the search -> a filter narrows it -> the catalog
page -> the image's record -> a confirmed delete -> the image is no longer found.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.runtime import Runtime
from ingest.sources.folder import FolderSource
from tests.browser import chromium, served, upload
from tests.conftest import image_bytes, make_settings

pytestmark = pytest.mark.browser
WAIT_MS = 60_000  # the first search loads the model in the app's process


@pytest.fixture
def served_app(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The app over a catalog of two sources: six `news` pictures and four `wire` ones."""
    settings = make_settings(tmp_path / "data")
    runtime = Runtime(settings)
    try:
        news = tmp_path / "news"
        news.mkdir()
        for i in range(6):
            (news / f"shot{i}.png").write_bytes(image_bytes(300 + i, "PNG"))
        (news / "shot2.json").write_text(
            '{"title": "Protest on the bridge", "source_uri": "https://news.example/bridge"}'
        )
        wire = tmp_path / "wire"
        wire.mkdir()
        for i in range(4):
            (wire / f"w{i}.jpg").write_bytes(image_bytes(500 + i))
            (wire / f"w{i}.json").write_text(json.dumps({"title": f"Wire photo {i}"}))
        runtime.pipeline.run([FolderSource("news", news), FolderSource("wire", wire)])
    finally:
        runtime.close()  # the app process takes the embedded index next
    with served(settings.data_dir, tmp_path / "serve.log") as url:
        yield url, news / "shot2.png"


def test_upload_more_like_this_filter_catalog_and_delete_in_a_real_browser(
    served_app: tuple[str, Path], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    url, query = served_app
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        expect(page.get_by_text("Have we seen this image")).to_be_visible(timeout=WAIT_MS)
        # Visitors get no developer toolbar: no "Deploy" button.
        expect(page.get_by_role("button", name="Deploy")).to_have_count(0)

        upload(page, "Images like this", query)
        expect(page.get_by_text("Published before")).to_be_visible(timeout=WAIT_MS)
        expect(page.get_by_text("1. Protest on the bridge")).to_be_visible()
        expect(page.get_by_text("same file").first).to_be_visible()
        more = page.get_by_role("button", name="More like this")
        expect(more).to_have_count(10)  # one per card: all ten images

        # "More like this" on the first card: the search runs again from its stored vector.
        more.first.click()
        expect(page.get_by_text("images like “Protest on the bridge”")).to_be_visible(
            timeout=WAIT_MS
        )
        expect(page.get_by_text("Published before")).to_have_count(0)
        expect(page.get_by_text("Protest on the bridge", exact=False)).to_have_count(1)
        expect(more).to_have_count(9)  # every image but the example itself

        # A filter narrows it: only the wire's pictures.
        sources = page.get_by_test_id("stSidebar").get_by_test_id("stMultiSelect").first
        sources.click()
        page.get_by_role("option", name="wire").click()
        page.keyboard.press("Escape")
        expect(more).to_have_count(4, timeout=WAIT_MS)
        expect(page.get_by_text("Wire photo 0")).to_be_visible()
        page.screenshot(path=str(tmp_path / "more-like-this.png"), full_page=True)

        # The catalog page: charts, browse, the record, a confirmed delete.
        page.get_by_role("link", name="Catalog").click()
        expect(page.get_by_text("Images per source")).to_be_visible(timeout=WAIT_MS)
        expect(page.get_by_test_id("stVegaLiteChart").first).to_be_visible()
        expect(page.get_by_text("10 image(s) match")).to_be_visible()
        browse_words = page.get_by_label("Words in the title")
        if not browse_words.is_visible():
            page.get_by_text("Filters", exact=True).last.click()
        page.get_by_label("Words in the title").last.fill("bridge")
        page.get_by_label("Words in the title").last.press("Enter")
        expect(page.get_by_text("1 image(s) match")).to_be_visible(timeout=WAIT_MS)
        # The grid's "Open" buttons (keyed open-<id>; the date pickers have "Open" buttons too).
        # Wait for the rerun to replace the old grid: its stale buttons linger for a moment.
        opens = page.locator('[class*="st-key-open-"] button')
        expect(opens).to_have_count(1, timeout=WAIT_MS)
        opens.click()
        expect(page.get_by_text("Takedown")).to_be_visible(timeout=WAIT_MS)
        delete = page.get_by_role("button", name="Delete", exact=True)
        expect(delete).to_be_disabled()
        page.get_by_text("I confirm: remove this image").click()
        expect(delete).to_be_enabled(timeout=WAIT_MS)
        delete.click()
        expect(page.get_by_text("Deleted “Protest on the bridge”")).to_be_visible(timeout=WAIT_MS)
        expect(page.get_by_text("0 image(s) match")).to_be_visible()

        # Gone from search: the same upload is now a picture the catalog has not seen.
        page.get_by_role("link", name="Search").click()
        upload(page, "Images like this", query)
        expect(page.get_by_text("Not in the catalog")).to_be_visible(timeout=WAIT_MS)
        expect(page.get_by_text("Protest on the bridge")).to_have_count(0)
        page.screenshot(path=str(tmp_path / "after-delete.png"), full_page=True)
