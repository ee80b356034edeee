"""The ingestion pipeline: sources -> (fetch, decode, store in worker threads) -> embed -> upsert.

Fetching, decoding, writing and preprocessing run in a thread pool while the calling thread
embeds full batches, so the encoder, not I/O, sets the pace. Results are taken as they finish;
the catalog is asked once per batch which decoded images it already holds, and only the others
are written and prepared. Every item is recorded as seen only
after its point is upserted, and objects are noted as pending before they are written, so a run
killed at any moment loses nothing, doubles nothing and leaves no orphan behind after the next
run.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
from tqdm import tqdm

from config import Settings
from embed.descriptors import Descriptors
from embed.metadata import MetadataReader
from ingest.decode import Decoder
from ingest.fetch import CANCELLED, fetch
from ingest.items import (
    Cancelled,
    Decoded,
    Failed,
    FetchError,
    Skipped,
    Source,
    SourceItem,
    Stored,
)
from ingest.persist import write_originals
from ingest.report import DEADLINE, DISCOVER, RunFailure, RunReport, SourceReport
from ingest.sightings import record_sighting
from ingest.state import StateStore, iso, utcnow
from ingest.upsert import upsert
from store.images import ImageStore
from store.index import CatalogMismatch, IndexLocked, IndexUnavailable, VectorIndex
from store.keys import point_id

log = logging.getLogger(__name__)
MAX_REPORTED_FAILURES = 500
PROGRESS_EVERY_S = 2.0  # how often a running run's record is updated (the UI shows it)
T = TypeVar("T")


class RunInProgress(RuntimeError):
    """Another ingestion run holds the run lock."""


class Watcher(Protocol):
    """Told of the images each batch adds (the banks' alerts), and when a run has ended."""

    def added(
        self, stored: Sequence[Stored], vectors: Sequence[Mapping[str, np.ndarray]]
    ) -> object:
        """Called after a batch's points are upserted."""

    def finished(self) -> object:
        """Called once a run that was not stopped has been recorded."""


@contextmanager
def run_lock(data_dir: Path) -> Iterator[None]:
    """One run at a time per data dir, across processes; released by the OS if killed."""
    path = data_dir / "ingest.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise RunInProgress(
                "another ingestion run is in progress on this data dir; try again when it ends"
            ) from exc
        yield
    finally:
        os.close(fd)


def mark_stale_runs(data_dir: Path, state: StateStore) -> int:
    """At start-up: runs left "running" by a killed process become interrupted.

    Only when no run is in progress (the run lock is free); returns how many were marked.
    """
    try:
        with run_lock(data_dir):
            stale = state.interrupt_stale_runs()
    except RunInProgress:
        return 0
    if stale:
        log.warning("marked %d run(s) left running by a killed process interrupted", stale)
    return stale


def _submit(pool: ThreadPoolExecutor, work: Callable[[Any], T], arg: Any) -> Future[T]:
    """pool.submit, or the work done here once the interpreter is exiting (SIGTERM in the app):
    then the pool takes nothing new, and an item already decoded still finishes its batch."""
    try:
        return pool.submit(work, arg)
    except RuntimeError:
        future: Future[T] = Future()
        future.set_result(work(arg))
        return future


class _Halt:
    """Ends one source's work when the run is stopped or the source's time is up.

    A watcher thread turns either into `event` and cancels the source's downloads in flight,
    so a stalled server cannot hold the run past its stop or its deadline.
    """

    def __init__(self, stop: threading.Event, deadline: float, cancel: Callable[[], None]) -> None:
        self.stop = stop
        self.deadline = deadline
        self.cancel = cancel
        self.event = threading.Event()
        self.timed_out = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ingest-halt", daemon=True)
        self._thread.start()

    def is_set(self) -> bool:
        return self.event.is_set() or self.stop.is_set()

    def close(self) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._done.is_set():
            remaining = self.deadline - time.monotonic()
            if self.stop.is_set() or remaining <= 0:
                self.timed_out = not self.stop.is_set()
                self.event.set()
                self.cancel()
                return
            self._done.wait(min(0.25, remaining))


@dataclass
class _Batch:
    stored: list[Stored]
    followers: list[Stored]  # same image again in this batch: marked seen when it lands
    decoded: list[Decoded] = field(default_factory=list)  # awaiting one existence check
    # Listing order of the items in flight: results arrive as they finish, but which place of
    # an image comes first (its main record, when no place has a date) follows the listing.
    order: dict[tuple[str, str], int] = field(default_factory=dict)

    def rank(self, item: SourceItem) -> int:
        return self.order.get((item.source, item.key), 0)

    def in_listing_order(self) -> None:
        """Re-pick each image's first place by listing order; the others follow it."""
        everyone = sorted(self.stored + self.followers, key=lambda s: self.rank(s.item))
        first: dict[str, Stored] = {}
        for stored in everyone:
            first.setdefault(stored.image.sha256, stored)
        self.stored = list(first.values())
        self.followers = [s for s in everyone if first[s.image.sha256] is not s]


class Pipeline:
    """Runs sources through the stages; build once, run many times."""

    def __init__(
        self,
        settings: Settings,
        index: VectorIndex,
        images: ImageStore,
        descriptors: Descriptors,
        state: StateStore,
        metadata: MetadataReader | None = None,
        watcher: Watcher | None = None,
    ) -> None:
        self.settings = settings
        self.watcher = watcher
        self.index = index
        self.images = images
        self.descriptors = descriptors
        self.state = state
        self.decode = Decoder.from_settings(settings, metadata)
        self._run_id: int | None = None
        self._last_progress = 0.0

    # -- public -------------------------------------------------------------------------------
    def run(
        self,
        sources: Sequence[Source],
        *,
        stop: threading.Event | None = None,
        progress: bool = False,
        on_failure: Callable[[Failed], None] | None = None,
    ) -> RunReport:
        """Ingest every source once; raises IndexUnavailable or RunInProgress if it cannot run."""
        stop = stop or threading.Event()
        started = time.monotonic()
        deadline = started + self.settings.ingest.run_deadline_s
        report = RunReport(started_at=iso(utcnow()))
        with self._run_lock():
            # Holding the run lock, any run still "running" was left by a killed process.
            stale = self.state.interrupt_stale_runs()
            if stale:
                log.warning("marked %d run(s) left running by a killed process interrupted", stale)
            self.index.ensure_collection()
            run_id = self._run_id = self.state.start_run(report)
            try:
                self.reconcile()
                workers = max(2, min(self.settings.fetch.concurrency, 32))
                with (
                    ThreadPoolExecutor(workers, thread_name_prefix="ingest") as pool,
                    tqdm(disable=not progress, unit="img", dynamic_ncols=True) as bar,
                ):
                    for source in sources:
                        if stop.is_set():
                            break
                        if time.monotonic() >= deadline:
                            report.status = "timed out"
                            reason = (
                                "not started: the run's time "
                                f"({self.settings.ingest.run_deadline_s:g} s, "
                                "IMGSEARCH_INGEST__RUN_DEADLINE_S) was spent; next run"
                            )
                            report.failures.append(
                                RunFailure.of_source(source.name, DEADLINE, reason)
                            )
                            continue
                        self._run_source(source, pool, report, stop, bar, on_failure, deadline)
                if stop.is_set():
                    report.status = "interrupted"
                elif report.status == "running":
                    report.status = "ok"
            except IndexUnavailable as exc:
                report.status, report.error = "failed", str(exc)
                raise
            except BaseException as exc:  # recorded whatever ended the run, then re-raised
                report.status = "failed"
                report.error = f"{type(exc).__name__}: {exc}".strip()
                raise
            finally:
                report.finished_at = iso(utcnow())
                report.duration_s = round(time.monotonic() - started, 3)
                new = report.total().new
                report.images_per_s = round(new / report.duration_s, 2) if report.duration_s else 0
                self.state.finish_run(run_id, report)
                self._run_id = None
                log.info("ingest run %s %s: %s", run_id, report.status, report.summary())
        if not stop.is_set():
            self._watch(lambda w: w.finished())
        return report

    def reconcile(self) -> int:
        """Remove objects written by an interrupted run whose points never landed."""
        removed = 0
        self.images.sweep_temp()  # half-written files of a killed write
        for sha256, pid, keys in self.state.pending():
            if not self.index.existing([pid]):
                for key in keys:
                    self.images.delete(key)
                removed += 1
            self.state.clear_pending([sha256])
        if removed:
            log.info("reconciled %d interrupted writes (objects without points removed)", removed)
        return removed

    # -- internals ----------------------------------------------------------------------------
    def _run_lock(self) -> AbstractContextManager[None]:
        return run_lock(Path(self.settings.data_dir))

    def _prepare(self, item: SourceItem, halt: _Halt) -> Decoded | Failed:
        """Worker thread: one item through fetch -> decode; never raises for the item."""
        if halt.is_set():  # queued before the stop: leave it for the next run
            return Failed(item, CANCELLED, "the run stopped before this item was fetched")
        try:
            return self._prepare_item(item)
        except IndexUnavailable:
            raise  # the run itself cannot proceed
        except Exception as exc:  # one bad item must never stop the run; the log keeps the trace
            log.exception("unexpected error on %s", item.meta.source_uri)
            return Failed(item, "internal", f"{type(exc).__name__}: {exc}")

    def _prepare_item(self, item: SourceItem) -> Decoded | Failed:
        fetched = fetch(item)
        if isinstance(fetched, Failed):
            return fetched
        return self.decode(fetched)

    def _store(self, decoded: Decoded) -> Stored | Failed:
        """Worker thread: write original and thumbnail, prepare descriptors; never raises."""
        try:
            return write_originals(
                decoded,
                self.images,
                self.state,
                self.descriptors.prepare,
                self.settings.storage.thumbnail_px,
            )
        except Exception as exc:  # one bad item must never stop the run; the log keeps the trace
            log.exception("unexpected error on %s", decoded.item.meta.source_uri)
            return Failed(decoded.item, "internal", f"{type(exc).__name__}: {exc}")

    def _take(
        self,
        in_flight: set[Future[Decoded | Stored | Failed]],
        pool: ThreadPoolExecutor,
        batch: _Batch,
        counts: SourceReport,
        report: RunReport,
        on_failure: Callable[[Failed], None] | None,
        bar: tqdm,
    ) -> None:
        """Handle the results that are ready, in the order they finish (never the oldest first).

        Decoded images wait for one existence check per batch; only those not yet in the
        catalog are stored and prepared (back on the pool), the others are sightings.
        """
        if in_flight:
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                in_flight.discard(future)
                result = future.result()
                self._handle(result, batch, counts, report, on_failure)
                if isinstance(result, Failed):
                    batch.order.pop((result.item.source, result.item.key), None)
                if not isinstance(result, Decoded):
                    bar.update(1)
        if batch.decoded and (
            len(batch.decoded) >= self.settings.embed.batch_size or not in_flight
        ):
            decoded = sorted(batch.decoded, key=lambda d: batch.rank(d.item))
            batch.decoded = []
            ids = [point_id(d.image.sha256) for d in decoded]
            landed = self._index_write(self.index.existing, list(dict.fromkeys(ids)))
            for item, pid in zip(decoded, ids, strict=True):
                if pid in landed:
                    batch.order.pop((item.item.source, item.item.key), None)
                    known = Skipped(item.item, item.image.sha256, pid, item.image.nbytes)
                    self._handle(known, batch, counts, report, on_failure)
                    bar.update(1)
                else:
                    in_flight.add(_submit(pool, self._store, item))

    def _run_source(
        self,
        source: Source,
        pool: ThreadPoolExecutor,
        report: RunReport,
        stop: threading.Event,
        bar: tqdm,
        on_failure: Callable[[Failed], None] | None,
        run_deadline: float,
    ) -> None:
        counts = report.source(source.name)
        batch = _Batch([], [])
        in_flight: set[Future[Decoded | Stored | Failed]] = set()
        limit = max(2 * self.settings.embed.batch_size, 2 * self.settings.fetch.concurrency)
        budget = self.settings.ingest.source_deadline_s
        halt = _Halt(stop, min(run_deadline, time.monotonic() + budget), source.cancel)
        try:
            for item in source.discover():
                if halt.is_set():
                    break
                counts.seen += 1
                if not self._due(item, counts):
                    bar.update(1)
                    continue
                batch.order[(item.source, item.key)] = counts.seen
                in_flight.add(pool.submit(self._prepare, item, halt))
                while len(in_flight) >= limit:
                    self._take(in_flight, pool, batch, counts, report, on_failure, bar)
        except Cancelled:
            pass  # stopped or out of time while listing: said below
        except (FetchError, OSError) as exc:
            reason = (exc.reason if isinstance(exc, FetchError) else "") or str(exc)
            log.warning("source %s could not be listed: %s", source.name, reason)
            report.failures.append(RunFailure.of_source(source.name, DISCOVER, reason))
        except IndexUnavailable:
            raise
        except Exception as exc:  # a parser bug in one source must not stop the others
            log.exception("source %s failed while listing", source.name)
            reason = f"{type(exc).__name__}: {exc}"
            report.failures.append(RunFailure.of_source(source.name, DISCOVER, reason))
        finally:
            # Finish what was started even when stopping: those items are already fetched.
            while in_flight or batch.decoded:
                self._take(in_flight, pool, batch, counts, report, on_failure, bar)
            halt.close()
            self._flush(batch, counts)
            for warning in source.warnings():
                report.failures.append(RunFailure.of_source(source.name, DISCOVER, warning))
            if halt.timed_out:
                whose = "run's" if run_deadline <= halt.deadline else "source's"
                log.warning("source %s: out of time; the rest waits for the next run", source.name)
                report.status = "timed out"
                reason = (
                    f"stopped when the {whose} time was up "
                    "(IMGSEARCH_INGEST__SOURCE_DEADLINE_S, IMGSEARCH_INGEST__RUN_DEADLINE_S); "
                    "the rest waits for the next run"
                )
                report.failures.append(RunFailure.of_source(source.name, DEADLINE, reason))
            self._save_progress(report, force=True)
            source.close()  # web sources hold an HTTP client
            bar.set_postfix(new=counts.new, dup=counts.duplicate, failed=counts.failed)

    def _due(self, item: SourceItem, counts: SourceReport) -> bool:
        if self.state.seen_version(item.source, item.key) == item.version:
            counts.unchanged += 1
            return False
        entry = self.state.quarantined(item.source, item.key)
        if entry is not None:
            if not self.state.due(entry, item.version):
                counts.deferred += 1
                return False
            counts.retried += 1
        return True

    def _handle(
        self,
        result: Decoded | Stored | Skipped | Failed,
        batch: _Batch,
        counts: SourceReport,
        report: RunReport,
        on_failure: Callable[[Failed], None] | None,
    ) -> None:
        self._save_progress(report)
        if isinstance(result, Decoded):
            batch.decoded.append(result)  # _take checks the catalog for a batch at once
            return
        if isinstance(result, Failed) and result.stage == CANCELLED:
            counts.postponed += 1  # not quarantined, not seen: the next run fetches it
            return
        if isinstance(result, Failed):
            counts.failed += 1
            item = result.item
            self.state.quarantine(
                item.source,
                item.key,
                item.version,
                item.meta.source_uri,
                result.stage,
                result.reason,
                result.retryable,
            )
            if len(report.failures) < MAX_REPORTED_FAILURES:
                report.failures.append(RunFailure.of_item(result))
            log.warning("failed %s (%s): %s", item.meta.source_uri, result.stage, result.reason)
            if on_failure:
                on_failure(result)
            return
        if isinstance(result, Skipped):
            counts.duplicate += 1
            counts.bytes += result.nbytes
            item = result.item
            # Where an image appears matters as much as the image: keep every other place.
            self._index_write(record_sighting, self.index, result.point_id, item)
            self.state.mark_seen(
                item.source, item.key, item.version, result.sha256, result.point_id
            )
            return
        counts.bytes += result.image.nbytes
        if any(s.image.sha256 == result.image.sha256 for s in batch.stored):
            counts.duplicate += 1
            batch.followers.append(result)
            return
        batch.stored.append(result)
        if len(batch.stored) >= self.settings.embed.batch_size:
            self._flush(batch, counts)

    def _flush(self, batch: _Batch, counts: SourceReport) -> None:
        if not batch.stored:
            return
        batch.in_listing_order()
        for stored in batch.stored + batch.followers:
            batch.order.pop((stored.item.source, stored.item.key), None)
        # A worker may have found an image absent before an earlier batch of this run landed it:
        # upserting it again would replace that first place's payload, so it is a sighting.
        landed = self._index_write(self.index.existing, [s.point_id for s in batch.stored])
        fresh = [s for s in batch.stored if s.point_id not in landed]
        again = [s for s in batch.stored if s.point_id in landed]
        if fresh:
            vectors = self.descriptors.compute([s.prepared for s in fresh])
            self._index_write(
                upsert, fresh, vectors, self.descriptors.labels, self.index, self.state
            )
            self._watch(lambda w: w.added(fresh, vectors))
        for follower in again + batch.followers:
            # The same image under another key: its point has landed, so it is seen now.
            item = follower.item
            self._index_write(record_sighting, self.index, follower.point_id, item)
            self.state.mark_seen(
                item.source, item.key, item.version, follower.image.sha256, follower.point_id
            )
        # Their objects were rewritten under the same content addresses: nothing to remove.
        self.state.clear_pending([s.image.sha256 for s in again])
        counts.new += len(fresh)
        counts.duplicate += len(again)
        batch.stored.clear()
        batch.followers.clear()

    def _watch(self, call: Callable[[Watcher], object]) -> None:
        """Tell the watcher; its failure is logged and never stops the run."""
        if self.watcher is None:
            return
        try:
            call(self.watcher)
        except Exception:
            log.exception("the ingestion watcher (bank alerts) failed; the run goes on")

    def _index_write(self, operation: Callable[..., T], *args: object) -> T:
        """Run an index operation, trying again with backoff while the index does not answer."""
        retries = self.settings.ingest.index_retries
        for attempt in range(retries + 1):
            try:
                return operation(*args)
            except (IndexLocked, CatalogMismatch):
                raise  # waiting will not change these
            except IndexUnavailable as exc:
                if attempt == retries:
                    raise
                pause = self.settings.ingest.index_backoff_s * 2**attempt
                log.warning(
                    "the index did not answer (%s); trying again in %.1f s (%d/%d)",
                    exc,
                    pause,
                    attempt + 1,
                    retries,
                )
                time.sleep(pause)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _save_progress(self, report: RunReport, *, force: bool = False) -> None:
        """Update the running run's record now and then, so the UI can show progress."""
        now = time.monotonic()
        if self._run_id is None or (not force and now - self._last_progress < PROGRESS_EVERY_S):
            return
        self._last_progress = now
        self.state.update_run(self._run_id, report)
