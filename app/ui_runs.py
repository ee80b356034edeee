"""The Ingestion page: declared sources, "Run now", the run in progress, runs and quarantine."""

from __future__ import annotations

import sqlite3
from dataclasses import asdict

import streamlit as st

from app.runtime import Runtime
from app.ui_common import log
from app.worker import request_run
from ingest.state import QuarantineEntry, RunRecord

# The counters the runs table shows, in its column order.
RUN_COLUMNS = ("seen", "new", "unchanged", "duplicate", "failed", "retried", "postponed")


def page(runtime: Runtime) -> None:
    """Recent runs, the quarantine, and a button to run the daily job now."""
    st.subheader("Daily ingestion")
    sources = runtime.settings.sources
    if sources:
        st.write("Declared sources: " + ", ".join(f"`{s.name}` ({s.location})" for s in sources))
    else:
        st.write("No sources are declared (IMGSEARCH_SOURCES); the daily job has nothing to do.")
    if st.button("Run now", disabled=not sources, key="run_now"):
        run_now(runtime)
    progress(runtime)
    _quarantine(runtime.state.quarantine_list())


def _quarantine(entries: list[QuarantineEntry]) -> None:
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
    """Ask the schedule to run the daily job now; returns at once (progress shows below)."""
    try:
        st.info(request_run(runtime))
    except sqlite3.Error:  # the state database is locked or unreadable
        log.exception("run now failed")
        st.error("The run could not be requested; the log has the details.")


@st.fragment(run_every=2)
def progress(runtime: Runtime) -> None:
    """Recent runs, refreshed every 2 s: the one in progress, or a request still waiting."""
    runs = runtime.state.runs(20)
    if runs and runs[0].status == "running":
        run = runs[0]
        total = run.report.total()
        counts = (
            f"{total.seen} seen, {total.new} new, {total.duplicate} duplicate, "
            f"{total.unchanged} unchanged, {total.failed} failed"
        )
        st.info(f"Run {run.id} in progress since {run.started_at}: {counts}.")
    else:
        requested = runtime.state.pending_run_request()
        if requested:
            st.caption(f"A run was requested at {requested}; waiting for the worker to start it.")
    _runs_table(runs)


def _runs_table(runs: list[RunRecord]) -> None:
    st.markdown("**Recent runs**")
    if runs:
        st.dataframe([_run_row(r) for r in runs], hide_index=True)
    else:
        st.caption("No runs yet.")


def _run_row(run: RunRecord) -> dict[str, object]:
    total = asdict(run.report.total())
    return {
        "run": run.id,
        "started": run.started_at,
        "status": run.status,
        **{k: total[k] for k in RUN_COLUMNS},
        "seconds": run.report.duration_s,
        "images/s": run.report.images_per_s,
    }
