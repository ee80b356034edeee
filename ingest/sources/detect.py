"""Tell what kind of web document a URL serves: rss (RSS/Atom/RDF), csv, jsonl or html."""

from __future__ import annotations

import json
import re

from ingest.http import Document
from ingest.items import FetchError
from ingest.sources.tabular import find_image_column

WEB_KINDS = ("rss", "csv", "jsonl", "html")
FEED_TYPES = {
    "application/rss+xml",
    "application/atom+xml",
    "application/rdf+xml",
    "application/feed+json",
}
CSV_TYPES = {"text/csv", "application/csv", "text/comma-separated-values"}
JSONL_TYPES = {
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/x-jsonlines",
    "application/jsonlines",
    "application/json-seq",
}
HTML_TYPES = {"text/html", "application/xhtml+xml"}
_FEED_ROOT = re.compile(rb"<(?:[\w-]+:)?(?:rss|feed|rdf)[\s>]", re.IGNORECASE)
_HTML_ROOT = re.compile(rb"<(?:!doctype\s+html|html)[\s>]", re.IGNORECASE)
SNIFF_BYTES = 4096


def detect_web_kind(document: Document) -> str:
    """Decide from the Content-Type, then from the content; FetchError when it is none of them."""
    media = document.content_type
    if media in FEED_TYPES:
        return "rss"
    if media in CSV_TYPES:
        return "csv"
    if media in JSONL_TYPES:
        return "jsonl"
    head = document.content[:SNIFF_BYTES].lstrip(b"\xef\xbb\xbf \t\r\n")
    if media in HTML_TYPES:
        # Some servers send feeds as text/html; a feed root element says otherwise.
        return "rss" if head.startswith(b"<?xml") and _FEED_ROOT.search(head) else "html"
    kind = sniff(head)
    if kind is None:
        shown = media or "no content type"
        raise FetchError(
            f"cannot tell what {document.url} is ({shown}); declare kind rss, csv, jsonl or html",
            retryable=False,
        )
    return kind


def sniff(head: bytes) -> str | None:
    """The kind the first bytes suggest, or None."""
    if head.startswith(b"<"):
        if _FEED_ROOT.search(head):
            return "rss"
        if _HTML_ROOT.search(head):
            return "html"
        return None
    text = head.decode("utf-8", errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    if lines[0].lstrip().startswith("{"):
        try:
            first = json.loads(lines[0])
        except ValueError:
            return None
        return "jsonl" if isinstance(first, dict) else None
    header = [cell.strip().strip("\"'") for cell in re.split(r"[,;\t|]", lines[0])]
    return "csv" if find_image_column(header) else None
