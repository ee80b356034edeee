"""Plain HTML pages: <img> (src/srcset, alt), og:image, and same-site links for one-level follow."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

from bs4 import BeautifulSoup, Tag

from ingest.dates import to_iso
from ingest.http import Document
from ingest.sources.entry import WebEntry, html_text, resolve_url, tracking_pixel

ARTICLE_IMAGES = 3  # content images taken per followed article, besides its og:image
# Links to these are assets or downloads, never articles worth fetching as pages.
NOT_PAGES = re.compile(
    r"\.(?:jpe?g|png|gif|webp|bmp|tiff?|svg|ico|css|js|json|xml|rss|atom|pdf|zip|gz|mp[34]|"
    r"mov|avi|webm|woff2?|ttf)$",
    re.IGNORECASE,
)
_DESCRIPTOR = re.compile(r"^(\d+(?:\.\d+)?)([wxh])$", re.IGNORECASE)


@dataclass(frozen=True)
class Page:
    """What a page offers: its images and the same-site links an optional follow may read."""

    entries: list[WebEntry] = field(default_factory=list)
    links: list[str] = field(default_factory=list)


def parse_page(document: Document) -> Page:
    """Images of a page (og:image first, then every <img>) and its same-site links."""
    soup = BeautifulSoup(document.text, "html.parser")
    base = _base(soup, document.url)
    page_uri = document.url
    published = to_iso(_meta(soup, "article:published_time"))
    entries: list[WebEntry] = []
    og_image = resolve_url(_meta(soup, "og:image:secure_url", "og:image", "og:image:url"), base)
    if og_image:
        entries.append(
            WebEntry(
                image_url=og_image,
                source_uri=page_uri,
                title=html_text(_meta(soup, "og:title") or _title(soup), 500),
                description=html_text(_meta(soup, "og:description", "description")),
                published_at=published,
            )
        )
    for img in soup.find_all("img"):
        url = img_url(img, base)
        if url:
            alt = str(img.get("alt") or img.get("title") or "")
            entries.append(
                WebEntry(url, page_uri, title=html_text(alt, 500), published_at=published)
            )
    return Page(_unique(entries), same_site_links(soup, base, page_uri))


def parse_article(document: Document) -> list[WebEntry]:
    """A followed article's images (og:image, first content images) titled by its <h1>."""
    soup = BeautifulSoup(document.text, "html.parser")
    base = _base(soup, document.url)
    heading = soup.find("h1")
    title = html_text(heading.get_text(" ", strip=True) if heading else None, 500)
    title = title or html_text(_meta(soup, "og:title") or _title(soup), 500)
    body = soup.find("article") or soup.find("main") or soup.body or soup
    first_paragraph = body.find("p") if isinstance(body, Tag) else None
    description = html_text(
        _meta(soup, "og:description", "description")
        or (first_paragraph.get_text(" ", strip=True) if first_paragraph else None)
    )
    time_tag = soup.find("time", attrs={"datetime": True})
    published = to_iso(
        _meta(soup, "article:published_time")
        or (str(time_tag.get("datetime")) if isinstance(time_tag, Tag) else None)
    )
    category = html_text(_meta(soup, "article:section"), 200)
    urls: list[str] = []
    og_image = resolve_url(_meta(soup, "og:image:secure_url", "og:image", "og:image:url"), base)
    if og_image:
        urls.append(og_image)
    content_images = [img_url(img, base) for img in body.find_all("img")]
    urls.extend([u for u in content_images if u][:ARTICLE_IMAGES])
    entries = [
        WebEntry(url, document.url, title, description, category, published, marker="")
        for url in urls
    ]
    return _unique(entries)


def img_url(img: Any, base: str) -> str | None:
    """The best URL of an <img>: the largest srcset candidate, else src (lazy data-* too)."""
    if tracking_pixel(img.get("width"), img.get("height")):
        return None
    for attr in ("srcset", "data-srcset"):
        best = pick_srcset(str(img.get(attr) or ""))
        url = resolve_url(best, base)
        if url:
            return _not_vector(url)
    for attr in ("src", "data-src", "data-original"):
        url = resolve_url(str(img.get(attr) or ""), base)
        if url:
            return _not_vector(url)
    return None


def pick_srcset(value: str) -> str | None:
    """The largest candidate of a srcset (by width descriptor, else density); None if empty."""
    best: tuple[float, str] | None = None
    for url, descriptor in _srcset_candidates(value):
        match = _DESCRIPTOR.match(descriptor)
        size = float(match.group(1)) if match else 1.0
        if match and match.group(2).lower() == "x":
            size *= 1e-6  # densities rank below any width; mixed sets are rare and invalid
        if best is None or size > best[0]:
            best = (size, url)
    return best[1] if best else None


def _srcset_candidates(value: str) -> list[tuple[str, str]]:
    """Split a srcset the way the HTML spec does: URLs may contain commas, descriptors not."""
    candidates: list[tuple[str, str]] = []
    pos, n = 0, len(value)
    while pos < n:
        while pos < n and (value[pos].isspace() or value[pos] == ","):
            pos += 1
        start = pos
        while pos < n and not value[pos].isspace():
            pos += 1
        url = value[start:pos]
        descriptor = ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            end = value.find(",", pos)
            end = n if end == -1 else end
            descriptor = value[pos:end].strip()
            pos = end + 1
        if url:
            candidates.append((url, descriptor))
    return candidates


def same_site_links(soup: BeautifulSoup, base: str, page_uri: str) -> list[str]:
    """Links on the page's own host, not the page itself nor obvious assets, in order."""
    host = _host(page_uri)
    here = page_uri.split("#", 1)[0]
    links: list[str] = []
    seen: set[str] = {here}
    for anchor in soup.find_all("a", href=True):
        url = resolve_url(str(anchor.get("href")), base)
        if not url or _host(url) != host or url in seen:
            continue
        if NOT_PAGES.search(urlsplit(url).path):
            continue
        seen.add(url)
        links.append(url)
    return links


def _base(soup: BeautifulSoup, url: str) -> str:
    tag = soup.find("base", href=True)
    return urljoin(url, str(tag.get("href"))) if isinstance(tag, Tag) else url


def _meta(soup: BeautifulSoup, *names: str) -> str | None:
    for name in names:
        for attr in ("property", "name"):
            tag = soup.find("meta", attrs={attr: name})
            if isinstance(tag, Tag) and tag.get("content"):
                return str(tag.get("content")).strip() or None
    return None


def _title(soup: BeautifulSoup) -> str | None:
    return soup.title.get_text(" ", strip=True) if soup.title else None


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower().removeprefix("www.")


def _not_vector(url: str) -> str | None:
    # SVGs would only fail the content-type and signature checks: drop them quietly here.
    return None if urlsplit(url).path.lower().endswith(".svg") else url


def _unique(entries: list[WebEntry]) -> list[WebEntry]:
    """The first mention of each (image, place) pair: one item each, as the web source keys them."""
    seen: set[tuple[str, str]] = set()
    unique = []
    for entry in entries:
        pair = (entry.image_url, entry.source_uri)
        if pair not in seen:
            seen.add(pair)
            unique.append(entry)
    return unique
