"""Query modes of the search service, record/delete/stats, adding by hand, and the CLI for them.

Everything runs against the real index engine and the seeded random-weight encoder: rankings
among unrelated pictures mean nothing with those weights, so the assertions are about what a
user relies on (an image or its resized copy comes first, filters hold, pages do not overlap).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from app.runtime import Runtime
from config import FetchSettings, Settings, VerdictSettings
from embed.decode import DecodeError, sha256_of
from embed.descriptors import TextSearchUnavailable
from ingest.manual import ManualAddError, ManualImage, add_image
from ingest.sources.folder import FolderSource
from search.catalog import Catalog
from search.query import FetchFailed, Filters, Query, QueryError, UnknownImage
from search.service import SearchService, query_fit
from store.keys import point_id
from tests.conftest import image_bytes, make_settings, photo
from tests.feed_server import FeedServer

NEWS = [  # seed, title, category, published_at
    (500, "Flood in the harbour", "weather", "2024-01-10T08:00:00Z"),
    (501, "Election night crowd", "politics", "2024-03-05T21:00:00Z"),
    (502, "Harbour fire at dawn", "disaster", "2024-03-20T05:30:00Z"),
    (503, "Storm over the bridge", "weather", "2024-06-01T12:00:00Z"),
]
WIRE = [510, 511, 512]


def resized_copy(data: bytes) -> bytes:
    """The same picture at 80% size, re-encoded: an edited copy."""
    image = Image.open(io.BytesIO(data))
    buffer = io.BytesIO()
    image.resize((image.width * 4 // 5, image.height * 4 // 5)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def write_catalog(root: Path) -> dict[str, bytes]:
    """Two source folders with sidecars; returns {name: bytes} of every image."""
    files: dict[str, bytes] = {}
    news, wire = root / "news", root / "wire"
    news.mkdir(parents=True)
    wire.mkdir(parents=True)
    for seed, title, category, published in NEWS:
        data = image_bytes(seed)
        (news / f"n{seed}.jpg").write_bytes(data)
        (news / f"n{seed}.json").write_text(
            json.dumps(
                {
                    "title": title,
                    "category": category,
                    "published_at": published,
                    "source_uri": f"https://news.example/{seed}",
                }
            )
        )
        files[f"n{seed}"] = data
    for seed in WIRE:
        data = image_bytes(seed)
        (wire / f"w{seed}.jpg").write_bytes(data)
        (wire / f"w{seed}.json").write_text(json.dumps({"category": "sport"}))
        files[f"w{seed}"] = data
    copy = resized_copy(files["n500"])
    (wire / "flood-copy.jpg").write_bytes(copy)
    (wire / "flood-copy.json").write_text(json.dumps({"title": "Flood (resized)"}))
    files["copy"] = copy
    return files


def pid(data: bytes) -> str:
    return point_id(sha256_of(data))


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, dict[str, bytes]]]:
    """A catalog of 8 images from two sources, opened once for the module's read-only tests."""
    root = tmp_path_factory.mktemp("catalog")
    files = write_catalog(root / "photos")
    runtime = Runtime(make_settings(root / "data"))
    try:
        runtime.pipeline.run(
            [
                FolderSource("news", root / "photos" / "news"),
                FolderSource("wire", root / "photos" / "wire"),
            ]
        )
        yield runtime, files
    finally:
        runtime.close()


@pytest.fixture
def service(catalog: tuple[Runtime, dict[str, bytes]]) -> SearchService:
    return catalog[0].search


@pytest.fixture
def images(catalog: tuple[Runtime, dict[str, bytes]]) -> Catalog:
    return catalog[0].catalog


@pytest.fixture
def files(catalog: tuple[Runtime, dict[str, bytes]]) -> dict[str, bytes]:
    return catalog[1]


# -- query modes -----------------------------------------------------------------------------
def test_one_image_gives_the_verdict_and_itself_first(
    service: SearchService, files: dict[str, bytes]
) -> None:
    result = service.search(Query(images=(files["n501"],), top_k=4))
    assert result.has_verdict and result.verdict.kind == "exact"
    assert result.matches[0].id == pid(files["n501"]) and result.matches[0].exact
    assert "verdict" in result.as_dict()


def test_more_like_this_from_a_stored_id_ranks_the_resized_copy_first(
    service: SearchService, files: dict[str, bytes]
) -> None:
    original = pid(files["n500"])
    result = service.search(Query(ids=(original,), top_k=5))
    assert not result.has_verdict and "verdict" not in result.as_dict()
    ids = [m.id for m in result.matches]
    assert ids[0] == pid(files["copy"])
    assert original not in ids  # the example itself is not an answer


@pytest.mark.parametrize("strategy", ["average_vector", "best_score"])
def test_negative_examples_are_never_answers(
    service: SearchService, files: dict[str, bytes], strategy: str
) -> None:
    positive, negative = pid(files["n500"]), pid(files["copy"])
    result = service.search(
        Query(ids=(positive,), negative_ids=(negative,), top_k=8, strategy=strategy)  # type: ignore[arg-type]
    )
    ids = [m.id for m in result.matches]
    assert ids and positive not in ids and negative not in ids


def test_several_uploaded_examples_search_together_without_a_verdict(
    service: SearchService, files: dict[str, bytes]
) -> None:
    result = service.search(Query(images=(files["n502"], files["n503"]), top_k=8))
    assert not result.has_verdict
    assert {pid(files["n502"]), pid(files["n503"])} <= {m.id for m in result.matches}


def test_filters_by_source_category_date_and_title_words(
    service: SearchService, files: dict[str, bytes]
) -> None:
    def ids(filters: Filters) -> set[str]:
        found = service.search(Query(ids=(pid(files["w510"]),), filters=filters, top_k=20))
        return {m.id for m in found.matches}

    assert ids(Filters(sources=("news",))) == {pid(files[f"n{s}"]) for s, *_ in NEWS}
    assert ids(Filters(categories=("weather",))) == {pid(files["n500"]), pid(files["n503"])}
    march = Filters(since="2024-03-01", until="2024-03-20")  # a bare until takes the whole day
    assert ids(march) == {pid(files["n501"]), pid(files["n502"])}
    assert ids(Filters(words="harbour")) == {pid(files["n500"]), pid(files["n502"])}
    assert ids(Filters(sources=("wire",), categories=("sport",))) == {
        pid(files[f"w{s}"]) for s in WIRE if s != 510
    }


def test_pages_follow_each_other_without_overlap(
    service: SearchService, files: dict[str, bytes]
) -> None:
    query = Query(images=(files["n502"],), top_k=6)
    whole = [m.id for m in service.search(query).matches]
    first = [m.id for m in service.search(Query(images=(files["n502"],), top_k=3)).matches]
    second = service.search(Query(images=(files["n502"],), top_k=3, offset=3))
    assert first + [m.id for m in second.matches] == whole
    assert second.offset == 3


def test_copies_fold_under_one_card(service: SearchService, files: dict[str, bytes]) -> None:
    result = service.search(Query(images=(files["n500"],), top_k=8))
    (card,) = [c for c in result.cards if c.lead.id == pid(files["n500"])]
    assert [m.id for m in card.copies] == [pid(files["copy"])]


def test_text_without_a_text_model_is_one_sentence(service: SearchService) -> None:
    with pytest.raises(TextSearchUnavailable) as caught:
        service.search(Query(text="a flooded harbour"))
    assert "IMGSEARCH_TEXT__ENABLED" in str(caught.value)


@pytest.mark.parametrize(
    ("query", "words"),
    [
        (Query(), "at least one example"),
        (Query(ids=("not-an-id",)), "not an image id"),
        (Query(ids=("0f8fad5b-d9cb-469f-a165-70867728950e",)), "No image with id"),
        (Query(text="cat", images=(b"x",)), "text query"),
        (Query(ids=("0f8fad5b-d9cb-469f-a165-70867728950e",), top_k=0), "top_k"),
        (
            Query(
                ids=("0f8fad5b-d9cb-469f-a165-70867728950e",),
                filters=Filters(since="2024-05-01", until="2024-04-01"),
            ),
            "date range is empty",
        ),
        (
            Query(ids=("0f8fad5b-d9cb-469f-a165-70867728950e",), filters=Filters(since="soon")),
            "must be a date",
        ),
    ],
)
def test_queries_that_cannot_run_say_why_in_one_sentence(
    service: SearchService, query: Query, words: str
) -> None:
    with pytest.raises(QueryError) as caught:
        service.search(query)
    assert words in str(caught.value)
    assert str(caught.value).endswith(".")


def test_an_unknown_id_is_unknown_image(images: Catalog) -> None:
    with pytest.raises(UnknownImage):
        images.record("0f8fad5b-d9cb-469f-a165-70867728950e")


def test_search_by_url_fetches_through_the_guarded_downloader(
    catalog: tuple[Runtime, dict[str, bytes]],
) -> None:
    runtime, files = catalog
    with FeedServer() as server:
        url = server.add("/photos/storm.jpg", files["n503"], "image/jpeg")
        allowed = SearchService(
            runtime.index,
            runtime.images,
            runtime.descriptors,
            fetch=FetchSettings(allowed_private_hosts=[server.host_port], retries=0),
        )
        refused = SearchService(
            runtime.index, runtime.images, runtime.descriptors, fetch=FetchSettings(retries=0)
        )
        try:
            result = allowed.search(Query(urls=(url,), top_k=3))
            assert result.has_verdict and result.matches[0].id == pid(files["n503"])
            with pytest.raises(FetchFailed) as caught:
                refused.search(Query(urls=(url,)))
            assert "refused" in str(caught.value)
            assert server.hits("/photos/storm.jpg") == 1  # the refused one never connected
            server.add("/page.html", "<html>hi</html>", "text/html")
            with pytest.raises(FetchFailed, match="not an image"):
                allowed.search(Query(urls=(server.url("/page.html"),)))
        finally:
            allowed.close()
            refused.close()


def test_stats_count_sources_categories_months_formats_and_sizes(images: Catalog) -> None:
    stats = images.stats().as_dict()
    assert stats["total"] == 8
    assert stats["sources"] == {"news": 4, "wire": 4}
    assert stats["categories"] == {"sport": 3, "weather": 2, "politics": 1, "disaster": 1}
    assert stats["months"] == {"2024-01": 1, "2024-03": 2, "2024-06": 1, "undated": 4}
    assert stats["formats"] == {"JPEG": 8}
    assert sum(stats["sizes"].values()) == 8 and stats["total_bytes"] > 0
    assert sum(stats["ingested"].values()) == 8


def test_a_record_has_its_payload_and_timeline(images: Catalog, files: dict[str, bytes]) -> None:
    record = images.record(pid(files["n502"])).as_dict()
    assert record["payload"]["title"] == "Harbour fire at dawn"
    assert [p["source_uri"] for p in record["timeline"]] == ["https://news.example/502"]


# -- writes: delete and add by hand (each on its own small catalog) --------------------------
@pytest.fixture
def small(tmp_path: Path) -> Iterator[Runtime]:
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in (600, 601, 602):
        (photos / f"p{seed}.jpg").write_bytes(image_bytes(seed))
    runtime = Runtime(make_settings(tmp_path / "data"))
    try:
        runtime.pipeline.run([FolderSource("desk", photos)])
        yield runtime
    finally:
        runtime.close()


def test_delete_removes_the_point_and_its_stored_files(small: Runtime, tmp_path: Path) -> None:
    target = pid(image_bytes(601))
    payload = small.catalog.record(target).payload
    deleted = small.catalog.delete(target)
    assert deleted.id == target
    assert not small.index.existing([target])
    assert not small.images.exists(payload["image_key"])
    assert not small.images.exists(payload["thumbnail_key"])
    with pytest.raises(UnknownImage):
        small.catalog.delete(target)
    assert small.catalog.count() == 2
    # The daily job does not bring it back: the item is unchanged in its source.
    report = small.pipeline.run([FolderSource("desk", tmp_path / "photos")])
    assert report.total().unchanged == 3 and small.catalog.count() == 2


def test_an_image_added_by_hand_is_found_first_with_its_title(small: Runtime) -> None:
    data = image_bytes(650)
    added = add_image(
        small.pipeline,
        ManualImage(
            data,
            title="Mayor opens the bridge",
            description="Ribbon cutting",
            source_uri="https://paper.example/bridge",
            published_at="2024-05-02",
        ),
    )
    assert added.new and added.id == pid(data)
    first = small.search.search(Query(images=(data,), top_k=3)).matches[0]
    assert first.id == added.id
    assert first.payload["title"] == "Mayor opens the bridge"
    assert first.payload["published_at"] == "2024-05-02T00:00:00Z"
    assert first.payload["source"] == "manual"
    assert small.state.runs(1)[0].report.total().new == 1  # recorded like any run


def test_adding_a_known_image_again_adds_a_place_to_its_timeline(small: Runtime) -> None:
    data = image_bytes(600)  # already ingested from the folder
    again = add_image(
        small.pipeline,
        ManualImage(
            data,
            title="Earlier print",
            source_uri="https://paper.example/old",
            published_at="2001-01-01",
        ),
    )
    assert again.status == "known" and small.catalog.count() == 3
    record = small.catalog.record(again.id)
    assert record.timeline[0]["source_uri"] == "https://paper.example/old"  # earliest first
    assert len(record.timeline) == 2


def test_a_bad_date_or_a_non_image_is_refused_and_nothing_is_quarantined(small: Runtime) -> None:
    with pytest.raises(ManualAddError, match="not readable"):
        add_image(small.pipeline, ManualImage(image_bytes(651), published_at="next tuesday"))
    with pytest.raises(DecodeError):
        add_image(small.pipeline, ManualImage(b"%PDF-1.4 not a picture"))
    assert small.catalog.count() == 3
    assert small.state.quarantine_list() == []


# -- the command line ------------------------------------------------------------------------
def test_cli_add_search_with_filters_and_delete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import main

    settings: Settings = make_settings(tmp_path / "data")
    monkeypatch.setenv("IMGSEARCH_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("IMGSEARCH_EMBED__WEIGHTS", "random")
    monkeypatch.setenv("IMGSEARCH_EMBED__DEVICE", "cpu")
    photo = tmp_path / "bridge.jpg"
    photo.write_bytes(image_bytes(700))
    other = tmp_path / "other.jpg"
    other.write_bytes(image_bytes(701))

    assert main(["add", str(photo), "--title", "Bridge", "--published-at", "2024-02-02"]) == 0
    added = capsys.readouterr().out.split()[0]
    assert added == pid(image_bytes(700))
    assert main(["add", str(other), "--title", "Other"]) == 0
    capsys.readouterr()

    assert main(["search", str(photo), "--json", "--since", "2024-01-01"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [m["id"] for m in found] == [added]  # the undated one is filtered out

    assert main(["search", "--positive", added, "--json"]) == 0
    assert [m["payload"]["title"] for m in json.loads(capsys.readouterr().out)] == ["Other"]

    assert main(["search", "--positive", "no-such-file.jpg"]) == 2
    assert "Cannot read no-such-file.jpg" in capsys.readouterr().err

    assert main(["delete", added]) == 0
    assert "deleted" in capsys.readouterr().out
    assert main(["delete", added]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"No image with id {added} is in the catalog."


def test_a_large_jpeg_upload_is_decoded_only_as_large_as_the_query_needs(
    service: SearchService,
) -> None:
    buffer = io.BytesIO()
    photo("astronaut").resize((2400, 1600)).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    decoded = service.decode(data)
    assert (decoded.width, decoded.height) == (2400, 1600)  # the original's size is reported
    width, height = decoded.image.size
    assert min(width, height) >= 288 and max(width, height) >= 512  # what the layers need
    assert width * height <= 2400 * 1600 // 4  # decoded at half scale or less
    result = service.search(Query(images=(data,), top_k=3))
    assert (result.query_width, result.query_height) == (2400, 1600)
    # Geometric verification at a larger side gets the pixels it asks for.
    assert query_fit(VerdictSettings(verify_side=1024)).long == 1024
    assert query_fit(VerdictSettings()).long == 512 and query_fit(VerdictSettings()).short == 288
