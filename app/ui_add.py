"""The Add page: one image with its caption, through the same pipeline as the daily job."""

from __future__ import annotations

import streamlit as st

from app.errors import KNOWN
from app.runtime import Runtime
from app.ui_common import (
    EARLIEST,
    LATEST,
    UPLOAD_TYPES,
    forget_results,
    go_to,
    show_error,
    timeline_table,
)
from ingest.manual import Added, ManualImage, add_image


def page(runtime: Runtime) -> None:
    """Render the Add page."""
    st.header("Add an image")
    st.caption(
        "The image goes through the same pipeline as the daily job: decoded, deduplicated by "
        "its content, stored, embedded; an image already in the catalog gains this place in "
        "its timeline."
    )
    with st.form("add", clear_on_submit=False):
        upload = st.file_uploader("Image", type=UPLOAD_TYPES, key="add_file")
        title = st.text_input("Title", key="add_title")
        description = st.text_area("Description", key="add_description")
        link = st.text_input(
            "Source link", key="add_link", placeholder="https://… (where it was published)"
        )
        left, right = st.columns(2)
        published = left.date_input(
            "Published on", None, EARLIEST, LATEST, key="add_published", format="YYYY-MM-DD"
        )
        category = right.text_input("Category", key="add_category")
        submitted = st.form_submit_button("Add to the catalog", type="primary")
    if submitted:
        if upload is None:
            st.error("Choose an image file to add.")
            return
        image = ManualImage(
            data=upload.getvalue(),
            title=title,
            description=description,
            source_uri=link,
            published_at=published.isoformat() if published else None,
            category=category,
        )
        try:
            with st.spinner("Adding…"):
                added = add_image(runtime.pipeline, image)
        except KNOWN as exc:
            show_error(exc)
            return
        forget_results()
        st.session_state["added"] = added
        st.rerun()  # the page's counts and pickers now include the image
    shown = st.session_state.get("added")
    if isinstance(shown, Added):
        outcome(runtime, shown)


def outcome(runtime: Runtime, added: Added) -> None:
    """New or already known, the id, and the image's timeline now."""
    if added.new:
        st.success(f"Added to the catalog as a new image. Its id is `{added.id}`.")
    else:
        st.info(
            "This image was already in the catalog: its timeline now includes this place. "
            f"Its id is `{added.id}`."
        )
    try:
        record = runtime.catalog.record(added.id)
    except KNOWN as exc:
        show_error(exc)
        return
    timeline_table(record.timeline)
    if st.button("Open in the catalog", key="added_open"):
        st.session_state["record_id"] = added.id
        go_to("catalog")
