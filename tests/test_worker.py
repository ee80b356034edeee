"""The daily schedule and `imgsearch worker`: trigger, coalescing, job store, CLI and signals."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from app import worker
from app.runtime import Runtime
from app.schedule import JOB_ID, build_scheduler, cron_trigger
from config import Settings
from embed.encoder import Encoder
from tests.conftest import make_settings, open_catalog
from tests.subprocesses import (
    IMGSEARCH,
    child_env,
    state_count,
    state_query,
    wait_for,
    write_images,
)

# Invocations of count_call, the job of the coalescing tests (a module-level function, because
# the persistent job store pickles a reference to the job).
calls: list[datetime] = []
calls_lock = threading.Lock()


def count_call() -> None:
    """A job that only records that it ran."""
    with calls_lock:
        calls.append(datetime.now(UTC))


def call_count() -> int:
    with calls_lock:
        return len(calls)


@pytest.fixture(autouse=True)
def _fresh_worker_state() -> Iterator[None]:
    with calls_lock:
        calls.clear()
    worker.register_runtime(None)
    yield
    worker.stop_in_app_scheduler()


def sigterm_midway(argv: list[str], folder: Path, data: Path) -> tuple[int, str]:
    """Run argv over 150 images, SIGTERM it after its first batches; (exit code, stderr)."""
    write_images(folder, 150)
    child = subprocess.Popen(
        argv,
        env=child_env(data, folder),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: state_count(data, "seen") >= 8, timeout=180, what="the first batches")
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return child.returncode, stderr


def test_a_crontab_line_reads_weekday_numbers_as_cron_does_and_carries_the_jitter() -> None:
    trigger = cron_trigger("0 3 * * 1", "UTC", jitter_s=300)
    sunday = datetime(2026, 1, 4, 12, 0, tzinfo=UTC)
    next_fire = trigger.get_next_fire_time(None, sunday)
    assert next_fire is not None
    monday_3am = datetime(2026, 1, 5, 3, 0, tzinfo=UTC)
    assert monday_3am <= next_fire <= monday_3am + timedelta(seconds=300)
    assert cron_trigger("0 3 * * 0", "UTC").get_next_fire_time(
        None, sunday - timedelta(hours=12)
    ) == datetime(2026, 1, 4, 3, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="5 fields"):
        cron_trigger("0 3 * *", "UTC")


def test_the_job_fires_from_its_trigger_and_ingests_the_declared_sources(
    tmp_path: Path, encoder: Encoder
) -> None:
    folder = tmp_path / "photos"
    write_images(folder, 3)
    settings = make_settings(
        tmp_path / "data", sources=[{"name": "photos", "kind": "folder", "location": str(folder)}]
    )
    runtime = Runtime(settings)
    runtime.encoder = encoder  # the session's model: building another costs seconds
    worker.register_runtime(runtime)
    scheduler = build_scheduler(
        settings, worker.JOB_REF, blocking=False, trigger=IntervalTrigger(seconds=1)
    )
    scheduler.start()
    try:
        finished = wait_for(
            lambda: [r for r in runtime.state.runs() if r.status == "ok"],
            timeout=120,
            what="a scheduled run to finish",
        )
    finally:
        scheduler.shutdown(wait=True)
    first = min(finished, key=lambda r: r.id)
    assert first.report.total().new == 3
    assert runtime.index.count() == 3
    runtime.close()


def test_a_backlog_of_missed_runs_is_coalesced_into_one_run(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    trigger = IntervalTrigger(minutes=1, start_date=datetime(2026, 1, 1, tzinfo=UTC))
    leave_a_missed_run(settings, trigger, missed_at=datetime.now(UTC) - timedelta(minutes=5))

    scheduler = build_scheduler(settings, count_call, blocking=False, trigger=trigger)
    scheduler.start()
    try:
        wait_for(call_count, timeout=20, what="the missed run")
        time.sleep(1.5)  # room for any further (wrong) catch-up runs
        job = scheduler.get_job(JOB_ID)
        assert call_count() == 1
        assert job is not None and job.next_run_time > datetime.now(UTC)
    finally:
        scheduler.shutdown()


def leave_a_missed_run(settings: Settings, trigger: BaseTrigger, missed_at: datetime) -> None:
    """What a worker that died before `missed_at` (five periods ago) left in the job store."""
    # Written through the store, not a scheduler: a scheduler's shutdown processes due jobs
    # once more, which would move the run time on and leave no backlog behind.
    unstarted = build_scheduler(settings, count_call, blocking=False, trigger=trigger)
    job = unstarted.modify_job(JOB_ID, next_run_time=missed_at)
    store = SQLAlchemyJobStore(url=f"sqlite:///{settings.scheduler_db}")
    store.start(unstarted, "default")
    store.add_job(job)
    store.shutdown()


def test_the_job_is_kept_in_the_sqlite_job_store_across_restarts(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", worker={"cron": "0 3 * * *", "jitter_s": 0})
    first = build_scheduler(settings, count_call, blocking=False)
    first.start()
    planned = first.get_job(JOB_ID).next_run_time
    first.shutdown()

    with sqlite3.connect(settings.scheduler_db) as db:
        rows = db.execute("SELECT id, next_run_time FROM apscheduler_jobs").fetchall()
    assert [row[0] for row in rows] == [JOB_ID]
    assert rows[0][1] == pytest.approx(planned.timestamp())

    again = build_scheduler(settings, count_call, blocking=False)
    again.start(paused=True)
    try:
        assert [job.id for job in again.get_jobs()] == [JOB_ID]
        assert again.get_job(JOB_ID).next_run_time == planned
    finally:
        again.shutdown()

    # A changed schedule replaces the stored job (same id) with a freshly planned run.
    changed = make_settings(tmp_path / "data", worker={"cron": "30 4 * * *", "jitter_s": 0})
    replaced = build_scheduler(changed, count_call, blocking=False)
    replaced.start(paused=True)
    try:
        [job] = replaced.get_jobs()
        assert (job.next_run_time.hour, job.next_run_time.minute) == (4, 30)
    finally:
        replaced.shutdown()


def test_the_in_app_scheduler_starts_once_per_process_and_only_for_the_embedded_index(
    tmp_path: Path,
) -> None:
    embedded = Runtime(make_settings(tmp_path / "data"))
    scheduler = worker.start_in_app_scheduler(embedded)
    again = worker.start_in_app_scheduler(embedded)
    assert again is scheduler and scheduler is not None
    assert scheduler.running
    assert scheduler.get_job(JOB_ID) is not None
    worker.stop_in_app_scheduler()
    assert not scheduler.running

    server = make_settings(tmp_path / "data", qdrant={"url": "http://127.0.0.1:9"})
    assert worker.start_in_app_scheduler(Runtime(server)) is None
    opted_out = make_settings(tmp_path / "data", worker={"in_app": "no"})
    assert worker.start_in_app_scheduler(Runtime(opted_out)) is None
    # Nothing above opened the index: the app's process is the only one that may.
    assert "index" not in embedded.__dict__


# The app's process reduced to what matters here: it holds the runtime, runs the schedule in a
# thread, and its main thread ends on SIGTERM (as Streamlit's server does).
IN_APP_PROCESS = """
import signal, sys, threading
from datetime import UTC, datetime
from apscheduler.triggers.date import DateTrigger
from app import worker
from app.runtime import Runtime, configure_logging
from config import get_settings
configure_logging("INFO")
runtime = Runtime(get_settings())
runtime.index.ensure_collection()
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
worker.start_in_app_scheduler(runtime, trigger=DateTrigger(datetime.now(UTC)))
threading.Event().wait()
"""


def test_stopping_the_app_lets_its_scheduled_run_finish_the_batch_and_record_the_run(
    tmp_path: Path,
) -> None:
    folder, data = tmp_path / "photos", tmp_path / "data"
    returncode, stderr = sigterm_midway([sys.executable, "-c", IN_APP_PROCESS], folder, data)
    assert returncode == 0, stderr
    assert state_query(data, "SELECT status FROM runs") == [("interrupted",)]
    seen = {row[0] for row in state_query(data, "SELECT point_id FROM seen")}
    assert 8 <= len(seen) < 150
    index = open_catalog(data / "qdrant", make_settings(data))
    try:
        assert index.existing(sorted(seen)) == seen
    finally:
        index.close()


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [IMGSEARCH, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_worker_once_run_twice_adds_nothing_the_second_time(tmp_path: Path) -> None:
    folder, data = tmp_path / "photos", tmp_path / "data"
    write_images(folder, 5)
    env = child_env(data, folder)

    first = run_cli(env, "worker", "--once")
    assert first.returncode == 0, first.stderr
    assert "new 5," in first.stdout
    second = run_cli(env, "worker", "--once")
    assert second.returncode == 0, second.stderr
    assert "new 0," in second.stdout and "unchanged 5," in second.stdout

    runs = state_query(data, "SELECT status FROM runs ORDER BY id")
    assert runs == [("ok",), ("ok",)]
    index = open_catalog(data / "qdrant", make_settings(data))
    try:
        assert index.count() == 5
    finally:
        index.close()


def test_worker_once_says_in_one_sentence_when_the_index_is_held(tmp_path: Path) -> None:
    folder, data = tmp_path / "photos", tmp_path / "data"
    write_images(folder, 1)
    index = open_catalog(data / "qdrant", make_settings(data))  # as the app would hold it
    try:
        result = run_cli(child_env(data, folder), "worker", "--once")
    finally:
        index.close()
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "is held by process" in last and last.endswith(".")
    assert "Traceback" not in result.stderr


def test_worker_once_without_declared_sources_says_so(tmp_path: Path) -> None:
    result = run_cli(child_env(tmp_path / "data"), "worker", "--once", timeout=60)
    assert result.returncode == 2
    assert "no sources are declared" in result.stderr


def test_sigterm_during_a_long_run_finishes_the_batch_records_the_run_and_exits_0(
    tmp_path: Path,
) -> None:
    folder, data = tmp_path / "photos", tmp_path / "data"
    returncode, stderr = sigterm_midway([IMGSEARCH, "worker", "--once"], folder, data)
    assert returncode == 0, stderr

    [(status,)] = state_query(data, "SELECT status FROM runs")
    assert status == "interrupted"
    seen = {row[0] for row in state_query(data, "SELECT point_id FROM seen")}
    assert 8 <= len(seen) < 150
    index = open_catalog(data / "qdrant", make_settings(data))
    try:
        assert index.existing(sorted(seen)) == seen
        assert index.count() == len(seen)
    finally:
        index.close()
    assert state_count(data, "pending") == 0


def test_worker_idles_when_the_schedule_runs_in_the_apps_process(tmp_path: Path) -> None:
    data = tmp_path / "data"
    child = subprocess.Popen(
        [IMGSEARCH, "worker"],
        env=child_env(data),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = _read_until(child, "runs inside the app's process", timeout=60)
        assert "embedded" in line
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0
    assert not (data / "qdrant").exists()  # it never opened the embedded index


def test_worker_with_a_qdrant_server_runs_the_schedule_and_stops_cleanly_on_sigterm(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    # Nothing listens there: the index is only contacted when the job runs (03:00).
    env = child_env(data, QDRANT__URL="http://127.0.0.1:9")
    child = subprocess.Popen(
        [IMGSEARCH, "worker"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        line = _read_until(child, "scheduled in this worker", timeout=60)
        assert "next run at" in line and "T03:0" in line
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0
    with sqlite3.connect(data / "scheduler.sqlite") as db:
        assert db.execute("SELECT id FROM apscheduler_jobs").fetchall() == [(JOB_ID,)]


def _read_until(child: subprocess.Popen[str], text: str, timeout: float) -> str:
    """The first output line containing text; the read runs in a thread so it can time out."""
    found: list[str] = []

    def read() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            if text in line:
                found.append(line)
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    assert found, f"no line with {text!r} within {timeout} s"
    return found[0]
