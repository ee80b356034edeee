"""Streamlit UI: upload an image, see whether it is in the catalog and what looks like it.

Widgets and layout only; everything else lives in the core (search, ingest, store).
Run with `imgsearch serve`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any
from urllib.parse import quote

import streamlit as st

from app.runtime import Runtime, configure_logging
from config import Settings, get_settings
from embed.decode import DecodedImage, DecodeError, decode_image
from embed.encoder import WeightsUnavailable
from embed.sscd import SscdUnavailable
from ingest.pipeline import RunInProgress
from search.service import Match, SearchResult
from store.images import StoreError
from store.index import IndexUnavailable

log = logging.getLogger("imgsearch.ui")
UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"]
COLUMNS = 4


def settings_key(settings: Settings) -> str:
    """A cache key for settings: their JSON, with each secret as a digest (JSON masks it)."""
    secret = settings.qdrant.api_key.get_secret_value() if settings.qdrant.api_key else ""
    digest = hashlib.sha256(secret.encode()).hexdigest()
    return f"{settings.model_dump_json()}|{digest}"


@st.cache_resource(show_spinner="Loading the model and opening the index…")
def get_runtime(key: str, _settings: Settings) -> Runtime:
    """One Runtime per process and settings: model and index load once.

    The Settings object itself is used (never a JSON round trip: JSON masks secrets such as the
    Qdrant API key); `key` stands for it in Streamlit's cache.
    """
    settings = _settings
    configure_logging(settings.log_level)
    from app.worker import registered_runtime

    shared = registered_runtime()  # built by `imgsearch serve` for the in-app schedule
    if shared is not None and settings_key(shared.settings) == key:
        return shared
    runtime = Runtime(settings)
    runtime.index.ensure_collection()
    _ = runtime.descriptors  # loads the models and checks them against the catalog's
    try:
        from app.worker import start_in_app_scheduler
    except ModuleNotFoundError:  # the worker feature is optional for the UI
        return runtime
    start_in_app_scheduler(runtime)
    return runtime


def main() -> None:
    """Render the page."""
    st.set_page_config(page_title="imgsearch", page_icon="🔎", layout="wide")
    st.title("imgsearch")
    st.caption("Have we seen this image, or ones like it, and where?")
    settings = get_settings()
    try:
        runtime = get_runtime(settings_key(settings), settings)
        count = runtime.search.count()
    except (IndexUnavailable, WeightsUnavailable, SscdUnavailable, StoreError) as exc:
        log.exception("start-up failed")
        st.error(str(exc))
        st.stop()
        return
    if runtime.encoder.is_random:
        st.warning(
            "Demo mode: the encoder uses random weights (IMGSEARCH_EMBED__WEIGHTS=random). "
            "The copy verdict is reliable (its hashes and geometric checks need no weights), "
            "but similarity scores mean nothing."
        )
    search_tab, runs_tab = st.tabs(["Search", "Ingestion"])
    with search_tab:
        search_page(runtime, count)
    with runs_tab:
        runs_page(runtime)


def search_page(runtime: Runtime, count: int) -> None:
    """Upload, verdict and result grid."""
    settings = runtime.settings
    with st.sidebar:
        st.header("Search")
        top_k = st.slider("Results", 1, 60, min(settings.search.top_k, 60), key="top_k")
        use_threshold = st.checkbox("Only show scores above a minimum", key="use_threshold")
        threshold = (
            st.slider("Minimum score", 0.0, 1.0, 0.5, 0.01, key="threshold")
            if use_threshold
            else None
        )
        st.metric("Images in the catalog", f"{count:,}")
    if count == 0:
        st.info(
            "The catalog is empty. Add images with `imgsearch ingest PATH` (a folder, an "
            "`s3://bucket/prefix` or a feed URL), or run `make run` to build the demo catalog."
        )
    upload = st.file_uploader("Upload an image", type=UPLOAD_TYPES, key="upload")
    if upload is None:
        return
    try:
        query = decode_image(upload.getvalue())
        result = _search(runtime, query, top_k, threshold)
    except DecodeError as exc:
        st.error(f"This file could not be read as an image: {exc.reason}.")
        return
    except (IndexUnavailable, StoreError) as exc:
        log.exception("search failed")
        st.error(str(exc))
        return
    verdict(runtime, query, result)
    st.subheader("Most similar images")
    if not result.matches:
        st.write("No similar images found." if count else "Nothing to compare with yet.")
    grid(runtime, result)


def _search(
    runtime: Runtime, query: DecodedImage, top_k: int, threshold: float | None
) -> SearchResult:
    # Reruns (a click on "View original") must not embed the same upload again.
    key = (query.sha256, top_k, threshold)
    cache: dict[Any, SearchResult] = st.session_state.setdefault("results", {})
    if key not in cache:
        cache.clear()
        cache[key] = runtime.search.search_image(query, top_k=top_k, threshold=threshold)
    return cache[key]


def verdict(runtime: Runtime, query: DecodedImage, result: SearchResult) -> None:
    """The verdict panel: published before or not, the evidence, side by side, the timeline."""
    found = result.verdict
    original = found.original
    first = found.first_published
    if original is None:
        st.info("Not in the catalog: no copy of this picture has been seen before.")
        st.image(query.image, caption=f"Your image ({query.width} x {query.height})", width=320)
    else:
        if first:
            when = first.get("published_at") or f"first seen {first.get('first_seen') or '?'}"
            source = first.get("source") or _title(first)
            st.success(f"**Published before:** first on {_md(when)} by {_md(source)}")
            link = str(first.get("source_uri") or "")
            if link.startswith(("http://", "https://")):
                st.markdown(f"First publication: [{_md(_title(first))}]({_url(link)})")
            elif link:
                st.markdown(f"First publication: {_md(link)}")
        kind = "Same file" if found.kind == "exact" else "Edited copy"
        st.markdown(f"**{kind}** · evidence: {original.evidence.text}")
        left, right = st.columns(2)
        with left:
            st.image(query.image, caption=f"Your image ({query.width} x {query.height})")
        with right:
            try:
                st.image(
                    runtime.search.preview(original.payload),
                    caption=f"In the catalog: {_title(original.payload)}",
                )
            except (StoreError, DecodeError):
                log.warning("original of %s unavailable", original.id, exc_info=True)
                st.caption("(the catalog's copy is unavailable)")
        if len(found.members) > 1:
            st.caption(f"{len(found.members)} images in the catalog are this picture.")
        st.markdown("**Timeline** (every place it was published, earliest first)")
        st.dataframe(
            [
                {
                    "published": place.get("published_at") or "",
                    "first seen": place.get("first_seen") or "",
                    "title": place.get("title") or "",
                    "source": place.get("source") or "",
                    "link": place.get("source_uri") or "",
                }
                for place in found.timeline
            ],
            hide_index=True,
            column_config={"link": st.column_config.LinkColumn("link")},
        )
    skipped = {k: v for k, v in found.layers.items() if not v.startswith("ran")}
    if skipped:
        st.caption(" · ".join(f"{layer}: {why}" for layer, why in skipped.items()))


def grid(runtime: Runtime, result: SearchResult) -> None:
    """One card per picture (copies folded under it): thumbnail, score, title, date, links."""
    for row_start in range(0, len(result.cards), COLUMNS):
        columns = st.columns(COLUMNS)
        for column, (rank, folded) in zip(
            columns,
            enumerate(result.cards[row_start : row_start + COLUMNS], row_start + 1),
            strict=False,
        ):
            with column:
                card(runtime, rank, folded.lead, result.higher_is_better)
                if folded.copies:
                    with st.expander(f"{len(folded.copies)} more cop(ies) of this picture"):
                        for match in folded.copies:
                            p = match.payload
                            when = p.get("published_at") or p.get("ingested_at") or ""
                            st.caption(f"{_md(_title(p))} · {_md(when)} · score {match.score:.4f}")


def card(runtime: Runtime, rank: int, match: Match, higher_is_better: bool) -> None:
    """One result."""
    p = match.payload
    try:
        st.image(runtime.search.thumbnail(match), width="stretch")
    except StoreError:
        log.warning("thumbnail missing for %s", match.id, exc_info=True)
        st.caption("(thumbnail unavailable)")
    label = "score" if higher_is_better else "distance"
    exact = " · same file" if match.exact else " · edited copy" if match.copy else ""
    st.markdown(f"**{rank}. {_md(_title(p))}**  \n{label} {match.score:.4f}{exact}")
    when = p.get("published_at") or p.get("ingested_at")
    if when:
        st.caption(f"{_md(str(when))} · {_md(str(p.get('source', '')))}")
    if p.get("also_seen"):
        st.caption(f"also seen in {len(p['also_seen'])} other place(s)")
    uri = str(p.get("source_uri", ""))
    if uri.startswith(("http://", "https://")):
        st.markdown(f"[Source]({_url(uri)})")
    link = runtime.search.original_link(match)
    if link:
        st.markdown(f"[Original]({_url(link)})")
    elif st.button("View original", key=f"orig-{match.id}"):
        show_original(runtime, match)


@st.dialog("Original image", width="large")
def show_original(runtime: Runtime, match: Match) -> None:
    """The full-size original with a download button."""
    try:
        data = runtime.search.original(match)
    except StoreError as exc:
        st.error(str(exc))
        return
    p = match.payload
    try:
        st.image(decode_image(data).image, caption=_title(p))
    except DecodeError as exc:
        st.error(f"The original could not be shown: {exc.reason}.")
    name = str(p.get("image_key", "image")).rsplit("/", 1)[-1]
    st.download_button("Download", data, file_name=name, mime=str(p.get("content_type", "")))


def runs_page(runtime: Runtime) -> None:
    """Recent runs, the quarantine, and a button to run the daily job now."""
    st.subheader("Daily ingestion")
    sources = runtime.settings.sources
    if sources:
        st.write("Declared sources: " + ", ".join(f"`{s.name}` ({s.location})" for s in sources))
    else:
        st.write("No sources are declared (IMGSEARCH_SOURCES); the daily job has nothing to do.")
    if st.button("Run now", disabled=not sources, key="run_now"):
        run_now(runtime)
    runs = runtime.state.runs(20)
    st.markdown("**Recent runs**")
    if runs:
        st.dataframe(
            [
                {
                    "run": r.id,
                    "started": r.started_at,
                    "status": r.status,
                    **{
                        k: r.report.get("total", {}).get(k, 0)
                        for k in ("seen", "new", "unchanged", "duplicate", "failed", "retried")
                    },
                    "seconds": r.report.get("duration_s", 0),
                    "images/s": r.report.get("images_per_s", 0),
                }
                for r in runs
            ],
            hide_index=True,
        )
    else:
        st.caption("No runs yet.")
    entries = runtime.state.quarantine_list()
    st.markdown(f"**Quarantine** ({len(entries)} item(s))")
    if entries:
        st.dataframe(
            [
                {
                    "source": e.source,
                    "item": e.uri,
                    "stage": e.stage,
                    "reason": e.reason,
                    "attempts": e.attempts,
                    "first seen": e.first_seen,
                    "last seen": e.last_seen,
                    "next attempt": e.next_attempt,
                }
                for e in entries
            ],
            hide_index=True,
        )


def run_now(runtime: Runtime) -> None:
    """Run the daily job in this process and report the result."""
    try:
        from app.worker import run_job
    except ModuleNotFoundError:
        st.error("The ingestion worker is not installed in this build.")
        return
    try:
        with st.spinner("Ingesting…"):
            report = run_job(runtime)
    except RunInProgress as exc:
        st.warning(str(exc))
        return
    except IndexUnavailable as exc:
        log.exception("run now failed")
        st.error(str(exc))
        return
    st.success(f"Run finished: {report.summary()}")


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$])")


def _md(text: object) -> str:
    """Text from a feed or file, shown literally: Markdown and HTML characters escaped."""
    return _MARKDOWN.sub(r"\\\1", str(text)).replace("\n", " ")


def _url(link: str) -> str:
    """A link target that cannot break out of Markdown's (...)."""
    return quote(link, safe=":/?#@!$&'*+,;=%~-._")


def _title(payload: dict[str, Any]) -> str:
    if payload.get("title"):
        return str(payload["title"])
    uri = str(payload.get("source_uri") or "")
    return uri.rstrip("/").rsplit("/", 1)[-1] or str(payload.get("sha256", "?"))[:12]


main()
