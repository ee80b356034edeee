"""The issue's done criterion, through the real CLI in child processes, on real photographs.

A bank of eight pictures, five the catalog has never seen and three it holds as edits, gives
three retroactive alerts when added; a feed on 127.0.0.1 republishing four of the bank's
pictures edited (resized, mirrored, a caption bar) among six other pictures gives exactly four
more, each with the story's link; a second run gives none; a webhook whose first delivery
answers 500 acknowledges all seven exactly once; `imgsearch check` of another edit of a banked
picture names the bank, the note and the link. The banked pictures are photographs the
verification thresholds were not tuned on (README, "Where the verification defaults come from").
"""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from embed.decode import sha256_of
from search import edits
from store.keys import point_id
from tests.conftest import photo
from tests.feed_server import FeedServer
from tests.subprocesses import IMGSEARCH, child_env, state_count, state_query
from tests.webhook_server import WebhookServer

NOTE = "Doctored: the desk's fact check has the original"
LINK = "https://factcheck.example/doctored"
UNSEEN = ("camera", "moon", "clock", "chelsea", "hubble_deep_field")
HELD = {"text": "recompress", "cell": "border", "gravel": "crop"}  # the catalog's edits of them
REPUBLISHED = {
    "camera": "resize",
    "moon": "mirror",
    "clock": "caption",
    "chelsea": "resize+caption",
}
OTHERS = ("astronaut", "coffee", "rocket", "coins", "retina", "immunohistochemistry")


@pytest.fixture(scope="module")
def webhook() -> Iterator[WebhookServer]:
    """The desk's webhook: its first delivery answers 500, the others 200."""
    with WebhookServer(lambda n: 500 if n == 0 else 200) as server:
        yield server


def png(name: str) -> bytes:
    buffer = io.BytesIO()
    photo(name).save(buffer, format="PNG")
    return buffer.getvalue()


def feed(server: FeedServer) -> str:
    """An RSS feed: the four republished banked pictures, edited, among six others."""
    items = []
    stories = [(n, e) for n, e in REPUBLISHED.items()] + [(n, "recompress") for n in OTHERS]
    for i, (name, edit) in enumerate(stories):
        image = server.add(f"/img/{name}.jpg", edits.apply(edit, photo(name), i), "image/jpeg")
        items.append(
            f"<item><title>Story {name}</title><link>{server.url('/news/' + name)}</link>"
            f"<guid>{name}</guid><pubDate>Tue, 0{i % 9 + 1} Jan 2030 10:00:00 GMT</pubDate>"
            f'<enclosure url="{image}" type="image/jpeg" length="1"/></item>'
        )
    body = (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>Daily</title><link>{server.base}/</link>{''.join(items)}</channel></rss>"
    )
    return server.add("/feed.xml", body, "application/rss+xml")


def run(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([IMGSEARCH, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def alerts(env: dict[str, str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run(env, "alerts", "--json").splitlines()]


def test_banks_alert_retroactively_on_ingestion_once_each_and_checks_name_them(
    tmp_path: Path, webhook: WebhookServer
) -> None:
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    held_ids = {}
    for name, edit in HELD.items():
        edited = edits.apply(edit, photo(name), 0)
        (catalog / f"{name}.jpg").write_bytes(edited)
        held_ids[point_id(sha256_of(edited))] = name
    (catalog / "page.jpg").write_bytes(edits.apply("recompress", photo("page"), 0))
    bank = tmp_path / "bank"
    bank.mkdir()
    for name in (*UNSEEN, *HELD):
        (bank / f"{name}.png").write_bytes(png(name))

    data = tmp_path / "data"
    with FeedServer() as server:
        feed_url = feed(server)
        env = child_env(
            data,
            VERDICT__SSCD_WEIGHTS="off",
            TEXT__ENABLED="false",
            ALERTS__WEBHOOKS=json.dumps([webhook.url]),
            ALERTS__BACKOFF_S="0.2",
            FETCH__ALLOWED_PRIVATE_HOSTS=json.dumps([server.host_port, webhook.host_port]),
        )
        run(env, "ingest", str(catalog), "--quiet")

        added = run(
            env,
            "bank",
            "add",
            "debunked",
            *sorted(map(str, bank.iterdir())),
            "--note",
            NOTE,
            "--link",
            LINK,
        )
        assert added.count("added to bank debunked") == 8, added
        retro = state_query(data, "SELECT image, found, bank FROM alerts")
        assert sorted(image for image, _, _ in retro) == sorted(held_ids)
        assert {(found, bank) for _, found, bank in retro} == {("retroactive", "debunked")}

        first = run(env, "ingest", feed_url, "--quiet")
        assert "new 10" in first, first
        found = state_query(
            data, "SELECT source_uri, title, published_at FROM alerts WHERE found = 'ingest'"
        )
        assert sorted(uri for uri, _, _ in found) == sorted(
            server.url(f"/news/{name}") for name in REPUBLISHED
        )
        assert all(title.startswith("Story ") for _, title, _ in found)
        assert all(date.startswith("2030-01-0") for _, _, date in found)

        second = run(env, "ingest", feed_url, "--quiet")
        assert "new 0" in second and "unchanged 10" in second, second
        assert state_count(data, "alerts") == 7

    listed = alerts(env)
    assert len(listed) == 7
    assert {(a["bank"], a["note"], a["link"]) for a in listed} == {("debunked", NOTE, LINK)}
    acknowledged = webhook.acknowledged()
    assert sorted(acknowledged) == sorted(a["key"] for a in listed)
    assert set(acknowledged.values()) == {1}
    assert webhook.posts[0].status == 500  # the first delivery failed and was retried
    assert len(webhook.posts) == 8
    slack = webhook.posts[-1].body
    assert slack["text"].startswith(f"Known fake: in bank debunked, {NOTE}, {LINK}")
    assert slack["alert"]["key"] == webhook.posts[-1].key
    assert all(d["delivered_at"] for a in listed for d in a["deliveries"])

    query = tmp_path / "hubble-shared.jpg"
    query.write_bytes(edits.apply("resize+caption+recompress", photo("hubble_deep_field"), 7))
    checked = run(env, "check", str(query))
    assert checked.splitlines()[0].startswith(
        f"{query}: Known fake: in bank debunked, {NOTE}, {LINK} (edited copy: "
    )
    assert "Not in the catalog" in checked.splitlines()[1]
