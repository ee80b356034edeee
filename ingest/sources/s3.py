"""S3 prefix source: objects under `s3://bucket/prefix`, with optional NAME.json sidecars.

The listing is paginated and consumed lazily. A sidecar may sort before its image (`a.json` <
`a.png`) or after it (`a.jpg` < `a.json`), possibly on a later page, so an image is held back
only until the listing has passed the names its sidecar could have. Each sidecar found costs one
small GET per run: metadata must be known at discovery time.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, ClassVar, Self

from config import Settings, SourceKind, SourceSettings
from ingest.dates import to_iso
from ingest.items import FetchError, ItemMeta, Source, SourceConfigError, SourceItem
from ingest.sources.folder import SIDECAR_FIELDS
from store.images import make_s3_client, parse_s3_url

log = logging.getLogger(__name__)
MAX_SIDECAR_BYTES = 1024 * 1024


@dataclass(frozen=True)
class _Listed:
    key: str
    etag: str
    size: int


class S3Source(Source):
    """Objects under an S3 prefix; an item changes when its ETag or size does."""

    kinds: ClassVar[tuple[SourceKind, ...]] = ("s3",)

    def __init__(
        self,
        name: str,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        max_bytes: int = 25 * 1024 * 1024,
        page_size: int | None = None,
    ) -> None:
        self.name = name
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.lstrip("/")
        self.max_bytes = max_bytes
        self.page_size = page_size

    @classmethod
    def from_spec(cls, spec: SourceSettings, settings: Settings, *, s3_client: Any = None) -> Self:
        """The `s3://bucket/prefix` of the declaration; option max_keys (or page_size)."""
        try:
            bucket, prefix = parse_s3_url(spec.location)
        except ValueError as exc:
            raise SourceConfigError(f"source {spec.name!r}: {exc}") from exc
        page_size = spec.options.get("max_keys") or spec.options.get("page_size")
        try:
            page_size = int(page_size) if page_size else None
        except (TypeError, ValueError) as exc:
            raise SourceConfigError(f"source {spec.name!r}: max_keys must be a number") from exc
        return cls(
            spec.name,
            s3_client or make_s3_client(settings.s3),
            bucket,
            prefix,
            max_bytes=settings.fetch.max_bytes,
            page_size=page_size,
        )

    def discover(self) -> Iterator[SourceItem]:
        """Yield every image object under the prefix; an unlistable bucket is a FetchError."""
        pending: deque[_Listed] = deque()
        sidecars: dict[str, str] = {}  # sidecar key -> its "stem" (what an image key starts with)
        for obj in self._list():
            pending.extend(self._accept(obj, sidecars))
            while pending and _sidecar_names(pending[0].key)[-1] < obj.key:
                yield self._item(pending.popleft(), sidecars)
            # Forget sidecars no later key can belong to (keys sharing their stem are contiguous).
            for key, stem in list(sidecars.items()):
                if not obj.key.startswith(stem) and stem < obj.key and not _needed(pending, key):
                    del sidecars[key]
        while pending:
            yield self._item(pending.popleft(), sidecars)

    def _accept(self, obj: _Listed, sidecars: dict[str, str]) -> list[_Listed]:
        relative = obj.key[len(self.prefix) :].lstrip("/") if self.prefix else obj.key
        if obj.key.endswith("/") or not relative:  # "directory" placeholder objects
            return []
        if any(part.startswith(".") for part in PurePosixPath(relative).parts):
            return []
        if obj.key.lower().endswith(".json"):
            sidecars[obj.key] = obj.key[: -len(".json")]
            return []
        return [obj]

    def _list(self) -> Iterator[_Listed]:
        from botocore.exceptions import BotoCoreError, ClientError

        config: dict[str, Any] = {"PageSize": self.page_size} if self.page_size else {}
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(
                Bucket=self.bucket, Prefix=self.prefix, PaginationConfig=config
            ):
                for entry in page.get("Contents", []):
                    yield _Listed(
                        str(entry["Key"]),
                        str(entry.get("ETag", "")).strip('"'),
                        int(entry.get("Size", 0)),
                    )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            retryable = code not in ("NoSuchBucket", "AccessDenied", "InvalidBucketName")
            raise FetchError(
                f"cannot list s3://{self.bucket}/{self.prefix} ({code or exc})", retryable=retryable
            ) from exc
        except BotoCoreError as exc:
            raise FetchError(f"cannot list s3://{self.bucket}/{self.prefix}: {exc}") from exc

    def _item(self, obj: _Listed, sidecars: dict[str, str]) -> SourceItem:
        meta = self._sidecar(obj.key, sidecars)
        return SourceItem(
            source=self.name,
            key=obj.key,
            version=f"{obj.etag}:{obj.size}",
            meta=ItemMeta(
                source_uri=meta.get("source_uri") or f"s3://{self.bucket}/{obj.key}",
                title=meta.get("title"),
                description=meta.get("description"),
                category=meta.get("category"),
                published_at=to_iso(meta.get("published_at")),
            ),
            fetch=lambda: self.get(obj),
        )

    def _sidecar(self, key: str, sidecars: dict[str, str]) -> dict[str, str]:
        for candidate in _sidecar_names(key):
            if candidate in sidecars:
                try:
                    data = json.loads(self._read(candidate, MAX_SIDECAR_BYTES))
                except (FetchError, ValueError) as exc:
                    log.warning(
                        "ignoring unreadable sidecar s3://%s/%s: %s", self.bucket, candidate, exc
                    )
                    return {}
                if not isinstance(data, dict):
                    log.warning(
                        "ignoring sidecar s3://%s/%s: not a JSON object", self.bucket, candidate
                    )
                    return {}
                return {k: str(data[k]) for k in SIDECAR_FIELDS if data.get(k) not in (None, "")}
        return {}

    def get(self, obj: _Listed) -> bytes:
        """The object's bytes, refused past max_bytes (the listing's size is checked first)."""
        if obj.size > self.max_bytes:
            raise FetchError(f"larger than {self.max_bytes} bytes", retryable=False)
        return self._read(obj.key, self.max_bytes)

    def _read(self, key: str, cap: int) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            body = response["Body"]
            try:
                data: bytes = body.read(cap + 1)  # one byte more tells "too large" from "exact"
            finally:
                body.close()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise FetchError("not found in S3 (deleted since listing)") from exc
            raise FetchError(f"S3 get failed ({code or exc})") from exc
        except BotoCoreError as exc:
            raise FetchError(f"S3 get failed: {type(exc).__name__}") from exc
        if len(data) > cap:
            raise FetchError(f"larger than {cap} bytes", retryable=False)
        return data


def _sidecar_names(key: str) -> tuple[str, str]:
    """The sidecar keys an image could have, the larger last: `NAME.json`, `NAME.ext.json`."""
    path = PurePosixPath(key)
    stem_json = str(path.with_suffix(".json")) if path.suffix else key + ".json"
    names = sorted({stem_json, key + ".json"})
    return names[0], names[-1]


def _needed(pending: deque[_Listed], sidecar: str) -> bool:
    return any(sidecar in _sidecar_names(obj.key) for obj in pending)
