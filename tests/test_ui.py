"""The Streamlit app through AppTest: upload, verdict, grid, and the messages for bad cases."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from app.runtime import Runtime
from config import Settings
from ingest.sources.folder import FolderSource
from search.edits import EDITS
from tests.conftest import image_bytes, make_settings, open_catalog, photo
from tests.metadata_files import camera_file

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


def test_a_doctored_copy_outlines_what_changed_and_compares_in_place(
    catalog: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = app_for(catalog, monkeypatch).run()
    doctored = photo("coffee")
    doctored.paste(photo("chelsea").resize((110, 90)), (60, 40))
    upload = io.BytesIO()
    doctored.save(upload, "JPEG", quality=88)
    at.file_uploader[0].set_value(("doctored.jpg", upload.getvalue(), "image/jpeg")).run()
    assert not at.exception
    evidence = [m.value for m in at.markdown if m.value.startswith("**Edited copy**")]
    assert evidence and "a region of" in evidence[0] and "changed" in evidence[0]
    (flicker,) = [t for t in at.toggle if t.key == "flicker"]
    assert not flicker.value
    flicker.set_value(True).run()
    assert not at.exception and at.toggle(key="flicker").value


def test_a_copy_with_a_later_capture_date_warns_and_shows_its_metadata(
    catalog: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = app_for(catalog, monkeypatch).run()
    tagged = camera_file(photo("coffee").resize((400, 267)), taken="2023:01:05 10:00:00")
    at.file_uploader[0].set_value(("tagged.jpg", tagged, "image/jpeg")).run()
    assert not at.exception
    warnings = [plain(w.value) for w in at.warning if "Warning:" in w.value]
    assert len(warnings) == 1
    assert "taken 2023-01-05T10:00:00+02:00, after the catalog's first publication" in warnings[0]
    (yours,) = [t.value for t in at.table]  # the catalog's original carries no metadata
    assert dict(zip(yours["field"], yours["value"], strict=True))["Camera"] == "Canon EOS R5"
    assert any(m.value == "No metadata." for m in at.markdown)


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
        "That file is not a usable image: not an image (or a format imgsearch does not accept)."
    ]


def test_an_empty_catalog_explains_how_to_ingest(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = app_for(settings, monkeypatch).run()
    assert not at.exception
    assert any("imgsearch ingest" in i.value for i in at.info)


def test_a_held_index_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(tmp_path / "held")
    holder = open_catalog(settings.qdrant_path, settings)
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
        monkeypatch.setenv("IMGSEARCH_QDRANT__PREFER_GRPC", "false")  # REST; gRPC: test_qdrant_key
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


# -- query modes, More like this, filters, paging, catalog, add, delete ---------------


def open_page(at: AppTest, url_path: str) -> AppTest:
    """Show one of the app's pages (AppTest.switch_page knows file pages; ours are callables)."""
    from streamlit.util import calc_hash

    at._page_hash = calc_hash(url_path)  # the hash st.Page gives a callable page's url path
    return at.run()


def cards_of(at: AppTest) -> list[str]:
    """The result cards' headings, as a visitor reads them."""
    return [plain(m.value) for m in at.markdown if CARD.match(m.value)]


def answered(at: AppTest) -> list[Any]:
    """The queries this session has answered (kept in its session state)."""
    return list(at.session_state["answers"])


@pytest.fixture
def varied(tmp_path: Path) -> Settings:
    """Eight images from two sources, two categories and dates across 2023 and 2024."""
    settings = make_settings(tmp_path / "varied-data")
    runtime = Runtime(settings)
    try:
        for source in ("news", "wire"):
            folder = tmp_path / source
            folder.mkdir()
            for i in range(4):
                n = i + (4 if source == "wire" else 0)
                (folder / f"img{n}.jpg").write_bytes(image_bytes(400 + n))
                (folder / f"img{n}.json").write_text(
                    json.dumps(
                        {
                            "title": f"{'Harbour' if n % 2 else 'Stadium'} picture {n}",
                            "category": "sport" if n % 2 == 0 else "ports",
                            "published_at": f"{2023 + n // 4}-0{n % 4 + 1}-15T10:00:00Z",
                            "source_uri": f"https://{source}.example/{n}",
                        }
                    )
                )
            runtime.pipeline.run([FolderSource(source, folder)])
    finally:
        runtime.close()
    return settings


def test_more_like_this_re_runs_the_search_from_the_stored_vector_and_can_go_back(
    varied: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = app_for(varied, monkeypatch).run()
    at.file_uploader[0].set_value(("q.jpg", image_bytes(401), "image/jpeg")).run()
    assert len(at.success) == 1  # the verdict of a one-image query
    second = [b for b in at.button if (b.key or "").startswith("more-")][1]
    pid = str(second.key).removeprefix("more-")
    title = cards_of(at)[1].split("**")[1].split(". ", 1)[1]
    second.click().run()
    assert not at.exception
    assert any(q.ids == (pid,) and not q.images for q in answered(at))
    assert [plain(i.value) for i in at.info] == [
        f"**More like this:** images like “{title}”, ranked by its stored vector."
    ]
    assert not at.success  # no verdict: the query is a catalog image, not an upload
    cards = cards_of(at)
    assert len(cards) == 7 and not any(f". {title}**" in c for c in cards)  # itself left out
    at.button(key="back").click().run()
    assert len(at.success) == 1 and not at.info
    assert len(cards_of(at)) == 8


def test_the_filters_reach_the_query_and_narrow_the_results(
    varied: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import date

    at = app_for(varied, monkeypatch).run()
    assert at.multiselect(key="search_sources").options == ["news", "wire"]
    assert sorted(at.multiselect(key="search_categories").options) == ["ports", "sport"]
    at.file_uploader[0].set_value(("q.jpg", image_bytes(999), "image/jpeg")).run()
    assert len(cards_of(at)) == 8
    at.multiselect(key="search_sources").select("wire").run()
    assert len(cards_of(at)) == 4
    at.multiselect(key="search_categories").select("ports").run()
    titles = sorted(c.split("**")[1].split(". ", 1)[1] for c in cards_of(at))
    assert titles == ["Harbour picture 5", "Harbour picture 7"]
    at.date_input(key="search_since").set_value(date(2024, 4, 1)).run()
    assert [c.split("**")[1].split(". ", 1)[1] for c in cards_of(at)] == ["Harbour picture 7"]
    at.text_input(key="search_words").input("stadium").run()
    assert not cards_of(at)
    assert any(w.value == "No similar images found." for w in at.markdown)
    last = answered(at)[-1]
    assert last.filters.sources == ("wire",) and last.filters.categories == ("ports",)
    assert last.filters.since == "2024-04-01" and last.filters.words == "stadium"


def test_an_empty_date_range_is_one_sentence(
    varied: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import date

    at = app_for(varied, monkeypatch).run()
    at.date_input(key="search_since").set_value(date(2024, 5, 1))
    at.date_input(key="search_until").set_value(date(2024, 1, 1))
    at.file_uploader[0].set_value(("q.jpg", image_bytes(999), "image/jpeg")).run()
    assert not at.exception
    assert [e.value for e in at.error] == ["The date range is empty: `since` is after `until`."]


def test_load_more_adds_the_next_page_without_repeating_a_card(
    varied: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = app_for(varied, monkeypatch).run()
    at.slider(key="top_k").set_value(3).run()
    at.file_uploader[0].set_value(("q.jpg", image_bytes(999), "image/jpeg")).run()
    first = cards_of(at)
    assert len(first) == 3
    at.button(key="load_more").click().run()
    both = cards_of(at)
    assert both[:3] == first and len(both) == 6
    assert [c.split(".")[0] for c in both] == [f"**{n}" for n in range(1, 7)]
    assert len({c.split(". ", 1)[1].split("**")[0] for c in both}) == 6
    at.button(key="load_more").click().run()
    assert len(cards_of(at)) == 8
    assert not [b for b in at.button if b.key == "load_more"]  # the last page was short


def test_several_examples_and_negatives_offer_a_strategy_and_give_no_verdict(
    varied: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = app_for(varied, monkeypatch).run()
    assert not at.radio  # one example or none: nothing to combine
    at.file_uploader[0].set_value(
        [("a.jpg", image_bytes(400), "image/jpeg"), ("b.jpg", image_bytes(402), "image/jpeg")]
    )
    at.file_uploader[1].set_value(("not.jpg", image_bytes(405), "image/jpeg")).run()
    assert not at.exception and not at.error
    assert not at.success and not [i for i in at.info if "Not in the catalog" in i.value]
    assert len(cards_of(at)) == 8
    (query,) = answered(at)
    assert len(query.images) == 2 and len(query.negative_images) == 1
    at.radio(key="strategy").set_value("best_score").run()
    assert answered(at)[-1].strategy == "best_score"
    assert len(cards_of(at)) == 8


def test_only_negative_examples_get_one_sentence(
    varied: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = app_for(varied, monkeypatch).run()
    at.file_uploader[1].set_value(("not.jpg", image_bytes(405), "image/jpeg")).run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "Give at least one example of what you want: an image, an image URL, a catalog id or "
        "some text."
    ]


def test_without_a_text_model_the_page_says_how_to_turn_text_search_on(
    varied: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = app_for(varied, monkeypatch).run()
    assert not [t for t in at.text_input if t.key == "text"]
    assert any(
        c.value.startswith("Text search is off: set IMGSEARCH_TEXT__ENABLED") for c in at.caption
    )


def test_an_image_url_on_a_private_address_is_refused_in_one_sentence(
    varied: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import free_port

    at = app_for(varied, monkeypatch).run()
    at.text_input(key="url").input(f"http://127.0.0.1:{free_port()}/photo.jpg").run()
    assert not at.exception
    (error,) = at.error
    assert error.value.startswith("The image at http://127.0.0.1:")
    assert "\n" not in error.value and "Traceback" not in error.value


def test_an_image_url_is_searched_with_the_verdict(
    varied: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import http.server
    import threading

    from tests.conftest import free_port

    body = image_bytes(406)

    class Photo(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    port = free_port()
    server = http.server.HTTPServer(("127.0.0.1", port), Photo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("IMGSEARCH_FETCH__ALLOWED_PRIVATE_HOSTS", '["127.0.0.1"]')
        at = app_for(varied, monkeypatch).run()
        at.text_input(key="url").input(f"http://127.0.0.1:{port}/wire/6.jpg").run()
    finally:
        server.shutdown()
        server.server_close()
    assert not at.exception and not at.error
    assert [plain(s.value) for s in at.success] == [
        "**Published before:** first on 2024-03-15T10:00:00Z by wire"
    ]
    assert cards_of(at)[0].startswith("**1. Stadium picture 6**")


def test_the_catalog_page_counts_browses_with_filters_and_opens_a_record(
    varied: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page(app_for(varied, monkeypatch).run(), "catalog")
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == "8" and metrics["Sources"] == "2" and metrics["Categories"] == "2"
    assert len(at.get("vega_lite_chart")) == 7  # source, category, month, day, format, size, px
    assert any(c.value.startswith("8 image(s) match") for c in at.caption)
    at.multiselect(key="browse_sources").select("news").run()
    at.text_input(key="browse_words").input("harbour").run()
    assert any(c.value.startswith("2 image(s) match") for c in at.caption)
    opens = [b for b in at.button if (b.key or "").startswith("open-")]
    assert len(opens) == 2
    opens[0].click().run()
    assert not at.exception
    (heading,) = [h.value for h in at.subheader if "Harbour" in h.value]
    assert plain(heading) in {"Harbour picture 1", "Harbour picture 3"}
    (timeline,) = [d for d in at.dataframe if "link" in d.value.columns]
    assert list(timeline.value["source"]) == ["news"]
    assert any("**Id:** `" in m.value for m in at.markdown)


def test_opening_an_unknown_id_is_one_sentence(
    varied: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page(app_for(varied, monkeypatch).run(), "catalog")
    at.text_input(key="open_id").input("not-an-id").run()
    assert not at.exception
    assert [e.value for e in at.error] == ["'not-an-id' is not an image id (ids are UUIDs)."]


def test_delete_needs_a_confirmation_and_the_image_is_gone_from_search(
    varied: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    from store.keys import point_id

    data = image_bytes(402)
    pid = point_id(hashlib.sha256(data).hexdigest())
    at = app_for(varied, monkeypatch).run()
    at.file_uploader[0].set_value(("q.jpg", data, "image/jpeg")).run()
    assert len(at.success) == 1  # in the catalog
    at = open_page(at, "catalog")
    at.text_input(key="open_id").input(pid).run()
    assert at.button(key="delete").disabled  # until the takedown is confirmed
    assert {m.label: m.value for m in at.metric}["Images"] == "8"
    at.checkbox(key=f"confirm-{pid}").check().run()
    at.button(key="delete").click().run()
    assert not at.exception
    assert any(s.value.startswith("Deleted “Stadium picture 2”") for s in at.success)
    assert {m.label: m.value for m in at.metric}["Images"] == "7"
    assert not [h for h in at.subheader if "Stadium picture 2" in h.value]  # record closed
    at = open_page(at, "search")
    at.file_uploader[0].set_value(("q.jpg", data, "image/jpeg")).run()
    assert not at.success
    assert any(i.value.startswith("Not in the catalog") for i in at.info)
    assert not any("Stadium picture 2" in c for c in cards_of(at))
    # The original is gone from the image store too (stored under its content address).
    files = [p for p in (varied.data_dir / "images").rglob("*") if p.is_file()]
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    assert hashlib.sha256(image_bytes(401)).hexdigest() in digests  # the others stay
    assert hashlib.sha256(data).hexdigest() not in digests
    assert len(list((varied.data_dir / "images" / "thumbnails").rglob("*.*"))) == 7


def test_the_add_form_adds_a_new_image_then_records_a_second_place(
    varied: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import date

    at = open_page(app_for(varied, monkeypatch).run(), "add")
    at.button(key="FormSubmitter:add-Add to the catalog").click().run()
    assert [e.value for e in at.error] == ["Choose an image file to add."]
    data = image_bytes(777)
    at.file_uploader(key="add_file").set_value(("new.jpg", data, "image/jpeg"))
    at.text_input(key="add_title").input("Ferry at dawn")
    at.text_area(key="add_description").input("The first ferry of the day.")
    at.text_input(key="add_link").input("https://desk.example/ferry")
    at.date_input(key="add_published").set_value(date(2025, 2, 3))
    at.text_input(key="add_category").input("ports")
    at.button(key="FormSubmitter:add-Add to the catalog").click().run()
    assert not at.exception and not at.error
    (added,) = at.success
    assert added.value.startswith("Added to the catalog as a new image. Its id is `")
    assert {m.label: m.value for m in at.metric}["Images in the catalog"] == "9"
    at.text_input(key="add_link").input("https://other.example/ferry-again")
    at.button(key="FormSubmitter:add-Add to the catalog").click().run()
    assert [i.value.split(":")[0] for i in at.info] == ["This image was already in the catalog"]
    (timeline,) = [d for d in at.dataframe if "link" in d.value.columns]
    assert sorted(timeline.value["link"]) == [
        "https://desk.example/ferry",
        "https://other.example/ferry-again",
    ]
    at = open_page(at, "search")
    at.file_uploader[0].set_value(("q.jpg", data, "image/jpeg")).run()
    assert cards_of(at)[0].startswith("**1. Ferry at dawn**")


def test_adding_a_file_that_is_not_an_image_is_one_sentence(
    varied: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page(app_for(varied, monkeypatch).run(), "add")
    at.file_uploader(key="add_file").set_value(("x.jpg", b"not an image at all", "image/jpeg"))
    at.button(key="FormSubmitter:add-Add to the catalog").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "That file is not a usable image: not an image (or a format imgsearch does not accept)."
    ]


def test_the_catalog_pages_through_the_browse_grid(
    varied: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.ui_catalog

    monkeypatch.setattr(app.ui_catalog, "PAGE_SIZE", 3)
    at = open_page(app_for(varied, monkeypatch).run(), "catalog")
    seen: list[str] = []
    for number in (1, 2, 3):
        assert any(c.value.endswith(f"page {number} of 3") for c in at.caption)
        opens = [str(b.key) for b in at.button if (b.key or "").startswith("open-")]
        assert len(opens) == (3 if number < 3 else 2)
        seen += opens
        assert at.button(key="browse_next").disabled == (number == 3)
        if number < 3:
            at.button(key="browse_next").click().run()
    assert len(set(seen)) == 8  # every image once
    at.button(key="browse_prev").click().run()
    assert any(c.value.endswith("page 2 of 3") for c in at.caption)


def test_more_like_this_from_a_record_opens_the_search_page(
    varied: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page(app_for(varied, monkeypatch).run(), "catalog")
    next(b for b in at.button if (b.key or "").startswith("open-")).click().run()
    (heading,) = [plain(h.value) for h in at.subheader if "picture" in h.value]
    at.button(key="record_more").click().run()
    assert not at.exception
    assert any(f"images like “{heading}”" in plain(i.value) for i in at.info)
    assert len(cards_of(at)) == 7


def test_with_a_text_model_words_search_the_catalog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_clip import save_tiny_clip

    model = save_tiny_clip(tmp_path / "tiny-clip")
    settings = make_settings(
        tmp_path / "text-data",
        text={"enabled": True, "model": str(model)},
        verdict={"sscd_weights": "off"},
    )
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(4):
        (photos / f"t{i}.jpg").write_bytes(image_bytes(600 + i))
    runtime = Runtime(settings)
    try:
        runtime.pipeline.run([FolderSource("news", photos)])
    finally:
        runtime.close()
    monkeypatch.setenv("IMGSEARCH_TEXT__ENABLED", "true")
    monkeypatch.setenv("IMGSEARCH_TEXT__MODEL", str(model))
    monkeypatch.setenv("IMGSEARCH_VERDICT__SSCD_WEIGHTS", "off")
    at = app_for(settings, monkeypatch).run()
    assert not at.exception
    assert not [c for c in at.caption if c.value.startswith("Text search is off")]
    at.text_input(key="text").input("a cat on a sofa").run()
    assert not at.exception and not at.error and not at.success
    assert len(cards_of(at)) == 4
    assert answered(at)[-1].text == "a cat on a sofa"
    at.file_uploader[0].set_value(("q.jpg", image_bytes(600), "image/jpeg")).run()
    assert [e.value for e in at.error] == [
        "A text query can be combined with catalog ids, not with example images."
    ]


def _s3_catalog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, endpoint: str, bucket: str, **s3: Any
) -> Settings:
    """Three images in an S3 catalog on the loopback endpoint; the page gets the same settings."""
    monkeypatch.setenv("IMGSEARCH_STORAGE__URL", f"s3://{bucket}/catalog")
    monkeypatch.setenv("IMGSEARCH_S3__ENDPOINT_URL", endpoint)
    monkeypatch.setenv("IMGSEARCH_S3__REGION", "us-east-1")
    monkeypatch.setenv("IMGSEARCH_S3__ADDRESSING_STYLE", "path")
    for name, value in s3.items():
        monkeypatch.setenv(f"IMGSEARCH_S3__{name.upper()}", str(value).lower())
    settings = make_settings(
        tmp_path / "data",
        storage={"url": f"s3://{bucket}/catalog"},
        s3={"endpoint_url": endpoint, "region": "us-east-1", "addressing_style": "path", **s3},
    )
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        (photos / f"photo{i}.jpg").write_bytes(image_bytes(300 + i))
    runtime = Runtime(settings)
    try:
        runtime.pipeline.run([FolderSource("news", photos)])
    finally:
        runtime.close()
    return settings


def _image_urls(at: AppTest) -> list[str]:
    return [url for element in at.image for url in element.value]


def test_s3_thumbnails_load_in_the_browser_through_presigned_links(
    tmp_path: Path, s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    browser = s3_endpoint.replace("127.0.0.1", "localhost")  # another name, as compose has
    settings = _s3_catalog(
        tmp_path, monkeypatch, s3_endpoint, s3_bucket, browser_endpoint_url=browser
    )
    at = app_for(settings, monkeypatch).run()
    at.file_uploader[0].set_value(("q.jpg", image_bytes(301), "image/jpeg")).run()
    assert not at.exception
    urls = [u for u in _image_urls(at) if not u.startswith("/mock/media/")]  # not the upload
    assert len(urls) == 3
    assert all(u.startswith(f"{browser}/{s3_bucket}/catalog/thumbnails/") for u in urls)
    for url in urls:  # each link opens the thumbnail itself, a JPEG, without the app
        answer = httpx.get(url)
        assert answer.status_code == 200 and answer.content[:3] == b"\xff\xd8\xff"
    assert "X-Amz-Signature" in urls[0] and "X-Amz-Expires=3600" in urls[0]


def test_with_direct_thumbnails_off_the_app_serves_the_s3_thumbnails(
    tmp_path: Path, s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _s3_catalog(tmp_path, monkeypatch, s3_endpoint, s3_bucket, direct_thumbnails=False)
    at = app_for(settings, monkeypatch).run()
    at.file_uploader[0].set_value(("q.jpg", image_bytes(301), "image/jpeg")).run()
    assert not at.exception
    urls = _image_urls(at)
    assert len(urls) >= 3 and all(u.startswith("/mock/media/") for u in urls)
