"""Image store: originals and thumbnails in a local folder (default) or an S3 bucket."""

from __future__ import annotations

import io
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from PIL import Image

from config import S3Settings, Settings

log = logging.getLogger(__name__)


class StoreError(RuntimeError):
    """The image store could not be read or written; the message says which and why."""


class ImageStore(Protocol):
    """Where originals and thumbnails live, addressed by key."""

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Write bytes under key (overwriting is harmless: keys are content addresses)."""

    def get(self, key: str) -> bytes:
        """Read the bytes under key."""

    def exists(self, key: str) -> bool:
        """True when key is stored."""

    def delete(self, key: str) -> None:
        """Remove key if present."""

    def keys(self, prefix: str = "") -> Iterator[str]:
        """All keys under prefix."""

    def link(self, key: str) -> str | None:
        """A URL a browser can open for key, where the backend can give one."""

    def thumbnail_link(self, key: str) -> str | None:
        """A URL for the browser to load a thumbnail from directly, or None: serve the bytes."""

    def describe(self) -> str:
        """Where the store lives, for logs and messages."""

    def sweep_temp(self, older_than_s: float = 600) -> int:
        """Remove what a killed writer left half-written; returns how many."""


class LocalImageStore:
    """A folder on disk; writes are atomic (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise StoreError(f"refusing key outside the store: {key}")
        return path

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Write bytes atomically so a crash never leaves half a file."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        """Read bytes; a missing key is a StoreError."""
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise StoreError(f"{key} is not in the image store at {self.root}") from exc

    def exists(self, key: str) -> bool:
        """True when the file exists."""
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        """Remove the file if present."""
        self._path(key).unlink(missing_ok=True)

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Every stored key under prefix (temp files excluded)."""
        if not self.root.exists():
            return
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and not path.name.startswith(".tmp-"):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield key

    def sweep_temp(self, older_than_s: float = 600) -> int:
        """Remove temp files left by a killed writer; returns how many."""
        if not self.root.exists():
            return 0
        cutoff = time.time() - older_than_s
        removed = 0
        for path in self.root.rglob(".tmp-*"):
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def link(self, key: str) -> str | None:
        """Local files have no URL a remote browser could open."""
        return None

    def thumbnail_link(self, key: str) -> str | None:
        """The app serves local thumbnails itself."""
        return None

    def describe(self) -> str:
        """The folder."""
        return str(self.root)


class S3ImageStore:
    """An S3 (or S3-compatible) bucket under a prefix; objects stay private."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        sse: str = "AES256",
        sse_kms_key_id: str = "",
        link_client: Any = None,
        direct_thumbnails: bool = False,
    ) -> None:
        self.client = client
        # Signs links for the endpoint browsers reach (signing is local: no request is made).
        self.link_client = link_client or client
        self.direct_thumbnails = direct_thumbnails
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.encryption: dict[str, str] = {}  # put_object's server-side encryption arguments
        if sse != "none":
            self.encryption["ServerSideEncryption"] = sse
            if sse == "aws:kms" and sse_kms_key_id:
                self.encryption["SSEKMSKeyId"] = sse_kms_key_id

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, action: str, key: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise StoreError(f"{key} is not in s3://{self.bucket}/{self.prefix}") from exc
            raise StoreError(f"S3 {action} of {key} failed ({code}): {exc}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"S3 {action} of {key} failed: {exc}") from exc

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Upload the bytes (encrypted at rest unless the settings turn SSE off)."""
        self._call(
            "put",
            key,
            self.client.put_object,
            Key=self._key(key),
            Body=data,
            ContentType=content_type,
            **self.encryption,
        )

    def get(self, key: str) -> bytes:
        """Download the bytes."""
        response = self._call("get", key, self.client.get_object, Key=self._key(key))
        body: bytes = response["Body"].read()
        return body

    def exists(self, key: str) -> bool:
        """True when the object exists."""
        try:
            self._call("head", key, self.client.head_object, Key=self._key(key))
        except StoreError as exc:
            if "is not in" in str(exc):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        """Delete the object (S3 deletes are idempotent)."""
        self._call("delete", key, self.client.delete_object, Key=self._key(key))

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Every key under prefix, paginated."""
        paginator = self.client.get_paginator("list_objects_v2")
        full = self._key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for item in page.get("Contents", []):
                key: str = item["Key"]
                yield key[len(self.prefix) + 1 :] if self.prefix else key

    def link(self, key: str) -> str | None:
        """A presigned GET URL valid for one hour (the bucket itself is never public)."""
        url: str = self.link_client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=3600
        )
        return url

    def thumbnail_link(self, key: str) -> str | None:
        """A presigned link, so the browser loads the card's thumbnail from S3 itself (unless
        IMGSEARCH_S3__DIRECT_THUMBNAILS is false)."""
        return self.link(key) if self.direct_thumbnails else None

    def describe(self) -> str:
        """The bucket and prefix."""
        return f"s3://{self.bucket}/{self.prefix}"

    def sweep_temp(self, older_than_s: float = 600) -> int:
        """Nothing to sweep: an S3 PUT is whole or absent."""
        return 0


def make_s3_client(s3: S3Settings) -> Any:
    """A boto3 S3 client honouring the endpoint/region settings and the standard AWS chain."""
    import boto3
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": s3.addressing_style},
        signature_version="s3v4",  # presigned links too: SigV2 is refused by newer regions
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=s3.endpoint_url or None,
        region_name=s3.region or None,
        config=config,
    )


def parse_s3_url(url: str) -> tuple[str, str]:
    """Split `s3://bucket/prefix` into (bucket, prefix)."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3://bucket/prefix URL: {url}")
    return parsed.netloc, parsed.path.strip("/")


def make_image_store(settings: Settings, s3_client: Any = None) -> ImageStore:
    """The configured image store: S3 for `s3://` URLs, else a local folder."""
    url = settings.storage.url
    if url.startswith("s3://"):
        bucket, prefix = parse_s3_url(url)
        s3 = settings.s3
        browser = s3.browser_endpoint_url
        return S3ImageStore(
            s3_client or make_s3_client(s3),
            bucket,
            prefix,
            sse=s3.sse,
            sse_kms_key_id=s3.sse_kms_key_id,
            link_client=make_s3_client(s3.model_copy(update={"endpoint_url": browser}))
            if browser
            else None,
            direct_thumbnails=s3.direct_thumbnails,
        )
    root = Path(url.removeprefix("file://")) if url else settings.images_dir
    return LocalImageStore(root.expanduser())


def make_thumbnail(image: Image.Image, max_side: int) -> bytes:
    """JPEG thumbnail of an RGB image, longest side at most max_side pixels."""
    thumb = image.copy()
    thumb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=85, optimize=True)
    return buffer.getvalue()
