"""The Catalog page: what the catalog holds (charts), browsing it, one image's record, takedown."""

from __future__ import annotations

from itertools import islice
from typing import Any

import pandas as pd
import streamlit as st

from app.errors import KNOWN
from app.present import title_of
from app.runtime import Runtime
from app.ui_common import (
    COLUMNS,
    catalog_stats,
    filter_controls,
    forget_results,
    go_to,
    log,
    md,
    show_error,
    thumbnail,
    timeline_table,
    url,
)
from embed.decode import DecodeError
from search.catalog import CatalogStats
from search.query import Filters
from store.images import StoreError
from store.index import Hit

PAGE_SIZE = 12  # images per browse page


def page(runtime: Runtime, count: int) -> None:
    """Render the Catalog page."""
    st.header("Catalog")
    flash = st.session_state.pop("flash", None)
    if flash:
        st.success(flash)
    if count == 0:
        st.info("The catalog is empty. Add images on the Add page or with `imgsearch ingest PATH`.")
        return
    try:
        stats = catalog_stats(runtime, count)
    except KNOWN as exc:
        show_error(exc)
        return
    overview(stats)
    pid = st.session_state.get("record_id")
    if pid:
        record_panel(runtime, pid)
    browse(runtime, count)


def overview(stats: CatalogStats) -> None:
    """Totals, then counts per source, category, month, ingestion day, format and size."""
    a, b, c, d = st.columns(4)
    a.metric("Images", f"{stats.total:,}")
    b.metric("Stored originals", human_bytes(stats.total_bytes))
    c.metric("Sources", len(stats.sources))
    d.metric("Categories", len(stats.categories))
    left, right = st.columns(2)
    with left:
        chart("Images per source", "source", stats.sources)
        chart("Published per month", "month", stats.months)
        chart("Formats", "format", stats.formats)
        chart("File sizes", "size", stats.sizes)
    with right:
        chart("Images per category", "category", stats.categories)
        chart("Ingestion history (images per day)", "day", stats.ingested)
        chart("Pixels", "pixels", stats.pixels)


def chart(heading: str, label: str, counts: list[tuple[str, int]]) -> None:
    """One bar chart of counts, in the order given (chronological, or largest first)."""
    st.markdown(f"**{heading}**")
    if not counts:
        st.caption("Nothing recorded.")
        return
    frame = pd.DataFrame(counts, columns=[label, "images"])
    st.bar_chart(frame, x=label, y="images", sort=False, height=220)


def human_bytes(size: int) -> str:
    """1234567 -> '1.2 MB'."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1000
    return f"{value:,.1f} TB"  # pragma: no cover - the loop always returns


def browse(runtime: Runtime, count: int) -> None:
    """The catalog with the search page's filters, a page at a time; each image opens."""
    st.subheader("Browse")
    st.caption(
        "Ids are derived from each image's hash, so the unfiltered first page is a random sample."
    )
    with st.expander("Filters", expanded=False):
        filters = filter_controls(runtime, count, "browse_")
    st.text_input(
        "Open an image by its id", key="open_id", on_change=open_by_id, placeholder="a UUID"
    )
    if st.session_state.get("browse_filters") != filters:
        st.session_state["browse_filters"] = filters
        st.session_state["browse_page"] = 0
    number = int(st.session_state.get("browse_page", 0))
    try:
        total, hits = browse_page(runtime, count, filters, number)
    except KNOWN as exc:
        show_error(exc)
        return
    pages = max(1, -(-total // PAGE_SIZE))
    st.caption(f"{total:,} image(s) match · page {number + 1} of {pages}")
    for row_start in range(0, len(hits), COLUMNS):
        for column, hit in zip(
            st.columns(COLUMNS), hits[row_start : row_start + COLUMNS], strict=False
        ):
            with column:
                thumbnail(runtime, hit.payload, hit.id)
                st.markdown(f"**{md(title_of(hit.payload))}**")
                when = hit.payload.get("published_at") or hit.payload.get("ingested_at") or ""
                st.caption(f"{md(when)} · {md(hit.payload.get('source', ''))}")
                st.button("Open", key=f"open-{hit.id}", on_click=open_record, args=(hit.id,))
    back, _, forward = st.columns([1, 4, 1])
    back.button("Previous", key="browse_prev", disabled=number == 0, on_click=turn, args=(-1,))
    forward.button(
        "Next", key="browse_next", disabled=number + 1 >= pages, on_click=turn, args=(1,)
    )


def browse_page(
    runtime: Runtime, count: int, filters: Filters, number: int
) -> tuple[int, list[Hit]]:
    """(matching images, the images of page `number`), kept while the catalog is unchanged."""
    key = (count, filters, number)
    held = st.session_state.get("browse_cache")
    if held is None or held[0] != key:
        where = filters.where()
        start = number * PAGE_SIZE
        scroll = runtime.index.scroll(min(start + PAGE_SIZE, 256), where=where)
        hits = list(islice(scroll, start, start + PAGE_SIZE))
        held = (key, (runtime.index.count(where), hits))
        st.session_state["browse_cache"] = held
    return held[1]


def turn(step: int) -> None:
    """Previous / Next."""
    st.session_state["browse_page"] = max(0, int(st.session_state.get("browse_page", 0)) + step)


def open_record(pid: str) -> None:
    """Show this image's record."""
    st.session_state["record_id"] = pid


def open_by_id() -> None:
    """The id box."""
    pid = str(st.session_state.get("open_id") or "").strip()
    if pid:
        st.session_state["record_id"] = pid


def close_record() -> None:
    """Hide the record."""
    st.session_state.pop("record_id", None)


def record_panel(runtime: Runtime, pid: str) -> None:
    """One image: preview, facts, links, timeline, payload; More like this; delete."""
    with st.container(border=True):
        try:
            record = runtime.catalog.record(pid)
        except KNOWN as exc:
            show_error(exc)
            st.button("Close", key="record_close", on_click=close_record)
            return
        p = record.payload
        st.subheader(md(title_of(p)))
        left, right = st.columns([1, 2])
        with left:
            preview(runtime, record.id, p)
        with right:
            facts(runtime, record.id, p)
        st.markdown("**Timeline** (every place it was published, earliest first)")
        timeline_table(record.timeline)
        with st.expander("Payload"):
            st.json(p, expanded=True)
        more, close, _ = st.columns([1, 1, 3])
        if more.button("More like this", key="record_more"):
            st.session_state["more_like"] = {"id": record.id, "title": title_of(p)}
            go_to("search")
        close.button("Close", key="record_close", on_click=close_record)
        delete_controls(runtime, record.id, title_of(p))


def preview(runtime: Runtime, pid: str, payload: dict[str, Any]) -> None:
    """A display-sized copy of the original, decoded once per session and image."""
    held = st.session_state.get("record_preview")
    if held is None or held[0] != pid:
        try:
            held = (pid, runtime.catalog.preview(payload, 480))
        except (StoreError, DecodeError, KeyError):
            log.warning("original of %s unavailable", pid, exc_info=True)
            held = (pid, None)
        st.session_state["record_preview"] = held
    if held[1] is None:
        thumbnail(runtime, payload, pid)
    else:
        st.image(held[1], width="stretch")


def facts(runtime: Runtime, pid: str, p: dict[str, Any]) -> None:
    """Id, where and when, size, links."""
    lines = [
        f"**Id:** `{pid}`",
        f"**Source:** {md(p.get('source', ''))}",
        f"**Published:** {md(p.get('published_at') or 'unknown')}",
        f"**Ingested:** {md(p.get('ingested_at') or '')}",
        f"**Category:** {md(p.get('category') or '—')}",
        f"**Format:** {md(p.get('format', ''))}, {p.get('width', '?')} x {p.get('height', '?')}, "
        f"{human_bytes(int(p.get('bytes') or 0))}",
    ]
    if p.get("description"):
        lines.append(f"**Description:** {md(p['description'])}")
    uri = str(p.get("source_uri") or "")
    if uri.startswith(("http://", "https://")):
        lines.append(f"**Published at:** [{md(uri)}]({url(uri)})")
    elif uri:
        lines.append(f"**Published at:** {md(uri)}")
    try:
        link = runtime.images.link(str(p["image_key"])) if p.get("image_key") else None
    except StoreError:
        link = None
    if link:
        lines.append(f"[Original]({url(link)})")
    st.markdown("  \n".join(lines))


def delete_controls(runtime: Runtime, pid: str, title: str) -> None:
    """Delete (a takedown) after an explicit confirmation."""
    st.markdown("**Takedown**")
    confirmed = st.checkbox(
        "I confirm: remove this image from the catalog, with its original and thumbnail",
        key=f"confirm-{pid}",
    )
    if st.button("Delete", key="delete", type="primary", disabled=not confirmed):
        try:
            runtime.catalog.delete(pid)
        except KNOWN as exc:
            show_error(exc)
            return
        log.info("deleted %s from the page", pid)
        forget_results()
        st.session_state.pop("record_id", None)
        if (st.session_state.get("more_like") or {}).get("id") == pid:
            st.session_state.pop("more_like")
        st.session_state["flash"] = (
            f"Deleted “{md(title)}” ({pid}): it is gone from the index and the image store, and "
            "no search returns it."
        )
        st.rerun()
