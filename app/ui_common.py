"""What the page modules share: the runtime, filters, cached counts, and safe text for Markdown.

Widgets and layout only; the work is done by the core (search, ingest, store).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import date
from typing import Any
from urllib.parse import quote

import streamlit as st

from app.errors import describe, outcome
from app.runtime import Runtime, configure_logging, settings_key, shared_runtime
from app.worker import start_in_app_scheduler
from config import Settings
from search.catalog import CatalogStats
from search.query import Filters
from store.images import StoreError

log = logging.getLogger("imgsearch.ui")
UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"]
COLUMNS = 4
EARLIEST = date(1900, 1, 1)  # the date pickers' range: archives reach back far
LATEST = date(2100, 12, 31)
# Pages register themselves here (url path -> st.Page) so one page can send the visitor to another.
PAGES: dict[str, Any] = {}


@st.cache_resource(show_spinner="Loading the model and opening the index…")
def get_runtime(key: str, _settings: Settings) -> Runtime:
    """One Runtime per process and settings: model and index load once.

    The Settings object itself is used (never a JSON round trip: JSON masks secrets such as the
    Qdrant API key); `key` stands for it in Streamlit's cache.
    """
    settings = _settings
    configure_logging(settings.log_level)
    runtime = shared_runtime(settings)  # the one the API and the in-app schedule use too
    runtime.warm_up()
    start_in_app_scheduler(runtime)
    return runtime


def runtime_for(settings: Settings) -> Runtime:
    """The process's Runtime for these settings (built on first use)."""
    return get_runtime(settings_key(settings), settings)


def show_error(exc: Exception) -> None:
    """One sentence on the page for a failure the visitor can act on; details go to the log."""
    row = outcome(exc)
    if row is None or row.unavailable:
        log.warning("request failed", exc_info=exc)
    st.error(describe(exc))


def forget_results() -> None:
    """Drop this session's cached answers (after an add or a delete changed the catalog)."""
    for key in ("answers", "stats", "facets", "browse_cache", "record_preview"):
        st.session_state.pop(key, None)


def cached_by_count(name: str, count: int, compute: Callable[[], Any]) -> Any:
    """A value computed once per catalog size in this session (facets, stats)."""
    held = st.session_state.get(name)
    if held is None or held[0] != count:
        held = (count, compute())
        st.session_state[name] = held
    return held[1]


def catalog_stats(runtime: Runtime, count: int) -> CatalogStats:
    """The catalog page's counts (one scroll of the catalog per catalog size)."""
    return cached_by_count("stats", count, runtime.catalog.stats)


def facet_values(runtime: Runtime, count: int) -> tuple[list[str], list[str]]:
    """The sources and categories in the catalog, for the filter pickers."""

    def compute() -> tuple[list[str], list[str]]:
        return (
            [str(value) for value, _ in runtime.index.facet("source")],
            [str(value) for value, _ in runtime.index.facet("category")],
        )

    return cached_by_count("facets", count, compute)


def filter_controls(runtime: Runtime, count: int, prefix: str) -> Filters:
    """Source, category, published-date range and title words; widget keys start with prefix."""
    sources, categories = facet_values(runtime, count)
    chosen_sources = st.multiselect("Source", sources, key=f"{prefix}sources")
    chosen_categories = st.multiselect("Category", categories, key=f"{prefix}categories")
    left, right = st.columns(2)
    since = left.date_input(
        "Published since", None, EARLIEST, LATEST, key=f"{prefix}since", format="YYYY-MM-DD"
    )
    until = right.date_input(
        "Published until", None, EARLIEST, LATEST, key=f"{prefix}until", format="YYYY-MM-DD"
    )
    words = st.text_input("Words in the title", key=f"{prefix}words")
    return Filters(
        sources=tuple(chosen_sources),
        categories=tuple(chosen_categories),
        since=since.isoformat() if isinstance(since, date) else None,
        until=until.isoformat() if isinstance(until, date) else None,
        words=words.strip() or None,
    )


def thumbnail(runtime: Runtime, payload: dict[str, Any], pid: str) -> None:
    """A catalog image's thumbnail, or a caption saying it is unavailable.

    From S3 the browser loads it through a presigned link, so a page of cards costs the app no
    downloads; otherwise the app reads the bytes and Streamlit serves them.
    """
    try:
        key = str(payload["thumbnail_key"])
        st.image(runtime.images.thumbnail_link(key) or runtime.images.get(key), width="stretch")
    except (StoreError, KeyError):
        log.warning("thumbnail missing for %s", pid, exc_info=True)
        st.caption("(thumbnail unavailable)")


def timeline_table(places: list[dict[str, Any]]) -> None:
    """Every place a picture was published, earliest first, with clickable links."""
    st.dataframe(
        [
            {
                "published": place.get("published_at") or "",
                "first seen": place.get("first_seen") or "",
                "title": place.get("title") or "",
                "source": place.get("source") or "",
                "link": place.get("source_uri") or "",
            }
            for place in places
        ],
        hide_index=True,
        column_config={"link": st.column_config.LinkColumn("link")},
    )


def go_to(url_path: str) -> None:
    """Show another page (registered in PAGES by app/ui.py)."""
    st.switch_page(PAGES[url_path])


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$])")


def md(text: object) -> str:
    """Text from a feed or file, shown literally: Markdown and HTML characters escaped."""
    return _MARKDOWN.sub(r"\\\1", str(text)).replace("\n", " ")


def url(link: str) -> str:
    """A link target that cannot break out of Markdown's (...)."""
    return quote(link, safe=":/?#@!$&'*+,;=%~-._")
