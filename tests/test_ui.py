"""The Streamlit app through AppTest: upload, verdict, grid, and the messages for bad cases."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.runtime import Runtime
from config import Settings
from ingest.sources.folder import FolderSource
from search.edits import EDITS
from store.index import open_local_index
from tests.conftest import image_bytes, make_settings, photo

CARD = re.compile(r"^\*\*\d+\. ")
UI = str(Path(__file__).resolve().parents[1] / "app" / "ui.py")


def plain(markdown: str) -> str:
    """Markdown source with its backslash escapes removed: the text a visitor reads."""
    return re.sub(r"\\(.)", r"\1", markdown)


def app_for(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("IMGSEARCH_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("IMGSEARCH_EMBED__WEIGHTS", "random")
    monkeypatch.setenv("IMGSEARCH_EMBED__DEVICE", "cpu")
    return AppTest.from_file(UI, default_timeout=120)


@pytest.fixture
def catalog(tmp_path: Path) -> Settings:
    settings = make_settings(tmp_path / "catalog-data")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(8):
        (photos / f"photo{i}.jpg").write_bytes(image_bytes(200 + i))
    # A real photograph, so that an edited copy of it can be recognised.
    (photos / "photo8.jpg").write_bytes(EDITS["recompress"](photo("coffee"), 0))
    (photos / "photo8.json").write_text(
        '{"title": "Coffee at the summit", "source_uri": "https://news.example/coffee", '
        '"published_at": "2022-06-01T08:00:00Z"}'
    )
    (photos / "photo3.json").write_text(
        '{"title": "Flood in the old town", '
        '"source_uri": "https://news.example/flood", '
        '"published_at": "2024-03-01T09:30:00Z"}'
    )
    runtime = Runtime(settings)
    try:
        runtime.pipeline.run([FolderSource("news", photos)])
    finally:
        runtime.close()
    return settings


def test_uploading_a_catalog_image_shows_the_verdict_and_it_first(
    catalog: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = app_for(catalog, monkeypatch).run()
    assert not at.exception
    assert any("random weights" in w.value for w in at.warning)
    at.file_uploader[0].set_value(("q.jpg", image_bytes(203), "image/jpeg")).run()
    assert not at.exception
    assert [plain(s.value) for s in at.success] == [
        "**Published before:** first on 2024-03-01T09:30:00Z by news"
    ]
    assert any(m.value.startswith("**Same file** · evidence: same file") for m in at.markdown)
    cards = [m.value for m in at.markdown if CARD.match(m.value)]
    assert cards[0].startswith("**1. Flood in the old town**")
    assert "same file" in cards[0]
    assert len(cards) == 9
    assert any("(https://news.example/flood)" in m.value for m in at.markdown)
    (timeline,) = [d for d in at.dataframe if "link" in d.value.columns]
    assert list(timeline.value["link"]) == ["https://news.example/flood"]


def test_an_edited_copy_shows_the_first_publication_and_the_evidence(
    catalog: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = app_for(catalog, monkeypatch).run()
    edited = EDITS["crop+border+rotate"](photo("coffee"), 0)
    at.file_uploader[0].set_value(("edited.jpg", edited, "image/jpeg")).run()
    assert not at.exception
    assert [plain(s.value) for s in at.success] == [
        "**Published before:** first on 2022-06-01T08:00:00Z by news"
    ]
    assert any(m.value.startswith("**Edited copy** · evidence: edited copy:") for m in at.markdown)
    assert any("(https://news.example/coffee)" in m.value for m in at.markdown)
    cards = [m.value for m in at.markdown if CARD.match(m.value)]
    assert any("edited copy" in card for card in cards)


def test_an_image_not_in_the_catalog_says_so(
    catalog: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = app_for(catalog, monkeypatch).run()
    at.slider(key="top_k").set_value(3).run()
    at.file_uploader[0].set_value(("new.png", image_bytes(999, "PNG"), "image/png")).run()
    assert any("Not in the catalog" in i.value for i in at.info)
    assert len([m for m in at.markdown if CARD.match(m.value)]) == 3


def test_an_unreadable_upload_gets_one_sentence(
    catalog: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = app_for(catalog, monkeypatch).run()
    at.file_uploader[0].set_value(("bad.jpg", b"\xff\xd8\xff garbage", "image/jpeg")).run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "This file could not be read as an image: not an image (or a format imgsearch does "
        "not accept)."
    ]


def test_an_empty_catalog_explains_how_to_ingest(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = app_for(settings, monkeypatch).run()
    assert not at.exception
    assert any("imgsearch ingest" in i.value for i in at.info)


def test_a_held_index_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(tmp_path / "held")
    holder = open_local_index(settings.qdrant_path, "images")
    try:
        at = app_for(settings, monkeypatch).run()
    finally:
        holder.close()
    assert not at.exception
    assert len(at.error) == 1 and "is held by process" in at.error[0].value


def test_an_unreachable_index_server_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import free_port

    settings = make_settings(tmp_path / "remote")
    monkeypatch.setenv("IMGSEARCH_QDRANT__URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("IMGSEARCH_QDRANT__TIMEOUT_S", "2")
    at = app_for(settings, monkeypatch).run()
    assert not at.exception
    assert len(at.error) == 1 and "did not answer" in at.error[0].value


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_the_page_sends_the_configured_qdrant_api_key(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import http.server
    import threading

    from tests.conftest import free_port

    seen: list[str | None] = []

    class FakeQdrant(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("api-key"))
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    port = free_port()
    server = http.server.HTTPServer(("127.0.0.1", port), FakeQdrant)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("IMGSEARCH_QDRANT__URL", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("IMGSEARCH_QDRANT__API_KEY", "s3cret-key")
        monkeypatch.setenv("IMGSEARCH_QDRANT__TIMEOUT_S", "3")
        at = app_for(settings, monkeypatch).run()
    finally:
        server.shutdown()
        server.server_close()
    assert seen, "the page never called the index"
    assert set(seen) == {"s3cret-key"}  # the real key, not "**********"
    assert not at.exception
    assert [e.value for e in at.error]  # the unreachable index is one sentence on the page


def test_serve_hides_tracebacks_and_the_developer_toolbar() -> None:
    import argparse

    from streamlit import config
    from streamlit.web import bootstrap

    from app.cli import serve_flags
    from tests.conftest import make_settings as settings_for

    flags = serve_flags(argparse.Namespace(port=0, address=""), settings_for(Path("data")))
    bootstrap.load_config_options(flag_options=flags)
    assert config.get_option("client.showErrorDetails") == "none"
    assert config.get_option("client.toolbarMode") == "minimal"


def test_feed_text_is_shown_literally_never_as_markdown_or_links(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    photos = tmp_path / "hostile"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(image_bytes(77))
    (photos / "a.json").write_text(
        '{"title": "[click me](javascript:alert(1)) <b>bold</b> **loud**", '
        '"source_uri": "https://news.example/a (b)"}'
    )
    runtime = Runtime(settings)
    try:
        runtime.pipeline.run([FolderSource("news", photos)])
    finally:
        runtime.close()
    at = app_for(settings, monkeypatch).run()
    at.file_uploader[0].set_value(("a.jpg", image_bytes(77), "image/jpeg")).run()
    assert not at.exception
    texts = [m.value for m in at.markdown]
    (card,) = [t for t in texts if CARD.match(t)]
    assert r"\[click me\]\(javascript:alert\(1\)\) \<b\>bold\</b\> \*\*loud\*\*" in card
    assert "](javascript" not in "".join(texts)
    assert any("(https://news.example/a%20%28b%29)" in t for t in texts)
