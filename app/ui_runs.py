"""The Ingestion page: declared sources, "Run now", the run in progress, runs and quarantine."""

from __future__ import annotations

import sqlite3
from typing import Any

import streamlit as st

from app.runtime import Runtime
from app.ui_common import log
from app.worker import request_run


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


def _quarantine(entries: list[Any]) -> None:
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
        total = run.report.get("total", {})
        counts = ", ".join(
            f"{total.get(k, 0)} {k}" for k in ("seen", "new", "duplicate", "unchanged", "failed")
        )
        st.info(f"Run {run.id} in progress since {run.started_at}: {counts}.")
    else:
        requested = runtime.state.pending_run_request()
        if requested:
            st.caption(f"A run was requested at {requested}; waiting for the worker to start it.")
    _runs_table(runs)


def _runs_table(runs: list[Any]) -> None:
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
                        for k in (
                            "seen",
                            "new",
                            "unchanged",
                            "duplicate",
                            "failed",
                            "retried",
                            "postponed",
                        )
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
