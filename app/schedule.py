"""The daily schedule: an APScheduler 3 scheduler with a cron trigger and a persistent job store."""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger

from config import Settings

log = logging.getLogger(__name__)

# One fixed id: restarting the worker replaces its job instead of adding a second one.
JOB_ID = "imgsearch-daily-ingest"
JOB_NAME = "daily ingestion"
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def cron_trigger(expr: str, timezone: str, jitter_s: int = 0) -> CronTrigger:
    """A trigger from a standard 5-field crontab line, with crontab's weekday numbers (0 = Sun)."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"the cron line {expr!r} must have 5 fields (minute hour day month dow)")
    minute, hour, day, month, day_of_week = fields
    # Not CronTrigger.from_crontab: it takes no jitter, and APScheduler 3 reads weekday numbers
    # as 0 = Monday, so "0 3 * * 1" would run on Tuesdays. Names mean the same to both.
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=_weekday_names(day_of_week),
        timezone=timezone,
        jitter=jitter_s or None,
    )


def _weekday_names(field: str) -> str:
    """Crontab weekday numbers (0-7, 0 and 7 = Sunday) as names; steps after `/` stay numbers."""

    def name(match: re.Match[str]) -> str:
        number = int(match.group(0))
        if number > 7:
            raise ValueError(f"day of week {number} is out of range (0-7)")
        return _WEEKDAYS[number]

    return re.sub(r"(?<![/\d])\d+", name, field)


def build_scheduler(
    settings: Settings,
    job: str | Callable[[], Any],
    *,
    blocking: bool,
    trigger: BaseTrigger | None = None,
) -> BaseScheduler:
    """A scheduler (not started) holding the daily job in the SQLite job store.

    `job` is a textual reference ("module:function") or a module-level function: the job store
    pickles the reference, so closures cannot be stored. `trigger` replaces the cron trigger from
    settings (tests use a fast one). A missed run stored by a previous process is kept, so it fires
    once on start (coalesced) when it is still within the misfire grace time.
    """
    worker = settings.worker
    trigger = trigger or cron_trigger(worker.cron, worker.timezone, worker.jitter_s)
    settings.scheduler_db.parent.mkdir(parents=True, exist_ok=True)
    scheduler_cls = BlockingScheduler if blocking else BackgroundScheduler
    scheduler: BaseScheduler = scheduler_cls(
        timezone=worker.timezone,
        # One job that never overlaps itself: one thread is all it can use.
        executors={"default": ThreadPoolExecutor(1)},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": worker.misfire_grace_s,
        },
    )
    store = SQLAlchemyJobStore(url=f"sqlite:///{settings.scheduler_db}")
    kept = _stored_next_run(store, scheduler, job, trigger)
    scheduler.add_jobstore(store)
    options: dict[str, Any] = {} if kept is None else {"next_run_time": kept}
    scheduler.add_job(
        job,
        trigger,
        id=JOB_ID,
        name=JOB_NAME,
        replace_existing=True,
        coalesce=True,
        max_instances=1,
        misfire_grace_time=worker.misfire_grace_s,
        **options,
    )
    return scheduler


def _stored_next_run(
    store: SQLAlchemyJobStore,
    scheduler: BaseScheduler,
    job: str | Callable[[], Any],
    trigger: BaseTrigger,
) -> datetime | None:
    """The stored job's next run time when it is the same job on the same schedule, else None.

    `replace_existing` alone would recompute the next run from now on every start, so a run
    missed while the process was down would silently never happen.
    """
    store.start(scheduler, "default")  # creates the table on first use
    try:
        stored = store.lookup_job(JOB_ID)
    except (LookupError, ValueError, TypeError, AttributeError, pickle.UnpicklingError) as exc:
        log.warning("replacing an unreadable stored job %s: %s", JOB_ID, exc)
        return None
    if stored is None or stored.next_run_time is None:
        return None
    ref = job if isinstance(job, str) else f"{job.__module__}:{job.__qualname__}"
    if stored.func_ref != ref or repr(stored.trigger) != repr(trigger):
        log.info("the schedule changed: the next run is computed afresh")
        return None
    next_run: datetime = stored.next_run_time
    return next_run
