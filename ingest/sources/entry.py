"""What a web parser hands the web source: one image URL with its metadata and change marker."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from bs4 import BeautifulSoup

MAX_TEXT = 2000  # descriptions longer than this are cut: the payload is for display, not archive


@dataclass(frozen=True)
class WebEntry:
    """An image found in a feed, table or page, with what the document says about it."""

    image_url: str
    source_uri: str  # the article/page/product the image belongs to
    title: str | None = None
    description: str | None = None
    category: str | None = None
    published_at: str | None = None  # ISO 8601 UTC (already through to_iso)
    marker: str = ""  # cheap change marker from the document (guid + dates, row content)

    @property
    def version(self) -> str:
        """A short stable version: the marker and the image URL, hashed."""
        digest = hashlib.sha256(f"{self.marker}\n{self.image_url}".encode()).hexdigest()
        return f"web:{digest[:24]}"


def resolve_url(value: str | None, base: str) -> str | None:
    """An absolute http(s) URL for a reference found in a document; None for data:, js, empty."""
    if not value:
        return None
    value = value.strip()
    if not value or value.lower().startswith(("data:", "javascript:", "about:", "blob:")):
        return None
    absolute = urljoin(base, value)
    parts = urlsplit(absolute)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts._replace(fragment="").geturl()


def html_text(markup: str | None, limit: int = MAX_TEXT) -> str | None:
    """Plain text of an HTML fragment (whitespace collapsed, cut at limit); None when empty."""
    if not markup:
        return None
    if "<" in markup or "&" in markup:
        text = BeautifulSoup(markup, "html.parser").get_text(" ", strip=True)
    else:
        text = markup
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text or None


def tracking_pixel(width: object, height: object) -> bool:
    """True when width/height attributes say the image is at most 1x1 (a tracking pixel)."""
    sizes = [_pixels(v) for v in (width, height) if v not in (None, "")]
    return bool(sizes) and all(size is not None and size <= 1 for size in sizes)


def _pixels(value: object) -> int | None:
    text = str(value).strip().lower().removesuffix("px")
    try:
        return int(float(text))
    except ValueError:
        return None
