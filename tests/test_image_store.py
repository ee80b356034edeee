"""Image stores: a local folder and S3 on a real HTTP endpoint on 127.0.0.1, same behaviour."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from config import Settings
from store.images import (
    ImageStore,
    LocalImageStore,
    S3ImageStore,
    StoreError,
    make_image_store,
    make_s3_client,
)
from tests.conftest import make_settings


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ImageStore:
    if request.param == "local":
        return make_image_store(make_settings(tmp_path / "data"))
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    settings = make_settings(
        tmp_path / "data",
        storage={"url": f"s3://{bucket}/catalog"},
        s3={"endpoint_url": endpoint, "region": "us-east-1", "addressing_style": "path"},
    )
    return make_image_store(settings)


def test_put_get_exists_keys_delete(store: ImageStore) -> None:
    store.put("originals/ab/cd/x.jpg", b"one", "image/jpeg")
    store.put("thumbnails/ab/cd/x.jpg", b"two", "image/jpeg")
    store.put("originals/ab/cd/x.jpg", b"one", "image/jpeg")  # rewriting is harmless
    assert store.get("originals/ab/cd/x.jpg") == b"one"
    assert store.exists("thumbnails/ab/cd/x.jpg")
    assert not store.exists("originals/zz/zz/none.jpg")
    assert sorted(store.keys()) == ["originals/ab/cd/x.jpg", "thumbnails/ab/cd/x.jpg"]
    assert list(store.keys("thumbnails/")) == ["thumbnails/ab/cd/x.jpg"]
    store.delete("originals/ab/cd/x.jpg")
    store.delete("originals/ab/cd/x.jpg")  # deleting twice is harmless
    assert not store.exists("originals/ab/cd/x.jpg")


def test_missing_key_is_a_store_error(store: ImageStore) -> None:
    with pytest.raises(StoreError, match="not in"):
        store.get("originals/00/00/missing.jpg")


def test_s3_objects_live_under_the_prefix_and_links_are_presigned(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    settings: Settings = make_settings(
        tmp_path / "data",
        storage={"url": f"s3://{s3_bucket}/catalog"},
        s3={"endpoint_url": s3_endpoint, "region": "us-east-1", "addressing_style": "path"},
    )
    store = make_image_store(settings)
    assert isinstance(store, S3ImageStore)
    store.put("originals/a.jpg", b"bytes", "image/jpeg")
    client = make_s3_client(settings.s3)
    listed = client.list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert [o["Key"] for o in listed] == ["catalog/originals/a.jpg"]
    link = store.link("originals/a.jpg")
    assert link is not None and "Signature" in link
    assert httpx.get(link or "").content == b"bytes"


def test_local_store_sweeps_stale_temp_files(tmp_path: Path) -> None:
    import os

    store = LocalImageStore(tmp_path / "images")
    store.put("originals/a.jpg", b"x", "image/jpeg")
    stale = tmp_path / "images" / "originals" / ".tmp-killed"
    fresh = tmp_path / "images" / "originals" / ".tmp-writing"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    os.utime(stale, (0, 0))
    assert store.sweep_temp(older_than_s=600) == 1
    assert not stale.exists() and fresh.exists()
    assert list(store.keys()) == ["originals/a.jpg"]


def test_local_store_refuses_keys_outside_its_folder(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path / "images")
    with pytest.raises(StoreError, match="outside"):
        store.put("../escape.jpg", b"x", "image/jpeg")


@pytest.mark.parametrize(("sse", "stored"), [("AES256", "AES256"), ("none", None)])
def test_s3_server_side_encryption_follows_the_setting(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path, sse: str, stored: str | None
) -> None:
    # MinIO without a KMS refuses any SSE header, so "none" must send none at all.
    settings: Settings = make_settings(
        tmp_path / "data",
        storage={"url": f"s3://{s3_bucket}/enc"},
        s3={
            "endpoint_url": s3_endpoint,
            "region": "us-east-1",
            "addressing_style": "path",
            "sse": sse,
        },
    )
    make_image_store(settings).put(f"originals/{sse}.jpg", b"bytes", "image/jpeg")
    head = make_s3_client(settings.s3).head_object(Bucket=s3_bucket, Key=f"enc/originals/{sse}.jpg")
    assert head.get("ServerSideEncryption") == stored


def test_thumbnail_links_are_presigned_for_the_browser_endpoint_unless_turned_off(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    def store_with(**s3: object) -> ImageStore:
        return make_image_store(
            make_settings(
                tmp_path / "data",
                storage={"url": f"s3://{s3_bucket}/catalog"},
                s3={"endpoint_url": s3_endpoint, "region": "us-east-1", **s3},
            )
        )

    browser = s3_endpoint.replace("127.0.0.1", "localhost")
    direct = store_with(addressing_style="path", browser_endpoint_url=browser)
    direct.put("thumbnails/t.jpg", b"thumb", "image/jpeg")
    link = direct.thumbnail_link("thumbnails/t.jpg")
    assert link is not None and link.startswith(f"{browser}/{s3_bucket}/catalog/thumbnails/t.jpg?")
    assert "X-Amz-Signature=" in link and "X-Amz-Expires=3600" in link  # SigV4, one hour
    assert httpx.get(link).content == b"thumb"
    assert store_with(addressing_style="path", direct_thumbnails=False).thumbnail_link("t") is None
    assert make_image_store(make_settings(tmp_path / "local")).thumbnail_link("t") is None
