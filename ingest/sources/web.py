"""Web source: a feed, table or page URL whose images are downloaded through one shared client.

Keys. One item is one image in one place, because where a picture was published matters as much
as the picture: the key is the image URL, a space, then the URL of the article, page or row link
it appears in (`https://cdn.example/a.jpg https://news.example/story`), or the image URL alone
when the entry has no place of its own (a feed entry without a link: its source_uri is the image
URL). The same image in two articles is two items: both are fetched, the first lands as the point
and the second is recorded as a sighting of it (ingest/sightings.py). Inside one document the first
mention of a pair wins. Catalogs built when the key was the image URL alone no longer match their
seen-state, so after the upgrade each web image is fetched once more and lands as an unchanged
sighting of its point.

Versions. Asking the image's server for ETag/Last-Modified on every run would cost one request
per item and defeat incrementality, so the version is a cheap marker taken from the document
itself, hashed with the image URL:
- RSS/Atom: the entry's guid plus its updated/published dates;
- CSV/JSON Lines: the whole row (any edited cell re-ingests the row);
- HTML pages and followed articles: nothing beyond the URL (images are taken as immutable per URL,
  which is how most sites publish them).
A changed image republished at the same URL under an unchanged entry is therefore missed until
its entry or row changes; that is the accepted trade-off.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, Self

from config import FetchSettings, Settings, SourceKind, SourceSettings
from ingest.http import Document, Downloader
from ingest.items import Cancelled, FetchError, ItemMeta, Source, SourceConfigError, SourceItem
from ingest.sources.detect import WEB_KINDS, detect_web_kind
from ingest.sources.entry import WebEntry
from ingest.sources.feeds import parse_feed
from ingest.sources.html import parse_article, parse_page
from ingest.sources.tabular import parse_csv, parse_jsonl

log = logging.getLogger(__name__)


class WebSource(Source):
    """An http(s) URL serving RSS/Atom, CSV, JSON Lines or HTML (detected unless declared)."""

    # "feed": decided from the content; the others are declared.
    kinds: ClassVar[tuple[SourceKind, ...]] = ("feed", "rss", "csv", "jsonl", "html")

    def __init__(
        self,
        name: str,
        url: str,
        settings: FetchSettings,
        *,
        kind: str | None = None,
        options: Mapping[str, Any] | None = None,
        downloader: Downloader | None = None,
    ) -> None:
        if kind is not None and kind not in WEB_KINDS:
            raise ValueError(f"web source kind must be one of {', '.join(WEB_KINDS)}: {kind}")
        self.name = name
        self.url = url
        self.kind = kind
        self.settings = settings
        self.options = dict(options or {})
        self.max_pages = int(self.options.get("max_pages") or settings.max_pages)
        if self.max_pages < 1:
            raise ValueError(f"max_pages must be at least 1: {self.max_pages}")
        # One client for discovery and every item fetch of this source (fetches run in the
        # pipeline's worker threads, after discovery may have finished, so it is not closed here).
        self.downloader = downloader or Downloader(settings)
        self._warnings: list[str] = []  # what the run report should show (e.g. a capped feed)

    @classmethod
    def from_spec(cls, spec: SourceSettings, settings: Settings, *, s3_client: Any = None) -> Self:
        """The http(s) URL of the declaration, with its options (max_pages, follow_links...)."""
        if not spec.location.startswith(("http://", "https://")):
            raise SourceConfigError(f"source {spec.name!r}: {spec.kind} needs an http(s) URL")
        try:
            return cls(
                spec.name,
                spec.location,
                settings.fetch,
                kind=None if spec.kind == "feed" else spec.kind,
                options=spec.options,
            )
        except (TypeError, ValueError) as exc:
            raise SourceConfigError(f"source {spec.name!r}: {exc}") from exc

    def discover(self) -> Iterator[SourceItem]:
        """Fetch the document once, parse it lazily, and yield one item per (image, place) pair."""
        document = self.downloader.document(self.url)
        kind = self.kind or detect_web_kind(document)
        log.debug("source %s: %s is %s", self.name, document.url, kind)
        seen: set[str] = set()
        self._warnings.clear()
        for entry in self._entries(document, kind):
            key = item_key(entry.image_url, entry.source_uri)
            if key in seen:  # one key, one item: the first mention wins
                continue
            seen.add(key)
            yield self._item(entry)

    def warnings(self) -> Sequence[str]:
        """What the last discovery cut short (a document listing more than the cap)."""
        return tuple(self._warnings)

    def cancel(self) -> None:
        """Stop this source's downloads in flight (the run is stopping or out of time)."""
        self.downloader.cancel()

    def close(self) -> None:
        """Close the shared HTTP client (call once the run that used this source is over)."""
        self.downloader.close()

    def _capped(self, document: Document, entries: Iterator[WebEntry]) -> Iterator[WebEntry]:
        """At most max_items_per_document entries of one document; the cut is reported."""
        cap = self.settings.max_items_per_document
        for n, entry in enumerate(entries):
            if n == cap:
                message = (
                    f"{document.url[:200]} lists more than {cap} items; only the first {cap} "
                    "were read (IMGSEARCH_FETCH__MAX_ITEMS_PER_DOCUMENT)"
                )
                log.warning("source %s: %s", self.name, message)
                self._warnings.append(message)
                return
            yield entry

    def _entries(self, document: Document, kind: str) -> Iterator[WebEntry]:
        if kind == "rss":
            yield from self._capped(document, parse_feed(document))
        elif kind == "csv":
            yield from self._capped(document, parse_csv(document, self.options))
        elif kind == "jsonl":
            yield from self._capped(document, parse_jsonl(document, self.options))
        else:
            page = parse_page(document)
            yield from self._capped(document, iter(page.entries))
            if self._follow_links():
                yield from self._articles(page.links)

    def _follow_links(self) -> bool:
        option = self.options.get("follow_links")
        if option is None:
            return self.settings.follow_links
        if isinstance(option, str):
            return option.strip().lower() in ("1", "true", "yes", "on")
        return bool(option)

    def _articles(self, links: list[str]) -> Iterator[WebEntry]:
        """One level of same-site links, at most max_pages; an unreadable article is skipped."""
        for url in links[: self.max_pages]:
            try:
                article = self.downloader.document(url)
            except Cancelled:
                raise
            except FetchError as exc:
                # The page itself was read; one broken link must not fail the whole source.
                log.warning("source %s: skipping article %s: %s", self.name, url, exc.reason)
                continue
            if "html" not in article.content_type and article.content_type:
                continue
            yield from self._capped(article, iter(parse_article(article)))

    def _item(self, entry: WebEntry) -> SourceItem:
        url = entry.image_url
        downloader = self.downloader
        return SourceItem(
            source=self.name,
            key=item_key(url, entry.source_uri),
            version=entry.version,
            meta=ItemMeta(
                source_uri=entry.source_uri,
                title=entry.title,
                description=entry.description,
                category=entry.category,
                published_at=entry.published_at,
            ),
            fetch=lambda: downloader.image(url),
        )


def item_key(image_url: str, source_uri: str) -> str:
    """The key of an image in one place: the image URL, then the page's when that differs."""
    return image_url if source_uri == image_url else f"{image_url} {source_uri}"
