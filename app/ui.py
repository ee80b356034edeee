"""Streamlit UI, the entry script `imgsearch serve` runs: the pages and what they share.

Search (examples, URL, text, filters, verdict, More like this), Catalog (charts, browse, record,
takedown), Add (one image by hand), Ingestion (runs, Run now, quarantine), Banks (known
pictures: entries, add, remove) and Alerts (banked pictures found in the catalog). Only the
page shown renders; the page modules hold widgets and layout, the core does the work.
"""

from __future__ import annotations

import streamlit as st

from app import ui_add, ui_banks, ui_catalog, ui_runs, ui_search
from app.errors import KNOWN, describe
from app.ui_common import PAGES, log, runtime_for
from config import get_settings


def main() -> None:
    """Render the app: the header, start-up errors, the demo-mode warning, then the page."""
    st.set_page_config(page_title="imgsearch", page_icon=":material/image_search:", layout="wide")
    st.title("imgsearch")
    st.caption("Have we seen this image, or ones like it, and where?")
    settings = get_settings()
    try:
        runtime = runtime_for(settings)
        count = runtime.catalog.count()
    except KNOWN as exc:
        log.exception("start-up failed")
        st.error(describe(exc))
        st.stop()
        return
    if runtime.encoder.is_random:
        st.warning(
            "Demo mode: the encoder uses random weights (IMGSEARCH_EMBED__WEIGHTS=random). "
            "The copy verdict is reliable (its hashes and geometric checks need no weights), "
            "but similarity scores mean nothing."
        )
    with st.sidebar:
        st.metric("Images in the catalog", f"{count:,}")
    pages = {
        "search": st.Page(
            lambda: ui_search.page(runtime, count),
            title="Search",
            icon=":material/image_search:",
            url_path="search",
            default=True,
        ),
        "catalog": st.Page(
            lambda: ui_catalog.page(runtime, count),
            title="Catalog",
            icon=":material/photo_library:",
            url_path="catalog",
        ),
        "add": st.Page(
            lambda: ui_add.page(runtime),
            title="Add",
            icon=":material/add_photo_alternate:",
            url_path="add",
        ),
        "ingestion": st.Page(
            lambda: ui_runs.page(runtime),
            title="Ingestion",
            icon=":material/schedule:",
            url_path="ingestion",
        ),
        "banks": st.Page(
            lambda: ui_banks.page(runtime),
            title="Banks",
            icon=":material/gpp_bad:",
            url_path="banks",
        ),
        "alerts": st.Page(
            lambda: ui_banks.alerts_page(runtime),
            title="Alerts",
            icon=":material/notifications:",
            url_path="alerts",
        ),
    }
    PAGES.update(pages)
    st.navigation(list(pages.values()), position="top").run()


main()
