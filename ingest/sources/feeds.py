"""RSS and Atom feeds (via feedparser): one image per entry with its title, link, date, tags."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import feedparser
from bs4 import BeautifulSoup

from ingest.dates import to_iso
from ingest.http import Document
from ingest.items import FetchError
from ingest.sources.entry import WebEntry, html_text, resolve_url, tracking_pixel

log = logging.getLogger(__name__)


def parse_feed(document: Document) -> Iterator[WebEntry]:
    """Entries of an RSS/Atom document that carry an image; FetchError if it is no feed at all."""
    parsed = feedparser.parse(
        document.content,
        response_headers={
            "content-location": document.url,  # base for feedparser's relative-URI resolution
            "content-type": document.content_type or "application/xml",
        },
    )
    if not parsed.entries and not parsed.get("version"):
        problem = parsed.get("bozo_exception")
        detail = f": {problem}" if problem else ""
        raise FetchError(f"not a readable RSS/Atom feed{detail}", retryable=True)
    if parsed.get("bozo"):
        log.info(
            "feed %s is not well-formed (%s); using what parsed",
            document.url,
            parsed.get("bozo_exception"),
        )
    for entry in parsed.entries:
        found = _entry(entry, document.url)
        if found is not None:
            yield found


def _entry(entry: Any, base: str) -> WebEntry | None:
    link = resolve_url(entry.get("link"), base)
    image = entry_image(entry, link or base)
    if image is None:
        return None
    # dict.get: FeedParserDict.get maps a missing "updated" to "published" with a warning.
    published = dict.get(entry, "published_parsed") or dict.get(entry, "updated_parsed")
    tags = [t.get("term") for t in entry.get("tags", []) if t.get("term")]
    # guid plus the dates the entry itself reports: a republished or edited entry re-ingests.
    marker = "|".join(str(dict.get(entry, k) or "") for k in ("id", "updated", "published"))
    return WebEntry(
        image_url=image,
        source_uri=link or image,
        title=html_text(entry.get("title"), 500),
        description=html_text(entry.get("summary") or _content(entry)),
        category=tags[0] if tags else None,
        published_at=to_iso(published),
        marker=marker,
    )


def entry_image(entry: Any, base: str) -> str | None:
    """media:content, media:thumbnail, an image enclosure, then the first <img> in the text."""
    for media in entry.get("media_content", []):
        medium = (media.get("medium") or "").lower()
        kind = (media.get("type") or "").lower()
        if medium == "image" or kind.startswith("image/") or (not medium and not kind):
            url = resolve_url(media.get("url"), base)
            if url:
                return url
    for thumb in entry.get("media_thumbnail", []):
        url = resolve_url(thumb.get("url"), base)
        if url:
            return url
    for enclosure in entry.get("enclosures", []):
        if (enclosure.get("type") or "").lower().startswith("image/"):
            url = resolve_url(enclosure.get("href") or enclosure.get("url"), base)
            if url:
                return url
    for markup in (_content(entry), entry.get("summary")):
        if markup and "<img" in markup:
            for img in BeautifulSoup(markup, "html.parser").find_all("img"):
                url = resolve_url(str(img.get("src") or ""), base)
                if url and not tracking_pixel(img.get("width"), img.get("height")):
                    return url
    return None


def _content(entry: Any) -> str | None:
    content = entry.get("content") or []
    return str(content[0].get("value") or "") or None if content else None
