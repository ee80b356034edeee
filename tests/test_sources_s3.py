"""The S3 prefix source against a real S3 HTTP endpoint on loopback (moto's server mode)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config import S3Settings, Settings, SourceSettings
from embed.encoder import Encoder
from ingest.items import FetchError
from ingest.pipeline import Pipeline
from ingest.sources import make_source
from ingest.sources.s3 import S3Source
from ingest.state import StateStore
from store.images import LocalImageStore, make_s3_client
from tests.conftest import image_bytes, make_descriptors, make_settings, open_catalog


@pytest.fixture
def client(s3_endpoint: str) -> Any:
    return make_s3_client(
        S3Settings(endpoint_url=s3_endpoint, region="us-east-1", addressing_style="path")
    )


def count_calls(client: Any, operation: str) -> list[str]:
    """Record each call of an S3 operation through botocore's own event hooks."""
    calls: list[str] = []
    client.meta.events.register(
        f"before-call.s3.{operation}", lambda params, **_: calls.append(str(params["url_path"]))
    )
    return calls


def s3_source(client: Any, bucket: str, settings: Settings, **options: Any) -> S3Source:
    spec = SourceSettings(
        name="bucket", kind="auto", location=f"s3://{bucket}/photos", options=options
    )
    source = make_source(spec, settings, s3_client=client)
    assert isinstance(source, S3Source)
    return source


def fill(client: Any, bucket: str) -> None:
    """Seven images under photos/ (three with sidecars), a folder marker and an outsider."""
    put = client.put_object
    for i, name in enumerate(
        ["a.jpg", "b.png", "c.png", "d.jpg", "e.jpg", "sub/f.jpg", "sub/g.webp"]
    ):
        fmt = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[name.rsplit(".", 1)[1]]
        put(Bucket=bucket, Key=f"photos/{name}", Body=image_bytes(i, fmt))
    put(Bucket=bucket, Key="photos/sub/", Body=b"")
    put(Bucket=bucket, Key="photos/.hidden.jpg", Body=image_bytes(50))
    put(Bucket=bucket, Key="elsewhere/x.jpg", Body=image_bytes(51))
    # a.json sorts after a.jpg, c.json before c.png, b.png.json right after b.png.
    sidecars = {
        "photos/a.json": {
            "title": "Harbour",
            "published_at": "Tue, 02 Jan 2024 10:00:00 GMT",
            "source_uri": "https://news.example/harbour",
            "category": "sea",
        },
        "photos/b.png.json": {"title": "Bridge", "description": "Opening day"},
        "photos/c.json": {"title": "Crane"},
    }
    for key, data in sidecars.items():
        put(Bucket=bucket, Key=key, Body=json.dumps(data).encode())


def test_listing_pages_through_the_prefix_and_reads_sidecars(
    client: Any, s3_bucket: str, settings: Settings
) -> None:
    fill(client, s3_bucket)
    lists = count_calls(client, "ListObjectsV2")
    items = {
        item.key: item for item in s3_source(client, s3_bucket, settings, max_keys=2).discover()
    }
    assert sorted(items) == [
        "photos/a.jpg",
        "photos/b.png",
        "photos/c.png",
        "photos/d.jpg",
        "photos/e.jpg",
        "photos/sub/f.jpg",
        "photos/sub/g.webp",
    ]
    assert len(lists) >= 6  # 11 keys under the prefix, two per page
    a = items["photos/a.jpg"].meta
    assert (a.title, a.source_uri, a.published_at, a.category) == (
        "Harbour",
        "https://news.example/harbour",
        "2024-01-02T10:00:00Z",
        "sea",
    )
    b = items["photos/b.png"].meta
    assert (b.title, b.description, b.source_uri) == (
        "Bridge",
        "Opening day",
        f"s3://{s3_bucket}/photos/b.png",
    )
    assert items["photos/c.png"].meta.title == "Crane"
    assert items["photos/d.jpg"].meta.title is None
    head = client.head_object(Bucket=s3_bucket, Key="photos/d.jpg")
    assert items["photos/d.jpg"].version == f"{head['ETag'].strip(chr(34))}:{head['ContentLength']}"
    assert items["photos/e.jpg"].fetch() == image_bytes(4)


def test_a_missing_bucket_is_a_listing_error(client: Any, settings: Settings) -> None:
    with pytest.raises(FetchError, match="cannot list") as caught:
        list(s3_source(client, "no-such-bucket-here", settings).discover())
    assert not caught.value.retryable


def test_an_object_over_the_size_cap_is_refused_without_downloading(
    client: Any, s3_bucket: str, tmp_path: Path
) -> None:
    client.put_object(Bucket=s3_bucket, Key="photos/big.jpg", Body=image_bytes(1, size=(400, 300)))
    settings = make_settings(tmp_path / "data", fetch={"max_bytes": 1024})
    gets = count_calls(client, "GetObject")
    (item,) = s3_source(client, s3_bucket, settings).discover()
    with pytest.raises(FetchError, match="larger than 1024 bytes"):
        item.fetch()
    assert gets == []


@pytest.fixture
def pipeline(tmp_path: Path, encoder: Encoder, settings: Settings) -> Iterator[Pipeline]:
    index = open_catalog(":memory:", settings)
    state = StateStore(tmp_path / "state.sqlite", backoff_s=0)
    descriptors = make_descriptors(settings, encoder)
    yield Pipeline(settings, index, LocalImageStore(tmp_path / "images"), descriptors, state)
    index.close()
    state.close()


def test_a_rerun_is_unchanged_and_a_changed_etag_is_fetched_again(
    client: Any, s3_bucket: str, pipeline: Pipeline
) -> None:
    fill(client, s3_bucket)
    source = s3_source(client, s3_bucket, pipeline.settings, max_keys=3)
    first = pipeline.run([source]).total()
    assert (first.seen, first.new, first.failed) == (7, 7, 0)
    titles = {hit.payload.get("title") for hit in pipeline.index.scroll()}
    assert {"Harbour", "Bridge", "Crane"} <= titles

    gets = count_calls(client, "GetObject")
    second = pipeline.run([source]).total()
    assert (second.new, second.unchanged) == (0, 7)
    # Only the three sidecars are read; no image is downloaded again.
    assert sorted(path.rsplit("/", 1)[-1] for path in gets) == ["a.json", "b.png.json", "c.json"]

    client.put_object(Bucket=s3_bucket, Key="photos/d.jpg", Body=image_bytes(99))
    gets.clear()
    third = pipeline.run([source]).total()
    assert (third.new, third.unchanged) == (1, 6)
    assert any(path.endswith("/photos/d.jpg") for path in gets)
    assert pipeline.index.count() == 8  # the old picture's point stays; the new one is added
