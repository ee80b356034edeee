"""The daily ingestion job and `imgsearch worker`: where the schedule runs and how it stops.

Where the schedule runs:
- With a Qdrant server (IMGSEARCH_QDRANT__URL set), the `worker` program runs it in its own
  process (a BlockingScheduler); the app only answers queries.
- With the embedded index (no URL), only one process may open the index, and the app needs it
  for queries, so the schedule runs inside the app's process (a BackgroundScheduler thread that
  shares the app's index handle, whose calls are serialised by a lock). The `worker` program
  then only says so and idles, so supervisord shows it RUNNING and it never opens the index.
  IMGSEARCH_WORKER__IN_APP=no forces the schedule into the worker even then (for a machine that
  runs no app); =yes forces it into the app even with a server.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType

from apscheduler.events import EVENT_SCHEDULER_STARTED, SchedulerEvent
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_STOPPED, BaseScheduler
from apscheduler.triggers.base import BaseTrigger

from app.errors import KNOWN
from app.runtime import Runtime
from app.schedule import JOB_ID, build_scheduler
from config import Settings
from ingest.pipeline import mark_stale_runs
from ingest.report import RunReport
from ingest.state import StateStore

log = logging.getLogger("imgsearch.worker")

# The job as the job store records it: a textual reference, resolved again in every process.
JOB_REF = "app.worker:scheduled_run"

# Process-level registry: whoever starts a scheduler registers the Runtime its job uses.
_runtime: Runtime | None = None
# Set on SIGTERM/SIGINT (worker) or interpreter exit (app): the run finishes its batch and stops.
_stop = threading.Event()
_in_app: BackgroundScheduler | None = None
_in_app_lock = threading.RLock()
_exit_hooked = False
# Set while this process runs the job (a "Run now" then only says a run is in progress).
_job_running = threading.Event()
_poller: _RunRequests | None = None
POLL_S = 2.0  # how often the process holding the schedule looks for "Run now" requests


def run_job(runtime: Runtime, stop: threading.Event | None = None) -> RunReport:
    """Run the pipeline over the declared sources once; raises if the run cannot proceed.

    Without `stop`, the run stops after its current batch when this process exits.
    """
    if stop is None:
        _stop_on_interpreter_exit()
        stop = _stop
    _job_running.set()
    try:
        report = runtime.pipeline.run(runtime.declared_sources(), stop=stop)
    finally:
        _job_running.clear()
    log.info("daily job %s: %s", report.status, report.summary())
    return report


def request_run(runtime: Runtime) -> str:
    """ "Run now": ask whichever process holds the schedule to start the daily job at once.

    Returns at once with one sentence for the user; the run's progress is in its run record.
    """
    state = runtime.state
    if _job_running.is_set():
        return "A run is in progress; its progress shows below."
    state.request_run()
    with _in_app_lock:
        scheduler = _in_app
    if scheduler is not None:
        _take_requests(scheduler, state)
        return "The run has started; its progress shows below."
    return "Requested: the worker process (imgsearch worker) starts the run within a few seconds."


class _RunRequests:
    """A thread in the process that holds the schedule: turns "Run now" requests into a run."""

    def __init__(self, scheduler: BaseScheduler, state: StateStore) -> None:
        self.scheduler = scheduler
        self.state = state
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="imgsearch-run-now", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._done.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._done.wait(POLL_S):
            try:
                _take_requests(self.scheduler, self.state)
            except Exception:  # a locked database or a stopping scheduler: try again later
                log.warning("could not read the run requests", exc_info=True)


def _take_requests(scheduler: BaseScheduler, state: StateStore) -> None:
    if not state.take_run_requests() or scheduler.state == STATE_STOPPED:
        return
    if _job_running.is_set():
        log.info("run now: a run is already in progress")
        return
    log.info("run now: starting the daily job")
    scheduler.modify_job(JOB_ID, next_run_time=datetime.now(UTC))


def register_runtime(runtime: Runtime | None) -> None:
    """Make `runtime` the one the scheduled job of this process uses."""
    global _runtime
    _runtime = runtime


def registered_runtime() -> Runtime | None:
    """The Runtime this process's schedule uses, if any (the app reuses it)."""
    return _runtime


def scheduled_run() -> None:
    """The job the scheduler calls (by reference `app.worker:scheduled_run`)."""
    runtime = _runtime
    if runtime is None:
        raise RuntimeError("no Runtime is registered for the scheduled job in this process")
    try:
        run_job(runtime, _stop)
    except KNOWN as exc:  # a run that cannot proceed: one line; the next one tries again
        log.warning("daily job skipped: %s", exc)


def runs_in_app(settings: Settings) -> bool:
    """True when the schedule belongs in the app's process (embedded index, or forced)."""
    mode = settings.worker.in_app
    return mode == "yes" or (mode == "auto" and settings.embedded)


def start_in_app_scheduler(
    runtime: Runtime, *, trigger: BaseTrigger | None = None
) -> BackgroundScheduler | None:
    """Start the schedule in this (app) process once; None when the worker program owns it.

    `trigger` replaces the cron trigger from settings (tests use one that fires at once).
    """
    global _in_app, _poller
    if not runs_in_app(runtime.settings):
        return None
    with _in_app_lock:
        if _in_app is None:
            register_runtime(runtime)
            mark_stale_runs(runtime.settings.data_dir, runtime.state)
            scheduler = build_scheduler(runtime.settings, JOB_REF, blocking=False, trigger=trigger)
            assert isinstance(scheduler, BackgroundScheduler)
            scheduler.start()
            _stop_on_interpreter_exit()
            _log_next_run(scheduler, "in the app's process")
            _in_app = scheduler
            _poller = _RunRequests(scheduler, runtime.state)
        return _in_app


def _stop_on_interpreter_exit() -> None:
    global _exit_hooked
    with _in_app_lock:
        if _exit_hooked:
            return
        # When the app's main thread ends (SIGTERM), the interpreter joins worker threads before
        # plain atexit hooks run, so a run would go on to its end and outlast supervisord's
        # stopwaitsecs. Threading's own exit hooks run before that join (concurrent.futures
        # joins its pools from one), so the run stops after its current batch.
        threading._register_atexit(_stop.set)  # type: ignore[attr-defined]
        _exit_hooked = True


def stop_in_app_scheduler() -> None:
    """Shut the in-app schedule down (waiting for a running job) so it can be started again."""
    global _in_app, _poller
    with _in_app_lock:
        if _poller is not None:
            _poller.close()
            _poller = None
        if _in_app is not None:
            _in_app.shutdown(wait=True)
            _in_app = None
            register_runtime(None)


def shutdown_in_app() -> None:
    """The app is stopping: stop a run in progress (after its batch) and the schedule."""
    _stop.set()
    stop_in_app_scheduler()


# -- the `imgsearch worker` command ------------------------------------------------------------
def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `imgsearch worker` to the command line."""
    p = subparsers.add_parser(
        "worker",
        help="run the daily ingestion schedule (or --once: one run now)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--once", action="store_true", help="run the job now and exit")
    p.set_defaults(handler=cmd_worker)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Run the job once, idle (schedule in the app), or run the schedule until SIGTERM/SIGINT."""
    if args.once:
        return _run_once(settings)
    if runs_in_app(settings):
        return _idle(settings)
    return _run_schedule(settings)


def _run_once(settings: Settings) -> int:
    if not settings.sources:
        print("Nothing to do: no sources are declared (set IMGSEARCH_SOURCES).", file=sys.stderr)
        return 2
    restore = _on_stop_signals(lambda: None)
    try:
        with Runtime(settings) as runtime:
            report = run_job(runtime, _stop)
    finally:
        restore()
    print(report.summary())
    return 0


def _idle(settings: Settings) -> int:
    restore = _on_stop_signals(lambda: None)  # before the log line that says we are up
    reason = (
        "the index is embedded (one process only)"
        if settings.embedded
        else "IMGSEARCH_WORKER__IN_APP=yes"
    )
    log.info(
        "%s, so the daily schedule (%s %s) runs inside the app's process and this worker idles; "
        "with a Qdrant server (IMGSEARCH_QDRANT__URL) it runs here instead",
        reason,
        settings.worker.cron,
        settings.worker.timezone,
    )
    try:
        while not _stop.wait(3600):
            pass
    finally:
        restore()
    return 0


def _run_schedule(settings: Settings) -> int:
    if not settings.sources:
        log.warning("no sources are declared (IMGSEARCH_SOURCES): each run will do nothing")
    runtime = Runtime(settings)
    register_runtime(runtime)
    mark_stale_runs(settings.data_dir, runtime.state)
    scheduler = build_scheduler(settings, JOB_REF, blocking=True)
    pollers: list[_RunRequests] = []
    shutting_down: list[threading.Thread] = []
    lock = threading.Lock()

    def request_shutdown() -> None:
        # Not from the signal handler itself: shutdown() waits for the running job and takes
        # the scheduler's locks, which the interrupted main thread may hold.
        with lock:
            if shutting_down or scheduler.state == STATE_STOPPED:
                return
            thread = threading.Thread(
                target=scheduler.shutdown, name="imgsearch-worker-stop", daemon=True
            )
            shutting_down.append(thread)
            thread.start()

    def on_started(event: SchedulerEvent) -> None:
        _log_next_run(scheduler, "in this worker")
        pollers.append(_RunRequests(scheduler, runtime.state))
        if _stop.is_set():  # a signal arrived before the scheduler was running
            request_shutdown()

    scheduler.add_listener(on_started, EVENT_SCHEDULER_STARTED)
    restore = _on_stop_signals(request_shutdown)
    try:
        scheduler.start()  # blocks until shutdown() has waited for the running job
        for thread in shutting_down:
            thread.join()
    finally:
        for poller in pollers:
            poller.close()
        restore()
        register_runtime(None)
        runtime.close()
    log.info("worker stopped")
    return 0


def _on_stop_signals(then: Callable[[], None]) -> Callable[[], None]:
    """On SIGTERM/SIGINT set the stop event and call `then`; returns a function that restores."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if not _stop.is_set():
            log.info(
                "%s received: stopping (a batch in progress finishes first)",
                signal.Signals(signum).name,
            )
        _stop.set()
        then()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def _log_next_run(scheduler: BaseScheduler, where: str) -> None:
    job = scheduler.get_job(JOB_ID)
    next_run = job.next_run_time.isoformat() if job and job.next_run_time else "never"
    log.info("daily ingestion scheduled %s; next run at %s", where, next_run)
