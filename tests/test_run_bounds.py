"""Runs that end on time: stop and deadlines reach downloads, feeds are capped, index writes retry.

A stalled server here sends one byte every few seconds, as a hostile or broken host would.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from config import Settings, SourceSettings
from embed.encoder import Encoder
from ingest.http import Downloader
from ingest.items import Cancelled
from ingest.pipeline import Pipeline, mark_stale_runs
from ingest.report import RunFailure, RunReport, SourceReport
from ingest.sources import make_source
from ingest.sources.web import WebSource
from ingest.state import StateStore
from store.images import LocalImageStore
from store.index import IndexUnavailable, VectorIndex
from tests.conftest import image_bytes, make_descriptors, make_settings, open_catalog
from tests.feed_server import FeedServer
from tests.subprocesses import IMGSEARCH, child_env, state_count, state_query, wait_for

COUNTERS = [f.name for f in fields(SourceReport)]

DRIP_S = 1.0  # one byte per second: a download that would take an hour


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as running:
        yield running


def fetch_settings(**fetch: Any) -> dict[str, Any]:
    return {
        "connect_timeout_s": 2.0,
        "read_timeout_s": 10.0,  # longer than a drip: only a cancel ends a stalled body early
        "total_timeout_s": 3600.0,
        "retries": 3,
        "backoff_s": 0.01,
        "allowed_private_hosts": ["127.0.0.1"],
        **fetch,
    }


def rss(server: FeedServer, paths: list[str]) -> str:
    items = "".join(
        f"<item><title>{p}</title><link>{server.url('/news' + p)}</link><guid>{p}</guid>"
        f'<enclosure url="{server.url(p)}" type="image/jpeg" length="1"/></item>'
        for p in paths
    )
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>{items}</channel></rss>'
    )


def in_thread(target: Any) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


# -- the downloader ------------------------------------------------------------------------------
def test_cancel_ends_a_stalled_download_and_allows_no_retry(server: FeedServer) -> None:
    url = server.add("/drip.jpg", image_bytes(1) * 20, "image/jpeg", drip_s=DRIP_S)
    settings = make_settings(Path("."), fetch=fetch_settings()).fetch
    with Downloader(settings) as client:
        thread, errors = in_thread(lambda: client.image(url))
        wait_for(lambda: server.hits("/drip.jpg"), timeout=10, what="the download to start")
        client.cancel()
        thread.join(timeout=15)  # a liveness bound: without the cancel it runs for an hour
        assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], Cancelled)
    assert server.hits("/drip.jpg") == 1  # no retry after the cancel


def test_a_cancel_during_the_backoff_stops_the_retries(server: FeedServer) -> None:
    url = server.add("/down.jpg", b"", "image/jpeg", status=503)
    settings = make_settings(Path("."), fetch=fetch_settings(retries=5, backoff_s=30)).fetch
    with Downloader(settings) as client:
        thread, errors = in_thread(lambda: client.image(url))
        wait_for(lambda: server.hits("/down.jpg"), timeout=10, what="the first attempt")
        client.cancel()
        thread.join(timeout=15)
        assert not thread.is_alive()
    assert isinstance(errors[0], Cancelled)
    assert server.hits("/down.jpg") == 1


# -- the pipeline --------------------------------------------------------------------------------
def make_pipeline(tmp_path: Path, encoder: Encoder, index: Any = None, **over: Any) -> Pipeline:
    settings = make_settings(tmp_path / "data", fetch=fetch_settings(), **over)
    index = index or open_catalog(":memory:", settings)
    state = StateStore(tmp_path / "state.sqlite", backoff_s=0)
    descriptors = make_descriptors(settings, encoder)
    images = LocalImageStore(tmp_path / "images")
    return Pipeline(settings, index, images, descriptors, state)


@pytest.fixture
def stalled_feed(server: FeedServer) -> str:
    for n in range(3):
        server.add(f"/ok{n}.jpg", image_bytes(n), "image/jpeg")
    for n in range(4):
        server.add(f"/drip{n}.jpg", image_bytes(10 + n) * 10, "image/jpeg", drip_s=DRIP_S)
    paths = [f"/ok{n}.jpg" for n in range(3)] + [f"/drip{n}.jpg" for n in range(4)]
    return server.add("/rss.xml", rss(server, paths), "application/rss+xml")


def test_stopping_a_run_cancels_stalled_downloads_and_leaves_them_for_the_next_run(
    tmp_path: Path, encoder: Encoder, server: FeedServer, stalled_feed: str
) -> None:
    pipeline = make_pipeline(tmp_path, encoder)
    settings = pipeline.settings
    stop = threading.Event()
    holder: dict[str, Any] = {}
    source = WebSource("news", stalled_feed, settings.fetch, kind="rss")
    thread, errors = in_thread(lambda: holder.update(report=pipeline.run([source], stop=stop)))
    wait_for(lambda: server.hits("/drip3.jpg"), timeout=30, what="the stalled downloads")
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive() and not errors
    report = holder["report"]
    news = report.sources["news"]
    assert report.status == "interrupted"
    assert (news.new, news.failed, news.postponed) == (3, 0, 4)
    assert pipeline.state.quarantine_list() == []  # stopping is not the items' fault
    assert pipeline.index.count() == 3
    assert sum(server.hits(f"/drip{n}.jpg") for n in range(4)) == 4  # no retries after stop
    [run] = pipeline.state.runs(1)
    assert run.status == "interrupted" and run.report.total().postponed == 4


def test_a_source_that_runs_past_its_deadline_is_cut_and_reported(
    tmp_path: Path, encoder: Encoder, server: FeedServer, stalled_feed: str
) -> None:
    pipeline = make_pipeline(tmp_path, encoder, ingest={"source_deadline_s": 3})
    source = WebSource("news", stalled_feed, pipeline.settings.fetch, kind="rss")
    thread, errors = in_thread(lambda: pipeline.run([source]))
    thread.join(timeout=60)
    assert not thread.is_alive() and not errors
    [run] = pipeline.state.runs(1)
    assert run.status == "timed out"
    deadline = [f for f in run.report.failures if f.stage == "deadline"]
    assert len(deadline) == 1 and "SOURCE_DEADLINE_S" in deadline[0].reason
    assert run.report.sources["news"].postponed == 4
    assert run.report.sources["news"].new == 3
    assert pipeline.state.quarantine_list() == []


def test_a_run_past_its_deadline_leaves_later_sources_for_the_next_run(
    tmp_path: Path, encoder: Encoder, server: FeedServer, stalled_feed: str
) -> None:
    pipeline = make_pipeline(tmp_path, encoder, ingest={"run_deadline_s": 3})
    fetch = pipeline.settings.fetch
    later = server.add("/later.xml", rss(server, ["/ok0.jpg"]), "application/rss+xml")
    report = pipeline.run(
        [WebSource("news", stalled_feed, fetch, kind="rss"), WebSource("later", later, fetch)]
    )
    assert report.status == "timed out"
    assert "later" not in report.sources or report.sources["later"].seen == 0
    stages = [(f.source, f.stage) for f in report.failures]
    assert ("news", "deadline") in stages and ("later", "deadline") in stages


def test_a_feed_with_more_items_than_the_cap_is_read_up_to_the_cap_and_says_so(
    tmp_path: Path, encoder: Encoder, server: FeedServer
) -> None:
    for n in range(5):
        server.add(f"/img{n}.jpg", image_bytes(20 + n), "image/jpeg")
    feed = server.add(
        "/big.xml", rss(server, [f"/img{n}.jpg" for n in range(5)]), "application/rss+xml"
    )
    pipeline = make_pipeline(tmp_path, encoder)
    fetch = pipeline.settings.fetch.model_copy(update={"max_items_per_document": 3})
    report = pipeline.run([WebSource("big", feed, fetch, kind="rss")])
    assert report.sources["big"].seen == 3 and report.sources["big"].new == 3
    assert sum(server.hits(f"/img{n}.jpg") for n in range(3, 5)) == 0
    [note] = [f for f in report.failures if f.stage == "discover"]
    assert "more than 3 items" in note.reason and "MAX_ITEMS_PER_DOCUMENT" in note.reason


class FlakyIndex:
    """The real index, whose first `failures` upserts find the server away (fault injection)."""

    def __init__(self, index: VectorIndex, failures: int) -> None:
        self._index = index
        self.failures = failures
        self.attempts = 0

    def upsert(self, records: Any) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise IndexUnavailable("the Qdrant index at test did not answer (connection refused)")
        self._index.upsert(records)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._index, name)


@pytest.mark.parametrize(("failures", "status"), [(2, "ok"), (3, "failed")])
def test_index_writes_retry_with_backoff_before_the_run_gives_up(
    tmp_path: Path, encoder: Encoder, failures: int, status: str
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for n in range(3):
        (folder / f"{n}.jpg").write_bytes(image_bytes(30 + n))
    settings = make_settings(tmp_path / "data")
    flaky = FlakyIndex(open_catalog(":memory:", settings), failures)
    pipeline = make_pipeline(
        tmp_path, encoder, flaky, ingest={"index_retries": 2, "index_backoff_s": 0.01}
    )
    source = make_source(SourceSettings(name="photos", location=str(folder)), pipeline.settings)
    if status == "ok":
        assert pipeline.run([source]).status == "ok"
        assert flaky.count() == 3
    else:
        with pytest.raises(IndexUnavailable):
            pipeline.run([source])
        [run] = pipeline.state.runs(1)
        assert run.status == "failed" and "did not answer" in (run.report.error or "")
    assert flaky.attempts == min(failures, 2) + 1


def test_runs_left_running_by_a_killed_process_are_marked_interrupted_at_start(
    tmp_path: Path,
) -> None:
    state = StateStore(tmp_path / "state.sqlite")
    run_id = state.start_run(RunReport(started_at="2026-01-01T00:00:00Z"))
    assert mark_stale_runs(tmp_path, state) == 1
    [run] = state.runs(1)
    assert (run.id, run.status) == (run_id, "interrupted")
    state.close()


def test_run_reports_are_stored_as_before_and_old_rows_read_back(tmp_path: Path) -> None:
    state = StateStore(tmp_path / "state.sqlite")
    report = RunReport(started_at="2026-01-01T00:00:00Z", status="ok", duration_s=2.5)
    report.source("news").new = 3
    report.failures.append(RunFailure.of_source("news", "discover", "HTTP 404"))
    run_id = state.start_run(report)
    state.finish_run(run_id, report)
    [stored] = state_rows(state, "SELECT report FROM runs WHERE id=?", run_id)
    assert json.loads(str(stored)) == {
        "started_at": "2026-01-01T00:00:00Z",
        "finished_at": None,
        "duration_s": 2.5,
        "images_per_s": 0.0,
        "status": "ok",
        "error": None,
        "sources": {"news": {**dict.fromkeys(COUNTERS, 0), "new": 3}},
        "failures": [{"source": "news", "key": "", "stage": "discover", "reason": "HTTP 404"}],
        "total": {**dict.fromkeys(COUNTERS, 0), "new": 3},
    }
    # A row written before `postponed` and `error` existed reads back with their defaults.
    old = {
        "started_at": "2025-06-01T03:00:00Z",
        "finished_at": "2025-06-01T03:01:00Z",
        "duration_s": 60.0,
        "images_per_s": 0.5,
        "status": "ok",
        "sources": {"wire": {"seen": 40, "new": 30, "failed": 1, "bytes": 9}},
        "failures": [{"source": "wire", "key": "a.jpg", "stage": "decode", "reason": "bad"}],
        "total": {"seen": 40, "new": 30, "failed": 1, "bytes": 9},
    }
    state_rows(
        state,
        "INSERT INTO runs(started_at, finished_at, status, report) VALUES (?,?,?,?)",
        old["started_at"],
        old["finished_at"],
        "ok",
        json.dumps(old),
    )
    [last, first] = state.runs(2)
    assert first.report == report and first.report.to_dict()["total"]["new"] == 3
    assert (last.report.total().seen, last.report.total().postponed) == (40, 0)
    assert last.report.error is None and last.report.duration_s == 60.0
    assert last.report.failures == [RunFailure("wire", "a.jpg", "decode", "bad")]
    assert last.to_dict()["report"]["sources"]["wire"]["new"] == 30
    state.close()


def state_rows(state: StateStore, sql: str, *args: object) -> list[object]:
    """One column of a query on the state database (what a reader of the file sees)."""
    db = sqlite3.connect(state.path)
    try:
        with db:
            return [row[0] for row in db.execute(sql, args).fetchall()]
    finally:
        db.close()


# -- processes -----------------------------------------------------------------------------------
def test_sigterm_ends_worker_once_within_30_s_while_downloads_stall(
    tmp_path: Path, server: FeedServer, stalled_feed: str
) -> None:
    data = tmp_path / "data"
    env = child_env(
        data,
        SOURCES=json.dumps([{"name": "news", "kind": "rss", "location": stalled_feed}]),
        FETCH__ALLOWED_PRIVATE_HOSTS=json.dumps(["127.0.0.1"]),
        FETCH__READ_TIMEOUT_S="20",
        FETCH__TOTAL_TIMEOUT_S="3600",
    )
    child = subprocess.Popen(
        [IMGSEARCH, "worker", "--once"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: server.hits("/drip3.jpg"), timeout=180, what="the stalled downloads")
        child.send_signal(signal.SIGTERM)
        started = time.monotonic()
        _, stderr = child.communicate(timeout=60)
        took = time.monotonic() - started
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, stderr
    assert took <= 30, f"the worker took {took:.0f} s to stop"  # supervisord kills at 60 s
    assert "Traceback" not in stderr
    assert state_query(data, "SELECT status FROM runs") == [("interrupted",)]
    assert state_count(data, "quarantine") == 0


def in_app_settings(tmp_path: Path, folder: Path) -> Settings:
    return make_settings(
        tmp_path / "data",
        sources=[{"name": "photos", "kind": "folder", "location": str(folder)}],
        worker={"cron": "0 3 1 1 *", "jitter_s": 0, "in_app": "yes"},
    )


def test_run_now_starts_the_scheduled_job_at_once_and_returns(
    tmp_path: Path, encoder: Encoder
) -> None:
    from app import worker
    from app.runtime import Runtime

    folder = tmp_path / "photos"
    folder.mkdir()
    for n in range(3):
        (folder / f"{n}.jpg").write_bytes(image_bytes(40 + n))
    runtime = Runtime(in_app_settings(tmp_path, folder))
    runtime.encoder = encoder  # the session's model: building another costs seconds
    try:
        worker.start_in_app_scheduler(runtime)
        message = worker.request_run(runtime)
        assert message.startswith("The run has started")
        run = wait_for(
            lambda: next((r for r in runtime.state.runs(1) if r.status == "ok"), None),
            timeout=120,
            what="the requested run",
        )
        assert run.report.total().new == 3
        assert runtime.state.pending_run_request() is None
    finally:
        worker.stop_in_app_scheduler()
        runtime.close()


def test_sigterm_ends_the_apps_in_process_run_within_30_s_while_downloads_stall(
    tmp_path: Path, server: FeedServer, stalled_feed: str
) -> None:
    from tests.test_api import start_serve

    data = tmp_path / "data"
    served = start_serve(
        data,
        tmp_path / "serve.log",
        SOURCES=json.dumps([{"name": "news", "kind": "rss", "location": stalled_feed}]),
        FETCH__ALLOWED_PRIVATE_HOSTS=json.dumps(["127.0.0.1"]),
        FETCH__READ_TIMEOUT_S="20",
        FETCH__TOTAL_TIMEOUT_S="3600",
        WORKER__CRON="0 3 1 1 *",
    )
    try:
        StateStore(data / "state.sqlite").request_run()  # what "Run now" on the page does
        wait_for(lambda: server.hits("/drip3.jpg"), timeout=120, what="the stalled downloads")
        served.process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        served.process.wait(timeout=60)
        took = time.monotonic() - started
    finally:
        if served.process.poll() is None:
            served.process.kill()
            served.process.wait()
    log = (tmp_path / "serve.log").read_text()
    assert took <= 30, f"the app took {took:.0f} s to stop"
    assert "Traceback" not in log
    assert state_query(data, "SELECT status FROM runs") == [("interrupted",)]
    assert state_count(data, "quarantine") == 0
