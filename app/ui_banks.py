"""The Banks page (entries with thumbnails, add, remove) and the Alerts page.

Widgets and layout only: entries are added through `Alerts.bank` (which matches them against
the catalog at once), as the CLI and the API add them.
"""

from __future__ import annotations

import streamlit as st

from app.errors import KNOWN
from app.runtime import Runtime
from app.ui_common import COLUMNS, UPLOAD_TYPES, log, md, show_error, url
from search.banks import Entry
from store.images import StoreError

ADDED = "bank_added"  # session key: what the last add did, shown after the rerun


def page(runtime: Runtime) -> None:
    """Render the Banks page: add a picture, then each bank's entries."""
    st.header("Banks of known pictures")
    st.caption(
        "Pictures the desk has decided about (debunked, verified, embargoed…). Every check "
        "names the bank of a picture it matches, and every ingested image is matched against "
        "them (see Alerts). An edited copy matches too: the same layers as the verdict."
    )
    add_form(runtime)
    try:
        names = runtime.banks.names()
    except KNOWN as exc:
        show_error(exc)
        return
    if not names:
        st.info("No banks yet: add a picture above to make one.")
        return
    labels = [f"{name} ({count})" for name, count in names]
    chosen = st.radio("Bank", labels, horizontal=True, key="bank_shown")
    bank = names[labels.index(chosen)][0] if chosen in labels else names[0][0]
    entries(runtime, bank)


def add_form(runtime: Runtime) -> None:
    """The add form, and what the last add did."""
    with st.form("bank_add", clear_on_submit=False):
        upload = st.file_uploader("Picture", type=UPLOAD_TYPES, key="bank_file")
        bank = st.text_input("Bank", value="debunked", key="bank_name")
        note = st.text_input("Note", key="bank_note", placeholder="what the desk found")
        link = st.text_input("Link", key="bank_link", placeholder="https://… (the fact check)")
        who = st.text_input("Added by", key="bank_by")
        submitted = st.form_submit_button("Add to the bank", type="primary")
    if submitted:
        if upload is None:
            st.error("Choose a picture to add.")
            return
        try:
            with st.spinner("Adding and matching against the catalog…"):
                added, alerts = runtime.alerts.bank(
                    bank.strip(),
                    upload.getvalue(),
                    note=note,
                    link=link,
                    added_by=who,
                    file=upload.name,
                )
                runtime.alerts.deliver(linger_s=0)
        except KNOWN as exc:
            show_error(exc)
            return
        st.session_state[ADDED] = (added.entry.id, bank.strip(), added.new, len(alerts))
    shown = st.session_state.get(ADDED)
    if shown:
        entry, bank_name, new, found = shown
        what = "Added to" if new else "Already banked; now also in"
        said = f"{found} alert(s): the catalog holds it" if found else "not in the catalog"
        st.success(f"{what} bank {md(bank_name)} as `{entry}` ({said}).")


def entries(runtime: Runtime, bank: str) -> None:
    """A bank's entries in a grid: thumbnail, note, link, who and when, and Remove."""
    try:
        found = runtime.banks.entries(bank)
    except KNOWN as exc:
        show_error(exc)
        return
    columns = st.columns(COLUMNS)
    for i, entry in enumerate(found):
        with columns[i % COLUMNS]:
            card(runtime, bank, entry)


def card(runtime: Runtime, bank: str, entry: Entry) -> None:
    """One entry."""
    member = entry.membership(bank)
    try:
        st.image(runtime.banks.thumbnail(entry), width="stretch")
    except (StoreError, KeyError):
        log.warning("thumbnail missing for bank entry %s", entry.id, exc_info=True)
        st.caption("(thumbnail unavailable)")
    st.markdown(f"**{md(entry.payload.get('file') or entry.sha256[:12])}**")
    if member is not None:
        if member.note:
            st.markdown(md(member.note))
        if member.link.startswith(("http://", "https://")):
            st.markdown(f"[{md(member.link)}]({url(member.link)})")
        elif member.link:
            st.markdown(md(member.link))
        st.caption(f"added by {member.added_by or '?'} at {member.added_at} · `{entry.id}`")
    if st.button("Remove", key=f"remove_{bank}_{entry.id}"):
        try:
            runtime.banks.remove(bank, entry.id, catalog=runtime.index)
        except KNOWN as exc:
            show_error(exc)
            return
        st.session_state.pop(ADDED, None)
        st.rerun()


def alerts_page(runtime: Runtime) -> None:
    """Render the Alerts page: banked pictures found in the catalog, most recent first."""
    st.header("Alerts")
    st.caption(
        "A banked picture found in the catalog: when it was banked (retroactive) or when a run "
        "ingested it. Each is sent once to the webhooks in IMGSEARCH_ALERTS__WEBHOOKS."
    )
    try:
        found = runtime.alert_store.recent(200)
    except KNOWN as exc:
        show_error(exc)
        return
    if not found:
        st.info("No alerts yet.")
        return
    st.dataframe(
        [
            {
                "found": a.created_at,
                "bank": ", ".join(b["bank"] for b in a.banks),
                "note": a.note,
                "fact check": a.link,
                "title": a.title,
                "source": a.source,
                "link": a.source_uri,
                "published": a.published_at,
                "how": a.found,
                "delivered": ", ".join(
                    "yes" if d["delivered_at"] else f"no ({d['error'] or 'pending'})"
                    for d in a.deliveries
                ),
            }
            for a in found
        ],
        hide_index=True,
        column_config={
            "link": st.column_config.LinkColumn("link"),
            "fact check": st.column_config.LinkColumn("fact check"),
        },
    )
