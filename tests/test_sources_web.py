"""Web sources end to end: RSS, Atom, CSV, JSON Lines and HTML served from a loopback server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from config import Settings, SourceSettings
from embed.encoder import Encoder
from ingest.items import FetchError, SourceItem
from ingest.pipeline import Pipeline
from ingest.sightings import places
from ingest.sources import make_source
from ingest.sources.html import pick_srcset
from ingest.sources.web import WebSource
from ingest.state import StateStore
from store.images import LocalImageStore
from tests.conftest import image_bytes, make_descriptors, make_settings, open_catalog
from tests.feed_server import FeedServer, bomb_png


@dataclass
class Story:
    """One RSS item: where its image sits decides how the feed carries it."""

    slug: str
    title: str
    date: str
    image: str  # path on the server
    carrier: str = "media"  # media | thumbnail | enclosure | img
    category: str = "news"


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as running:
        yield running


def web_settings(tmp_path: Path, **fetch: Any) -> Settings:
    values = {
        "connect_timeout_s": 2.0,
        "read_timeout_s": 0.5,
        "retries": 1,
        "backoff_s": 0.01,
        "per_host": 2,
        "concurrency": 8,
        "allowed_private_hosts": ["127.0.0.1"],  # the test servers listen on loopback
        **fetch,
    }
    return make_settings(tmp_path / "data", fetch=values)


def rss(server: FeedServer, stories: list[Story]) -> str:
    items = []
    for s in stories:
        image = server.url(s.image)
        carrier = {
            "media": f'<media:content url="{image}" medium="image" type="image/jpeg"/>',
            "thumbnail": f'<media:thumbnail url="{image}"/>',
            "enclosure": f'<enclosure url="{image}" type="image/jpeg" length="1"/>',
            "img": "",
        }[s.carrier]
        text = f'&lt;p&gt;About {s.slug}&lt;/p&gt;&lt;img src="{s.image}"&gt;'
        items.append(
            f"<item><title>{s.title}</title><link>{server.url('/news/' + s.slug)}</link>"
            f"<guid>{s.slug}</guid><pubDate>{s.date}</pubDate><category>{s.category}</category>"
            f"<description>{text if s.carrier == 'img' else 'About ' + s.slug}</description>"
            f"{carrier}</item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"><channel>'
        f"<title>Harbour News</title><link>{server.base}/</link>"
        + "".join(items)
        + "</channel></rss>"
    )


GOOD_STORIES = [
    Story("harbour", "Harbour at dawn", "Tue, 02 Jan 2024 10:00:00 GMT", "/img/harbour.jpg"),
    Story(
        "bridge",
        "New bridge opens",
        "Wed, 03 Jan 2024 11:30:00 +0100",
        "/img/bridge.jpg",
        "thumbnail",
        "city",
    ),
    Story("market", "Market day", "Thu, 04 Jan 2024 09:00:00 GMT", "/img/market.png", "enclosure"),
    Story(
        "festival",
        "Festival lights",
        "Fri, 05 Jan 2024 20:00:00 GMT",
        "/img/festival.jpg",
        "img",
        "culture",
    ),
    Story("flaky", "Flaky server recovers", "Sat, 06 Jan 2024 08:00:00 GMT", "/img/flaky.jpg"),
]
BAD_STORIES = [
    Story("gone", "Gone", "Sat, 06 Jan 2024 08:00:00 GMT", "/img/gone.jpg"),
    Story("slow", "Slow", "Sat, 06 Jan 2024 08:00:00 GMT", "/img/slow.jpg"),
    Story("html", "Wrong type", "Sat, 06 Jan 2024 08:00:00 GMT", "/img/page.jpg"),
    Story("cut", "Truncated", "Sat, 06 Jan 2024 08:00:00 GMT", "/img/cut.jpg"),
    Story("bomb", "Bomb", "Sat, 06 Jan 2024 08:00:00 GMT", "/img/bomb.png"),
]


def serve_images(server: FeedServer) -> None:
    for seed, path in enumerate(["/img/harbour.jpg", "/img/bridge.jpg", "/img/festival.jpg"]):
        server.add(path, image_bytes(seed), "image/jpeg", delay_s=0.05)
    server.add("/img/market.png", image_bytes(3, "PNG"), "image/png")
    server.add("/img/flaky.jpg", image_bytes(4), "image/jpeg", fail_first=1)
    server.add("/img/slow.jpg", image_bytes(5), "image/jpeg", delay_s=3)
    server.add("/img/page.jpg", "<html><body>Not found</body></html>", "text/html")
    server.add("/img/cut.jpg", image_bytes(6, size=(400, 300))[:1500], "image/jpeg")
    server.add("/img/bomb.png", bomb_png(), "image/png")


ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Gallery</title><id>urn:gallery</id>
<updated>2024-02-01T00:00:00Z</updated>
<entry><title>Snowy peak</title><id>urn:peak</id><updated>2024-02-01T08:00:00Z</updated>
 <link rel="alternate" href="/gallery/peak"/>
 <link rel="enclosure" type="image/jpeg" href="/img/peak.jpg"/>
 <category term="mountains"/><summary>A peak in winter.</summary></entry>
<entry><title>Quiet lake</title><id>urn:lake</id><updated>2024-02-02T09:15:00+02:00</updated>
 <link rel="alternate" href="/gallery/lake"/>
 <content type="html">&lt;p&gt;Still water&lt;/p&gt;&lt;img src="/img/lake.webp"&gt;</content>
</entry>
<entry><title>No picture here</title><id>urn:text</id><updated>2024-02-03T00:00:00Z</updated>
 <link rel="alternate" href="/gallery/text"/><summary>Words only.</summary></entry>
</feed>"""


def serve_atom(server: FeedServer) -> str:
    server.add("/img/peak.jpg", image_bytes(10), "image/jpeg")
    server.add("/img/lake.webp", image_bytes(11, "WEBP"), "image/webp")
    return server.add("/atom.xml", ATOM, "application/atom+xml")


def serve_tables(server: FeedServer) -> tuple[str, str]:
    server.add("/img/chair.jpg", image_bytes(20), "image/jpeg")
    server.add("/img/lamp.png", image_bytes(21, "PNG"), "image/png")
    server.add("/img/desk.jpg", image_bytes(22), "image/jpeg")
    server.add("/img/rug.jpg", image_bytes(23), "image/jpeg")
    csv_url = server.add(
        "/shop/catalog.csv",
        "sku,name,image_url,link,date,category\n"
        "1,Oak chair,/img/chair.jpg,/shop/chair,2024-03-01,furniture\n"
        '2,"Lamp, brass",../img/lamp.png,/shop/lamp,2024-03-02T10:00:00Z,lighting\n'
        "3,No image,,/shop/none,2024-03-03,misc\n",
        "text/csv",
    )
    jsonl_url = server.add(
        "/shop/catalog.jsonl",
        json.dumps(
            {
                "photo": server.url("/img/desk.jpg"),
                "title": "Desk",
                "published_at": "2024-03-04T00:00:00Z",
                "url": "/shop/desk",
            }
        )
        + "\n"
        "not json at all\n"
        + json.dumps({"photo": "/img/rug.jpg", "title": "Rug", "category": "textiles"})
        + "\n",
        "application/x-ndjson",
    )
    return csv_url, jsonl_url


PAGE = """<!doctype html><html><head><title>Photo desk</title>
<base href="/news/">
<meta property="og:image" content="/img/cover.jpg">
<meta property="og:title" content="Photo desk: the week in pictures">
<meta property="og:description" content="Our best pictures this week.">
</head><body>
<img src="small/ship.jpg" srcset="small/ship.jpg 320w, large/ship.jpg 1280w, medium/ship.jpg 640w"
     alt="Ship leaving port">
<img src="crane.jpg" alt="Crane at work">
<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" alt="inline">
<img src="/pixel.gif" width="1" height="1" alt="">
<a href="story-1.html">Read the story</a>
<a href="https://elsewhere.example/out.html">Elsewhere</a>
<a href="/img/cover.jpg">full size</a>
</body></html>"""

ARTICLE = """<!doctype html><html><head><title>Site | Story</title>
<meta property="og:image" content="/img/story-lead.jpg">
<meta property="article:published_time" content="2024-04-01T06:00:00Z">
</head><body><article><h1>Tugboat rescue at night</h1>
<p>The crew worked until dawn.</p><img src="story-detail.jpg" alt="detail"></article>
</body></html>"""


def serve_page(server: FeedServer) -> str:
    for seed, path in enumerate(
        [
            "/img/cover.jpg",
            "/news/large/ship.jpg",
            "/news/crane.jpg",
            "/img/story-lead.jpg",
            "/news/story-detail.jpg",
        ]
    ):
        server.add(path, image_bytes(30 + seed), "image/jpeg")
    server.add("/news/story-1.html", ARTICLE, "text/html; charset=utf-8")
    return server.add("/news/index.html", PAGE, "text/html; charset=utf-8")


def image_url(key: str) -> str:
    """The image URL an item key starts with (the page's URL follows a space, if any)."""
    return key.split(" ", 1)[0]


def discovered(source: Any) -> dict[str, SourceItem]:
    """Items by image URL (each image appears in one place in these documents)."""
    items = list(source.discover())
    by_image = {image_url(item.key): item for item in items}
    assert len(by_image) == len(items)
    return by_image


def web(name: str, url: str, settings: Settings, kind: str = "feed", **options: Any) -> WebSource:
    spec = SourceSettings.model_validate(
        {"name": name, "kind": kind, "location": url, "options": options}
    )
    source = make_source(spec, settings)
    assert isinstance(source, WebSource)
    return source


# -- discovery ----------------------------------------------------------------------------------
def test_rss_items_give_their_image_title_link_date_and_category(
    server: FeedServer, tmp_path: Path
) -> None:
    url = server.add("/rss.xml", rss(server, GOOD_STORIES[:4]), "application/rss+xml")
    items = discovered(web("news", url, web_settings(tmp_path)))
    assert sorted(items) == sorted(server.url(s.image) for s in GOOD_STORIES[:4])
    bridge = items[server.url("/img/bridge.jpg")].meta
    assert bridge.title == "New bridge opens"
    assert bridge.source_uri == server.url("/news/bridge")
    assert bridge.published_at == "2024-01-03T10:30:00Z"
    assert bridge.category == "city"
    festival = items[server.url("/img/festival.jpg")].meta  # image only inside the description
    assert (festival.title, festival.description) == ("Festival lights", "About festival")


def test_atom_entries_give_enclosure_or_content_images_and_skip_entries_without_one(
    server: FeedServer, tmp_path: Path
) -> None:
    items = discovered(web("gallery", serve_atom(server), web_settings(tmp_path)))
    assert sorted(items) == [server.url("/img/lake.webp"), server.url("/img/peak.jpg")]
    peak = items[server.url("/img/peak.jpg")].meta
    assert (peak.title, peak.category, peak.description) == (
        "Snowy peak",
        "mountains",
        "A peak in winter.",
    )
    assert peak.source_uri == server.url("/gallery/peak")
    assert items[server.url("/img/lake.webp")].meta.published_at == "2024-02-02T07:15:00Z"


def test_csv_and_json_lines_rows_give_images_with_their_metadata_columns(
    server: FeedServer, tmp_path: Path
) -> None:
    csv_url, jsonl_url = serve_tables(server)
    settings = web_settings(tmp_path)
    rows = discovered(web("shop-csv", csv_url, settings))
    assert sorted(rows) == [server.url("/img/chair.jpg"), server.url("/img/lamp.png")]
    lamp = rows[server.url("/img/lamp.png")].meta
    assert (lamp.title, lamp.source_uri, lamp.published_at, lamp.category) == (
        "Lamp, brass",
        server.url("/shop/lamp"),
        "2024-03-02T10:00:00Z",
        "lighting",
    )
    lines = discovered(web("shop-jsonl", jsonl_url, settings, image_column="photo"))
    assert sorted(lines) == [server.url("/img/desk.jpg"), server.url("/img/rug.jpg")]
    desk = lines[server.url("/img/desk.jpg")].meta
    assert (desk.title, desk.source_uri, desk.published_at) == (
        "Desk",
        server.url("/shop/desk"),
        "2024-03-04T00:00:00Z",
    )


def test_a_table_without_an_image_column_is_a_listing_error(
    server: FeedServer, tmp_path: Path
) -> None:
    url = server.add("/plain.csv", "sku,name\n1,chair\n", "text/csv")
    with pytest.raises(FetchError, match="no image column"):
        list(web("plain", url, web_settings(tmp_path), kind="csv").discover())


def test_an_html_page_gives_og_image_and_the_largest_srcset_candidate_with_alt_titles(
    server: FeedServer, tmp_path: Path
) -> None:
    items = discovered(web("desk", serve_page(server), web_settings(tmp_path)))
    assert list(items) == [
        server.url("/img/cover.jpg"),
        server.url("/news/large/ship.jpg"),
        server.url("/news/crane.jpg"),
    ]
    cover = items[server.url("/img/cover.jpg")].meta
    assert (cover.title, cover.description) == (
        "Photo desk: the week in pictures",
        "Our best pictures this week.",
    )
    assert items[server.url("/news/large/ship.jpg")].meta.title == "Ship leaving port"
    assert {i.meta.source_uri for i in items.values()} == {server.url("/news/index.html")}


def test_following_links_reads_same_site_articles_one_level_deep(
    server: FeedServer, tmp_path: Path
) -> None:
    page = serve_page(server)
    items = discovered(web("desk", page, web_settings(tmp_path), follow_links=True))
    article = server.url("/news/story-1.html")
    lead = items[server.url("/img/story-lead.jpg")].meta
    assert (lead.title, lead.source_uri, lead.published_at, lead.description) == (
        "Tugboat rescue at night",
        article,
        "2024-04-01T06:00:00Z",
        "The crew worked until dawn.",
    )
    assert server.url("/news/story-detail.jpg") in items
    assert server.hits("/news/story-1.html") == 1
    assert len(items) == 5


def test_srcset_picks_the_widest_or_densest_candidate_even_with_commas_in_urls() -> None:
    assert pick_srcset("a.jpg 1x, b.jpg 2x") == "b.jpg"
    assert pick_srcset("/c/w_100,h_50/a.jpg 100w, /c/w_800,h_400/a.jpg 800w") == (
        "/c/w_800,h_400/a.jpg"
    )
    assert pick_srcset("") is None


@pytest.mark.parametrize(
    ("path", "content_type", "body", "expected"),
    [
        ("/f1", "text/xml", '<?xml version="1.0"?><rss version="2.0"><channel/></rss>', "rss"),
        ("/f2", "application/xml", "<feed xmlns='http://www.w3.org/2005/Atom'></feed>", "rss"),
        ("/f3", "text/plain", "id,image,title\n1,/a.jpg,A\n", "csv"),
        ("/f4", None, '{"img": "/a.jpg"}\n{"img": "/b.jpg"}\n', "jsonl"),
        ("/f5", "text/html", "<html><body>hi</body></html>", "html"),
        ("/f6", "text/html", '<?xml version="1.0"?><rss version="2.0"></rss>', "rss"),
    ],
)
def test_the_kind_of_an_ad_hoc_url_is_detected_from_its_type_and_content(
    server: FeedServer, path: str, content_type: str | None, body: str, expected: str
) -> None:
    from ingest.http import Downloader
    from ingest.sources.detect import detect_web_kind

    url = server.add(path, body, content_type)
    with Downloader(web_settings(Path("."), retries=0).fetch) as client:
        assert detect_web_kind(client.document(url)) == expected


def test_an_unknown_document_cannot_be_guessed_and_says_so(
    server: FeedServer, tmp_path: Path
) -> None:
    url = server.add("/mystery", "just some words", "text/plain")
    with pytest.raises(FetchError, match="cannot tell what"):
        list(web("mystery", url, web_settings(tmp_path)).discover())


# -- the full pipeline --------------------------------------------------------------------------
@pytest.fixture
def pipeline(tmp_path: Path, encoder: Encoder) -> Iterator[Pipeline]:
    settings = web_settings(tmp_path)
    index = open_catalog(":memory:", settings)
    state = StateStore(tmp_path / "state.sqlite", backoff_s=0)
    descriptors = make_descriptors(settings, encoder)
    yield Pipeline(settings, index, LocalImageStore(tmp_path / "images"), descriptors, state)
    index.close()
    state.close()


def payloads(pipeline: Pipeline) -> dict[str, dict[str, Any]]:
    return {hit.payload["title"]: hit.payload for hit in pipeline.index.scroll()}


def test_a_run_lands_good_images_quarantines_bad_ones_and_a_rerun_adds_nothing(
    server: FeedServer, pipeline: Pipeline
) -> None:
    serve_images(server)
    stories = GOOD_STORIES + BAD_STORIES
    feed = server.add("/rss.xml", rss(server, stories), "application/rss+xml")
    csv_url, jsonl_url = serve_tables(server)
    settings = pipeline.settings
    sources = [
        web("news", feed, settings),
        web("gallery", serve_atom(server), settings),
        web("csv", csv_url, settings),
        web("jsonl", jsonl_url, settings, image_column="photo"),
        web("desk", serve_page(server), settings, follow_links=True),
        web("broken", server.url("/no-such-feed.xml"), settings),
    ]

    report = pipeline.run(sources)

    news = report.sources["news"]
    assert (news.seen, news.new, news.failed) == (10, 5, 5)
    assert report.total().new == 5 + 2 + 2 + 2 + 5
    assert pipeline.index.count() == 16
    found = payloads(pipeline)
    harbour = found["Harbour at dawn"]
    assert harbour["source_uri"] == server.url("/news/harbour")
    assert harbour["published_at"] == "2024-01-02T10:00:00Z"
    assert harbour["category"] == "news"
    assert found["Flaky server recovers"]["source"] == "news"
    assert found["Tugboat rescue at night"]["source_uri"] == server.url("/news/story-1.html")
    reasons = {
        image_url(e.key).rsplit("/", 1)[-1]: e.reason for e in pipeline.state.quarantine_list()
    }
    assert reasons["gone.jpg"] == "HTTP 404"
    assert reasons["slow.jpg"].startswith("timed out (read)")
    assert reasons["page.jpg"] == "not an image (content-type text/html)"
    assert reasons["cut.jpg"].startswith("truncated image")
    assert reasons["bomb.png"].startswith("decompression bomb")
    assert set(reasons) == {"gone.jpg", "slow.jpg", "page.jpg", "cut.jpg", "bomb.png"}
    assert [f.reason for f in report.failures if f.stage == "discover"] == ["HTTP 404"]
    assert report.status == "ok"
    assert "imgsearch" in server.requests[0].user_agent
    assert all(seen.user_agent == server.requests[0].user_agent for seen in server.requests)

    image_hits = server.hits("/img/harbour.jpg")
    again = pipeline.run(sources).total()
    assert (again.new, again.unchanged) == (0, 16)
    assert server.hits("/img/harbour.jpg") == image_hits  # unchanged items are not downloaded
    assert pipeline.index.count() == 16


def test_adding_three_items_to_a_feed_adds_exactly_three(
    server: FeedServer, pipeline: Pipeline
) -> None:
    serve_images(server)
    server.add("/rss.xml", rss(server, GOOD_STORIES), "application/rss+xml")
    source = web("news", server.url("/rss.xml"), pipeline.settings)
    assert pipeline.run([source]).total().new == 5
    extra = [
        Story(f"extra{i}", f"Extra {i}", "Sun, 07 Jan 2024 12:00:00 GMT", f"/img/extra{i}.jpg")
        for i in range(3)
    ]
    for i, story in enumerate(extra):
        server.add(story.image, image_bytes(100 + i), "image/jpeg")
    server.add("/rss.xml", rss(server, GOOD_STORIES + extra), "application/rss+xml")
    report = pipeline.run([source]).total()
    assert (report.new, report.unchanged, report.failed) == (3, 5, 0)
    assert pipeline.index.count() == 8
    assert {"Extra 0", "Extra 1", "Extra 2"} <= set(payloads(pipeline))


def test_the_pipeline_never_opens_more_than_per_host_downloads_at_once(
    server: FeedServer, pipeline: Pipeline
) -> None:
    stories = [
        Story(f"s{i}", f"Story {i}", "Mon, 08 Jan 2024 12:00:00 GMT", f"/img/s{i}.jpg")
        for i in range(12)
    ]
    for i, story in enumerate(stories):
        server.add(story.image, image_bytes(200 + i), "image/jpeg", delay_s=0.1)
    feed = server.add("/rss.xml", rss(server, stories), "application/rss+xml")
    assert pipeline.run([web("news", feed, pipeline.settings)]).total().new == 12
    assert server.max_concurrent == pipeline.settings.fetch.per_host


# -- every place an image was published ---------------------------------------------------------
def test_two_articles_of_one_feed_with_the_same_image_both_keep_their_place(
    server: FeedServer, pipeline: Pipeline
) -> None:
    server.add("/img/harbour.jpg", image_bytes(0), "image/jpeg")
    stories = [
        Story("harbour", "Harbour at dawn", "Tue, 02 Jan 2024 10:00:00 GMT", "/img/harbour.jpg"),
        Story("archive", "From the archive", "Mon, 01 Jan 2024 10:00:00 GMT", "/img/harbour.jpg"),
    ]
    feed = server.add("/rss.xml", rss(server, stories), "application/rss+xml")
    source = web("news", feed, pipeline.settings)
    assert len({item.key for item in source.discover()}) == 2

    report = pipeline.run([source]).total()

    assert (report.new, report.duplicate) == (1, 1)
    [hit] = list(pipeline.index.scroll())
    # The earlier article is the main record, though the feed lists it second.
    assert [(p["title"], p["source_uri"]) for p in places(hit.payload)] == [
        ("From the archive", server.url("/news/archive")),
        ("Harbour at dawn", server.url("/news/harbour")),
    ]
    assert pipeline.run([source]).total().unchanged == 2


SITE = """<!doctype html><html><head><title>Front page</title></head><body>
{links}</body></html>"""
STORY = """<!doctype html><html><head>
<meta property="og:image" content="/img/{image}">
<meta property="article:published_time" content="{date}">
</head><body><article><h1>{title}</h1><p>{title}.</p></article></body></html>"""


def test_a_new_article_reusing_a_known_image_is_recorded_on_the_next_run(
    server: FeedServer, pipeline: Pipeline
) -> None:
    server.add("/img/quay.jpg", image_bytes(40), "image/jpeg")
    story = STORY.format(image="quay.jpg", title="Quay reopens", date="2024-04-01T06:00:00Z")
    server.add("/site/a.html", story, "text/html")
    server.add("/site/index.html", SITE.format(links='<a href="a.html">A</a>'), "text/html")
    source = web("site", server.url("/site/index.html"), pipeline.settings, follow_links=True)
    assert pipeline.run([source]).total().new == 1

    follow_up = STORY.format(image="quay.jpg", title="Quay, a week on", date="2024-04-08T06:00:00Z")
    server.add("/site/b.html", follow_up, "text/html")
    links = '<a href="b.html">B</a><a href="a.html">A</a>'
    server.add("/site/index.html", SITE.format(links=links), "text/html")
    report = pipeline.run([source]).total()

    assert (report.new, report.duplicate, report.unchanged) == (0, 1, 1)
    assert server.hits("/img/quay.jpg") == 2
    [hit] = list(pipeline.index.scroll())
    assert [(p["title"], p["source_uri"]) for p in places(hit.payload)] == [
        ("Quay reopens", server.url("/site/a.html")),
        ("Quay, a week on", server.url("/site/b.html")),
    ]


# -- private networks ---------------------------------------------------------------------------
def test_a_feed_cannot_point_the_worker_at_a_private_service(
    server: FeedServer, tmp_path: Path, encoder: Encoder
) -> None:
    """Only the feed's own host:port is allowed; its items aim at loopback in many spellings."""
    settings = web_settings(tmp_path, allowed_private_hosts=[server.host_port])
    with FeedServer() as private:
        private.add("/secret.jpg", image_bytes(40), "image/jpeg")
        secret_path = f":{private.port}/secret.jpg"
        good = server.add("/img/ok.jpg", image_bytes(41), "image/jpeg")
        to_private = server.add(
            "/img/redirect.jpg", b"", None, status=302, headers={"Location": private.url("/s.jpg")}
        )
        to_loopback = server.add(
            "/img/redirect80.jpg", b"", None, status=302, headers={"Location": "http://localhost/"}
        )
        expected = {
            good: None,
            "http://127.0.0.1" + secret_path: "refused: port",
            "http://localhost" + secret_path: "refused: port",
            "http://2130706433" + secret_path: "refused: port",
            "http://0177.0.0.1" + secret_path: "refused: port",
            "http://127.0.0.1/secret.jpg": "refused: 127.0.0.1 is a loopback address",
            "http://localhost/secret.jpg": "refused: localhost resolves to 127.0.0.1, a loopback",
            "http://2130706433/secret.jpg": "refused: 2130706433 resolves to 127.0.0.1, a loopback",
            "http://0177.0.0.1/secret.jpg": "refused: 0177.0.0.1 resolves to 127.0.0.1, a loopback",
            "http://169.254.169.254/latest/meta-data/": "refused: 169.254.169.254 is a link-local",
            to_private: "refused: port",
            to_loopback: "refused: localhost resolves to 127.0.0.1, a loopback",
        }
        items = "".join(
            f"<item><title>Item {i}</title><guid>g{i}</guid>"
            f'<media:content url="{url}" medium="image" type="image/jpeg"/></item>'
            for i, url in enumerate(expected)
        )
        feed = server.add(
            "/rss.xml",
            '<?xml version="1.0"?><rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/">'
            f"<channel><title>Sneaky</title>{items}</channel></rss>",
            "application/rss+xml",
        )
        index = open_catalog(":memory:", settings)
        state = StateStore(tmp_path / "state.sqlite", backoff_s=0)
        try:
            pipeline = Pipeline(
                settings,
                index,
                LocalImageStore(tmp_path / "images"),
                make_descriptors(settings, encoder),
                state,
            )
            report = pipeline.run([web("sneaky", feed, settings)]).total()
            reasons = {image_url(e.key): e.reason for e in state.quarantine_list()}
            assert (report.new, report.failed) == (1, len(expected) - 1)
            assert index.count() == 1
        finally:
            index.close()
            state.close()
        assert private.requests == []  # the private service never saw a single request
    assert set(reasons) == {url for url, reason in expected.items() if reason}
    for url, reason in reasons.items():
        assert reason.startswith(str(expected[url])), (url, reason)
        assert reason.endswith("(allow it with IMGSEARCH_FETCH__ALLOWED_PRIVATE_HOSTS)")
