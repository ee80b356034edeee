"""The Search page: example images (and "not like this" ones), an image URL, text, filters.

The verdict panel appears when the query is exactly one image; the result grid folds copies of
one picture under one card, each with a "More like this" button, and pages with "Load more".
Answers are kept in the session keyed by the query, so a rerun (a click) recomputes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import streamlit as st
from PIL import Image

from app.errors import KNOWN, sentence
from app.present import (
    NO_MATCHES,
    NOT_IN_CATALOG,
    bank_lines,
    evidence_line,
    kind_of,
    match_mark,
    metadata_rows,
    outlined,
    score_name,
    skipped_layers,
    title_of,
    when_of,
    when_published,
)
from app.runtime import Runtime
from app.ui_common import (
    COLUMNS,
    UPLOAD_TYPES,
    filter_controls,
    log,
    md,
    show_error,
    thumbnail,
    timeline_table,
    url,
)
from embed.decode import DecodeError, decode_image, decode_preview
from embed.descriptors import IMAGE, TextSearchUnavailable
from search.query import Examples, Filters, Query
from search.query import build_query as checked_query
from search.scores import score_scale
from search.service import Card, Match, SearchResult
from store.images import StoreError
from store.index import Strategy

KEEP_ANSWERS = 4  # queries whose answers a session keeps (the current one and a way back)


@dataclass
class Answer:
    """The pages of results of one query (offset 0), and the query image for the verdict."""

    query: Query
    pages: list[SearchResult]
    preview: Image.Image | None = None
    wanted: int = 1  # pages the visitor asked for ("Load more" adds one)

    @property
    def has_more(self) -> bool:
        """A full last page: there may be more results."""
        return len(self.pages[-1].matches) >= self.query.top_k


def page(runtime: Runtime, count: int) -> None:
    """Render the Search page."""
    top_k, threshold, filters = sidebar(runtime, count)
    if count == 0:
        st.info(
            "The catalog is empty. Add images on the Add page, with `imgsearch ingest PATH` (a "
            "folder, an `s3://bucket/prefix` or a feed URL), or run `make run` to build the demo "
            "catalog."
        )
    try:
        query = build_query(runtime, top_k, threshold, filters)
        if query is None:
            return
        answer = answer_for(runtime, query)
    except KNOWN as exc:
        show_error(exc)
        return
    more_pages(runtime, answer)
    results(runtime, answer, count)


def sidebar(runtime: Runtime, count: int) -> tuple[int, float | None, Filters]:
    """Number of results, the score threshold (in the metric's own terms) and the filters."""
    settings = runtime.settings
    with st.sidebar:
        st.header("Search")
        top_k = st.slider("Results", 1, 60, min(settings.search.top_k, 60), key="top_k")
        spec = runtime.index.specs[IMAGE]
        scale = score_scale(spec.distance, spec.size)
        use_threshold = st.checkbox(scale.toggle, key="use_threshold")
        threshold = (
            st.slider(
                scale.label,
                scale.low,
                scale.high,
                scale.default,
                scale.step,
                key=f"threshold_{spec.distance}",
                help=f"Scores are {spec.distance} "
                + (
                    "similarities: higher is closer."
                    if scale.higher_is_better
                    else "distances: lower is closer."
                ),
            )
            if use_threshold
            else None
        )
        st.subheader("Filters")
        filters = filter_controls(runtime, count, "search_")
    return top_k, threshold, filters


def build_query(
    runtime: Runtime, top_k: int, threshold: float | None, filters: Filters
) -> Query | None:
    """The query the page's controls describe (None: nothing asked yet)."""
    left, right = st.columns(2)
    uploads = left.file_uploader(
        "Images like this (one or several)",
        type=UPLOAD_TYPES,
        accept_multiple_files=True,
        key="upload",
        on_change=leave_more_like,
    )
    negatives = right.file_uploader(
        "Not like this (optional)",
        type=UPLOAD_TYPES,
        accept_multiple_files=True,
        key="negative",
        on_change=leave_more_like,
        help="Results are pushed away from these examples (Qdrant's recommend query).",
    )
    link = st.text_input(
        "Or an image URL", key="url", on_change=leave_more_like, placeholder="https://…"
    ).strip()
    text = ""
    if runtime.descriptors.has_text:
        text = st.text_input(
            "Or describe the picture", key="text", on_change=leave_more_like
        ).strip()
    else:
        st.caption(sentence(text_search_off(runtime)))
    examples = len(uploads or ()) + len(negatives or ()) + bool(link)
    strategy = Strategy.AVERAGE_VECTOR
    if examples > 1:
        chosen = st.radio(
            "Combine the examples by",
            [s.value for s in Strategy],  # plain strings: what the session state keeps
            format_func=lambda value: Strategy(value).label,
            horizontal=True,
            key="strategy",
            help="Average vector: one query at the mean of the examples (fast). Best score: "
            "each candidate is scored against every example (slower, follows each example).",
        )
        strategy = Strategy(chosen or strategy)
    more = st.session_state.get("more_like")
    if more:
        return checked_query(
            positive=Examples(ids=(more["id"],)), filters=filters, top_k=top_k, threshold=threshold
        )
    images = tuple(f.getvalue() for f in uploads or ())
    if link:
        images = (*images, fetched(runtime, link))
    if not images and not text and not negatives:
        return None
    return checked_query(
        positive=Examples(images=images),
        negative=Examples(images=tuple(f.getvalue() for f in negatives or ())),
        text=text,
        filters=filters,
        top_k=top_k,
        threshold=threshold,
        strategy=strategy,
    )


def text_search_off(runtime: Runtime) -> str:
    """Why there is no text box, and how to turn text search on."""
    try:
        runtime.descriptors.encode_text("a picture")
    except TextSearchUnavailable as exc:
        return str(exc)
    return "Text search is unavailable."


def fetched(runtime: Runtime, link: str) -> bytes:
    """An example image's bytes from its URL, downloaded once per session (FetchFailed)."""
    held = st.session_state.get("fetched")
    if held is None or held[0] != link:
        held = (link, runtime.search.fetch_image(link))  # the guarded downloader
        st.session_state["fetched"] = held
    return held[1]


def answer_for(runtime: Runtime, query: Query) -> Answer:
    """The query's answer, from this session's cache or searched now."""
    answers: dict[Query, Answer] = st.session_state.setdefault("answers", {})
    answer = answers.get(query)
    if answer is None:
        result = runtime.search.search(query)
        preview = None
        if result.has_verdict and query.images:
            preview = decode_preview(query.images[0], 640)
        while len(answers) >= KEEP_ANSWERS:
            answers.pop(next(iter(answers)))
        answer = answers[query] = Answer(query, [result], preview)
    return answer


def more_pages(runtime: Runtime, answer: Answer) -> None:
    """Fetch the pages "Load more" asked for."""
    while len(answer.pages) < answer.wanted and answer.has_more:
        offset = len(answer.pages) * answer.query.top_k
        try:
            answer.pages.append(runtime.search.search(replace(answer.query, offset=offset)))
        except KNOWN as exc:
            answer.wanted = len(answer.pages)
            show_error(exc)


def load_more(answer: Answer) -> None:
    """The "Load more" button: one more page."""
    answer.wanted = len(answer.pages) + 1


def more_like(pid: str, title: str) -> None:
    """The "More like this" button: the next query is this image's stored vector."""
    st.session_state["more_like"] = {"id": pid, "title": title}


def leave_more_like() -> None:
    """Back to the visitor's own examples."""
    st.session_state.pop("more_like", None)


def results(runtime: Runtime, answer: Answer, count: int) -> None:
    """The More-like-this banner, the verdict (one image), the grid and "Load more"."""
    first = answer.pages[0]
    more = st.session_state.get("more_like")
    if more:
        st.info(
            f"**More like this:** images like “{md(more['title'])}”, ranked by its stored vector."
        )
        st.button("Back to your search", key="back", on_click=leave_more_like)
    if first.has_verdict and answer.preview is not None:
        verdict(runtime, answer.preview, first)
    st.subheader("Most similar images")
    cards = [card for result in answer.pages for card in result.cards]
    if not cards:
        st.write(NO_MATCHES if count else "Nothing to compare with yet.")
    grid(runtime, cards, score_name(first))
    if answer.has_more:
        st.button("Load more", key="load_more", on_click=load_more, args=(answer,))


def verdict(runtime: Runtime, preview: Image.Image, result: SearchResult) -> None:
    """The verdict panel: published before or not, the evidence, side by side, the timeline."""
    found = result.verdict
    original = found.original
    first = found.first_published
    caption = f"Your image ({result.query_width} x {result.query_height})"
    for line in bank_lines(result):  # what the desk already decided comes first
        st.error(f"**{md(line)}**", icon="🚫")
    for warning in result.warnings:
        st.warning(f"**Warning:** {md(warning.message)}", icon="⚠️")
    if original is None:
        st.info(NOT_IN_CATALOG)
        st.image(preview, caption=caption, width=320)
    else:
        if first:
            when = when_published(first)  # its date, else "first seen DATE"
            on = "" if when.startswith("first seen") else "first on "
            source = first.get("source") or title_of(first)
            st.success(f"**Published before:** {on}{md(when)} by {md(source)}")
            link = str(first.get("source_uri") or "")
            if link.startswith(("http://", "https://")):
                st.markdown(f"First publication: [{md(title_of(first))}]({url(link)})")
            elif link:
                st.markdown(f"First publication: {md(link)}")
        changes = result.changes
        st.markdown(f"**{kind_of(found)}** · evidence: {md(evidence_line(found, changes))}")
        shown = preview
        if changes is not None and changes.regions:
            shown = outlined(preview, changes, (result.query_width, result.query_height))
            caption += " · changed regions outlined"
        try:
            stored = runtime.catalog.preview(original.payload)
        except (StoreError, DecodeError):
            log.warning("original of %s unavailable", original.id, exc_info=True)
            stored = None
        in_catalog = f"In the catalog: {title_of(original.payload)}"
        flicker = stored is not None and st.toggle(
            "Compare in place: show the catalog's original where your image is",
            key="flicker",
            help="Switch back and forth to see what differs.",
        )
        left, right = st.columns(2)
        with left:
            if flicker and stored is not None:
                st.image(stored, caption=in_catalog)
            else:
                st.image(shown, caption=caption)
        with right:
            if stored is None:
                st.caption("(the catalog's copy is unavailable)")
            elif flicker:
                st.image(shown, caption=caption)
            else:
                st.image(stored, caption=in_catalog)
        if len(found.members) > 1:
            st.caption(f"{len(found.members)} images in the catalog are this picture.")
        st.markdown("**Timeline** (every place it was published, earliest first)")
        timeline_table(found.timeline)
    provenance(result, original.payload if original else None)
    skipped = skipped_layers(found)
    if skipped:
        st.caption(" · ".join(f"{layer}: {why}" for layer, why in skipped.items()))


def provenance(result: SearchResult, original: dict[str, Any] | None) -> None:
    """What the uploaded file says about itself, beside what the catalog's original said."""
    yours = metadata_rows(result.metadata.as_dict()) if result.metadata else []
    theirs = metadata_rows(original.get("metadata") or {}) if original else []
    st.markdown("**What the file says about itself** (its metadata and Content Credentials)")
    if not yours and not theirs:
        st.caption("Neither file carries metadata or Content Credentials.")
        return
    columns = st.columns(2) if original is not None else [st.container()]
    for column, rows, whose in zip(
        columns, (yours, theirs), ("Your file", "The catalog's original"), strict=False
    ):
        with column:
            st.caption(whose)
            if rows:
                st.table({"field": [r[0] for r in rows], "value": [r[1] for r in rows]})
            else:
                st.write("No metadata.")


def grid(runtime: Runtime, cards: list[Card], scored_by: str) -> None:
    """One card per picture (copies folded under it): thumbnail, score, title, date, links."""
    shown: list[Card] = []
    seen: set[str] = set()
    for folded in cards:  # pages never overlap, but one id must never give two buttons
        if folded.lead.id not in seen:
            seen.add(folded.lead.id)
            shown.append(folded)
    for row_start in range(0, len(shown), COLUMNS):
        columns = st.columns(COLUMNS)
        for column, (rank, folded) in zip(
            columns,
            enumerate(shown[row_start : row_start + COLUMNS], row_start + 1),
            strict=False,
        ):
            with column:
                card(runtime, rank, folded.lead, scored_by)
                if folded.copies:
                    with st.expander(f"{len(folded.copies)} more cop(ies) of this picture"):
                        for match in folded.copies:
                            p = match.payload
                            st.caption(
                                f"{md(title_of(p))} · {md(when_of(p))} · "
                                f"{scored_by} {match.score:.4f}"
                            )


def card(runtime: Runtime, rank: int, match: Match, scored_by: str) -> None:
    """One result."""
    p = match.payload
    thumbnail(runtime, p, match.id)
    mark = f" · {match_mark(match)}" if match_mark(match) else ""
    st.markdown(f"**{rank}. {md(title_of(p))}**  \n{scored_by} {match.score:.4f}{mark}")
    when = p.get("published_at") or p.get("ingested_at")
    if when:
        st.caption(f"{md(str(when))} · {md(str(p.get('source', '')))}")
    if p.get("also_seen"):
        st.caption(f"also seen in {len(p['also_seen'])} other place(s)")
    uri = str(p.get("source_uri", ""))
    if uri.startswith(("http://", "https://")):
        st.markdown(f"[Source]({url(uri)})")
    link = runtime.catalog.original_link(p) if p.get("image_key") else None
    if link:
        st.markdown(f"[Original]({url(link)})")
    with st.container(horizontal=True):
        st.button(
            "More like this",
            key=f"more-{match.id}",
            on_click=more_like,
            args=(match.id, title_of(p)),
            help="Search again from this image's stored vector.",
        )
        view = not link and st.button("View original", key=f"orig-{match.id}")
    if view:
        show_original(runtime, match)


@st.dialog("Original image", width="large")
def show_original(runtime: Runtime, match: Match) -> None:
    """The full-size original with a download button."""
    try:
        data = runtime.catalog.original(match.payload)
    except StoreError as exc:
        st.error(str(exc))
        return
    p = match.payload
    try:
        st.image(decode_image(data).image, caption=title_of(p))
    except DecodeError as exc:
        st.error(f"The original could not be shown: {exc.reason}.")
    name = str(p.get("image_key", "image")).rsplit("/", 1)[-1]
    st.download_button("Download", data, file_name=name, mime=str(p.get("content_type", "")))
