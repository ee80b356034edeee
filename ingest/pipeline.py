"""The ingestion pipeline: sources -> (fetch, decode, store in worker threads) -> embed -> upsert.

Fetching, decoding, writing and preprocessing run in a thread pool while the calling thread
embeds full batches, so the encoder, not I/O, sets the pace. Every item is recorded as seen only
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
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from config import Settings
from embed.descriptors import Descriptors
from ingest.decode import decode
from ingest.fetch import fetch
from ingest.items import Decoded, Failed, FetchError, Skipped, Source, SourceItem, Stored
from ingest.persist import store
from ingest.report import RunReport, SourceReport
from ingest.sightings import record_sighting
from ingest.state import StateStore, iso, utcnow
from ingest.upsert import upsert
from store.images import ImageStore
from store.index import IndexUnavailable, VectorIndex
from store.keys import point_id

log = logging.getLogger(__name__)
MAX_REPORTED_FAILURES = 500


class RunInProgress(RuntimeError):
    """Another ingestion run holds the run lock."""


@dataclass
class _Batch:
    stored: list[Stored]
    followers: list[Stored]  # same image again in this batch: marked seen when it lands


class Pipeline:
    """Runs sources through the stages; build once, run many times."""

    def __init__(
        self,
        settings: Settings,
        index: VectorIndex,
        images: ImageStore,
        descriptors: Descriptors,
        state: StateStore,
    ) -> None:
        self.settings = settings
        self.index = index
        self.images = images
        self.descriptors = descriptors
        self.state = state

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
        report = RunReport(started_at=iso(utcnow()))
        with self._run_lock():
            # Holding the run lock, any run still "running" was left by a killed process.
            stale = self.state.interrupt_stale_runs()
            if stale:
                log.warning("marked %d run(s) left running by a killed process interrupted", stale)
            self.index.ensure_collection()
            run_id = self.state.start_run(report.as_dict())
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
                        self._run_source(source, pool, report, stop, bar, on_failure)
                report.status = "interrupted" if stop.is_set() else "ok"
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
                self.state.finish_run(run_id, report.status, report.as_dict())
                log.info("ingest run %s %s: %s", run_id, report.status, report.summary())
        return report

    def reconcile(self) -> int:
        """Remove objects written by an interrupted run whose points never landed."""
        removed = 0
        sweep = getattr(self.images, "sweep_temp", None)
        if callable(sweep):  # half-written temp files of a killed local write
            sweep()
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
    @contextmanager
    def _run_lock(self) -> Iterator[None]:
        """One run at a time per data dir, across processes; released by the OS if killed."""
        path = Path(self.settings.data_dir) / "ingest.lock"
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

    def _prepare(self, item: SourceItem) -> Stored | Skipped | Failed:
        """Worker thread: one item through fetch -> decode -> store; never raises for the item."""
        try:
            return self._prepare_item(item)
        except IndexUnavailable:
            raise  # the run itself cannot proceed
        except Exception as exc:  # one bad item must never stop the run; the log keeps the trace
            log.exception("unexpected error on %s", item.meta.source_uri)
            return Failed(item, "internal", f"{type(exc).__name__}: {exc}")

    def _prepare_item(self, item: SourceItem) -> Stored | Skipped | Failed:
        fetched = fetch(item)
        if isinstance(fetched, Failed):
            return fetched
        decoded = decode(fetched)
        if isinstance(decoded, Failed):
            return decoded
        return self._store_new(decoded)

    def _store_new(self, decoded: Decoded) -> Stored | Skipped | Failed:
        pid = point_id(decoded.image.sha256)
        if self.index.existing([pid]):
            return Skipped(decoded.item, decoded.image.sha256, pid, decoded.image.nbytes)
        return store(
            decoded,
            self.images,
            self.state,
            self.descriptors.prepare,
            self.settings.storage.thumbnail_px,
        )

    def _run_source(
        self,
        source: Source,
        pool: ThreadPoolExecutor,
        report: RunReport,
        stop: threading.Event,
        bar: tqdm,
        on_failure: Callable[[Failed], None] | None,
    ) -> None:
        counts = report.source(source.name)
        batch = _Batch([], [])
        in_flight: deque[Future[Stored | Skipped | Failed]] = deque()
        limit = max(2 * self.settings.embed.batch_size, 2 * self.settings.fetch.concurrency)
        try:
            for item in source.discover():
                if stop.is_set():
                    break
                counts.seen += 1
                if not self._due(item, counts):
                    bar.update(1)
                    continue
                in_flight.append(pool.submit(self._prepare, item))
                while len(in_flight) >= limit:
                    self._handle(in_flight.popleft().result(), batch, counts, report, on_failure)
                    bar.update(1)
        except (FetchError, OSError) as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            log.warning("source %s could not be listed: %s", source.name, reason)
            report.failures.append(
                {"source": source.name, "key": "", "stage": "discover", "reason": reason}
            )
        except IndexUnavailable:
            raise
        except Exception as exc:  # a parser bug in one source must not stop the others
            log.exception("source %s failed while listing", source.name)
            reason = f"{type(exc).__name__}: {exc}"
            report.failures.append(
                {"source": source.name, "key": "", "stage": "discover", "reason": reason}
            )
        finally:
            # Finish what was started even when stopping: those items are already fetched.
            while in_flight:
                self._handle(in_flight.popleft().result(), batch, counts, report, on_failure)
                bar.update(1)
            self._flush(batch, counts)
            close = getattr(source, "close", None)
            if callable(close):
                close()  # web sources hold an HTTP client
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
        result: Stored | Skipped | Failed,
        batch: _Batch,
        counts: SourceReport,
        report: RunReport,
        on_failure: Callable[[Failed], None] | None,
    ) -> None:
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
                report.failures.append(
                    {
                        "source": item.source,
                        "key": item.key,
                        "stage": result.stage,
                        "reason": result.reason,
                    }
                )
            log.warning("failed %s (%s): %s", item.meta.source_uri, result.stage, result.reason)
            if on_failure:
                on_failure(result)
            return
        if isinstance(result, Skipped):
            counts.duplicate += 1
            counts.bytes += result.nbytes
            item = result.item
            # Where an image appears matters as much as the image: keep every other place.
            record_sighting(self.index, result.point_id, item)
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
        # A worker may have found an image absent before an earlier batch of this run landed it:
        # upserting it again would replace that first place's payload, so it is a sighting.
        landed = self.index.existing([s.point_id for s in batch.stored])
        fresh = [s for s in batch.stored if s.point_id not in landed]
        again = [s for s in batch.stored if s.point_id in landed]
        if fresh:
            vectors = self.descriptors.compute([s.prepared for s in fresh])
            upsert(fresh, vectors, self.descriptors.labels, self.index, self.state)
        for follower in again + batch.followers:
            # The same image under another key: its point has landed, so it is seen now.
            item = follower.item
            record_sighting(self.index, follower.point_id, item)
            self.state.mark_seen(
                item.source, item.key, item.version, follower.image.sha256, follower.point_id
            )
        # Their objects were rewritten under the same content addresses: nothing to remove.
        self.state.clear_pending([s.image.sha256 for s in again])
        counts.new += len(fresh)
        counts.duplicate += len(again)
        batch.stored.clear()
        batch.followers.clear()
