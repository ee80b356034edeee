"""CSV and JSON Lines exports (product catalogs): an image-URL column plus optional metadata."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ingest.dates import to_iso
from ingest.http import Document
from ingest.items import FetchError
from ingest.sources.entry import WebEntry, html_text, resolve_url

log = logging.getLogger(__name__)

IMAGE_COLUMNS = ("image_url", "image", "img", "url", "image_link")
TITLE_COLUMNS = ("title", "name")
DESCRIPTION_COLUMNS = ("description",)
LINK_COLUMNS = ("link", "url", "source_uri", "page_url", "product_url")
DATE_COLUMNS = ("published_at", "date", "published", "updated")
CATEGORY_COLUMNS = ("category",)


def find_image_column(columns: Iterable[str], wanted: str | None = None) -> str | None:
    """The image-URL column among columns (case-insensitive): `wanted`, else the first known."""
    by_lower = {c.strip().lower(): c for c in columns if isinstance(c, str)}
    if wanted:
        return by_lower.get(wanted.strip().lower())
    for name in IMAGE_COLUMNS:
        if name in by_lower:
            return by_lower[name]
    return None


def parse_csv(document: Document, options: Mapping[str, Any]) -> Iterator[WebEntry]:
    """Rows of a CSV export with an image URL; FetchError when no image column is found."""
    text = document.text
    delimiter = options.get("delimiter") or _sniff_delimiter(text)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        columns = reader.fieldnames or []
        image_column = _require_column(columns, options, document.url)
        for row in reader:
            entry = row_entry(row, image_column, document.url)
            if entry is not None:
                yield entry
    except csv.Error as exc:  # the pipeline records FetchError as a discover failure
        raise FetchError(f"unreadable CSV at line {reader.line_num}: {exc}") from exc


def parse_jsonl(document: Document, options: Mapping[str, Any]) -> Iterator[WebEntry]:
    """Objects of a JSON Lines export with an image URL; bad lines are skipped with a warning."""
    image_column: str | None = None
    for number, line in enumerate(document.text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            log.warning("%s line %d is not JSON; skipped", document.url, number)
            continue
        if not isinstance(row, dict):
            log.warning("%s line %d is not a JSON object; skipped", document.url, number)
            continue
        if image_column is None:
            image_column = _require_column(row.keys(), options, document.url)
        entry = row_entry(row, image_column, document.url)
        if entry is not None:
            yield entry


def row_entry(row: Mapping[str, Any], image_column: str, base: str) -> WebEntry | None:
    """One row as a WebEntry (None when its image cell is empty or not a URL)."""
    image = resolve_url(_cell(row, image_column), base)
    if image is None:
        return None
    link = resolve_url(_pick(row, LINK_COLUMNS, skip=image_column), base)
    # The whole row is the change marker: an edited row re-ingests, an untouched one never does.
    marker = hashlib.sha256(
        json.dumps(row, sort_keys=True, default=str, ensure_ascii=False).encode()
    ).hexdigest()
    return WebEntry(
        image_url=image,
        source_uri=link or image,
        title=html_text(_pick(row, TITLE_COLUMNS, skip=image_column), 500),
        description=html_text(_pick(row, DESCRIPTION_COLUMNS, skip=image_column)),
        category=html_text(_pick(row, CATEGORY_COLUMNS, skip=image_column), 200),
        published_at=to_iso(_pick(row, DATE_COLUMNS, skip=image_column)),
        marker=marker,
    )


def _require_column(columns: Iterable[str], options: Mapping[str, Any], url: str) -> str:
    wanted = options.get("image_column")
    column = find_image_column(columns, wanted)
    if column is None:
        looked = wanted or ", ".join(IMAGE_COLUMNS)
        raise FetchError(f"no image column in {url} (looked for {looked})", retryable=False)
    return column


def _pick(row: Mapping[str, Any], names: tuple[str, ...], *, skip: str) -> str | None:
    by_lower = {str(k).strip().lower(): k for k in row if k is not None}
    for name in names:
        key = by_lower.get(name)
        if key is not None and key != skip:
            value = _cell(row, key)
            if value:
                return value
    return None


def _cell(row: Mapping[str, Any], key: str) -> str | None:
    value = row.get(key)
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip()
    return text or None


def _sniff_delimiter(text: str) -> str:
    header = text.lstrip("\ufeff").split("\n", 1)[0]
    counts = {d: header.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","
