"""Ingestion state beside the index (SQLite): seen items, quarantine, pending writes, runs."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ingest.report import RunReport

SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    version TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    point_id TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (source, key)
);
CREATE TABLE IF NOT EXISTS quarantine (
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    version TEXT NOT NULL,
    uri TEXT NOT NULL,
    stage TEXT NOT NULL,
    reason TEXT NOT NULL,
    retryable INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    next_attempt TEXT NOT NULL,
    PRIMARY KEY (source, key)
);
CREATE TABLE IF NOT EXISTS pending (
    sha256 TEXT PRIMARY KEY,
    point_id TEXT NOT NULL,
    keys TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS run_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    requested_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,
    report TEXT NOT NULL
);
"""


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z, to the second."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class QuarantineEntry:
    """A failed item waiting for its next attempt."""

    source: str
    key: str
    version: str
    uri: str
    stage: str
    reason: str
    retryable: bool
    attempts: int
    first_seen: str
    last_seen: str
    next_attempt: str


@dataclass(frozen=True)
class RunRecord:
    """One stored run: its row (the status a killed run was marked with) and its report."""

    id: int
    started_at: str
    finished_at: str | None
    status: str
    report: RunReport

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (`imgsearch runs --json`): the row's fields, the report as stored."""
        return {
            "id": self.id,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "status": self.status,
            "report": self.report.to_dict(),
        }


class StateStore:
    """Thread-safe access to the state database; every write commits before returning."""

    def __init__(self, path: Path | str, *, max_attempts: int = 5, backoff_s: int = 3600) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._db.row_factory = sqlite3.Row
        # WAL: readers (the UI) never block the run's writes. synchronous=NORMAL syncs at
        # checkpoints instead of every commit: in WAL mode the database stays consistent after
        # a crash (https://www.sqlite.org/pragma.html#pragma_synchronous); a killed process
        # loses nothing, and a power cut only the last commits: their items are fetched again
        # (the point exists, so they become sightings), at worst leaving an unreferenced object.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # per connection, so set on each open
        with self._tx() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._db:
            yield self._db

    def pragma(self, name: str) -> object:
        """The current value of a PRAGMA on this connection (journal_mode, synchronous, ...)."""
        if not name.isidentifier():
            raise ValueError(f"not a pragma name: {name!r}")
        with self._tx() as db:
            return db.execute(f"PRAGMA {name}").fetchone()[0]

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    # -- seen items ---------------------------------------------------------------------------
    def seen_version(self, source: str, key: str) -> str | None:
        """The version recorded for an item, or None when never indexed."""
        with self._tx() as db:
            row = db.execute(
                "SELECT version FROM seen WHERE source=? AND key=?", (source, key)
            ).fetchone()
        return None if row is None else str(row["version"])

    def mark_seen(self, source: str, key: str, version: str, sha256: str, point_id: str) -> None:
        """Record an item as indexed (called only after its point is upserted)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO seen(source, key, version, sha256, point_id, updated_at) "
                "VALUES (?,?,?,?,?,?) ON CONFLICT(source, key) DO UPDATE SET "
                "version=excluded.version, sha256=excluded.sha256, point_id=excluded.point_id, "
                "updated_at=excluded.updated_at",
                (source, key, version, sha256, point_id, iso(utcnow())),
            )
            db.execute("DELETE FROM quarantine WHERE source=? AND key=?", (source, key))

    # -- quarantine ---------------------------------------------------------------------------
    def quarantine(
        self,
        source: str,
        key: str,
        version: str,
        uri: str,
        stage: str,
        reason: str,
        retryable: bool,
    ) -> QuarantineEntry:
        """Record a failure; the next attempt backs off exponentially."""
        now = utcnow()
        with self._tx() as db:
            row = db.execute(
                "SELECT attempts, first_seen FROM quarantine WHERE source=? AND key=?",
                (source, key),
            ).fetchone()
            attempts = 1 if row is None else int(row["attempts"]) + 1
            first_seen = iso(now) if row is None else str(row["first_seen"])
            delay = self.backoff_s * 2 ** (attempts - 1)
            entry = QuarantineEntry(
                source=source,
                key=key,
                version=version,
                uri=uri,
                stage=stage,
                reason=reason,
                retryable=retryable,
                attempts=attempts,
                first_seen=first_seen,
                last_seen=iso(now),
                next_attempt=iso(now + timedelta(seconds=delay)),
            )
            db.execute(
                "INSERT INTO quarantine(source, key, version, uri, stage, reason, retryable, "
                "attempts, first_seen, last_seen, next_attempt) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT(source, key) DO UPDATE SET version=excluded.version, "
                "uri=excluded.uri, stage=excluded.stage, "
                "reason=excluded.reason, retryable=excluded.retryable, "
                "attempts=excluded.attempts, last_seen=excluded.last_seen, "
                "next_attempt=excluded.next_attempt",
                (*astuple(entry)[:6], int(entry.retryable), *astuple(entry)[7:]),
            )
        return entry

    def quarantined(self, source: str, key: str) -> QuarantineEntry | None:
        """The quarantine entry of an item, if any."""
        with self._tx() as db:
            row = db.execute(
                "SELECT * FROM quarantine WHERE source=? AND key=?", (source, key)
            ).fetchone()
        return None if row is None else _entry(row)

    def due(
        self, entry: QuarantineEntry, version: str | None = None, now: datetime | None = None
    ) -> bool:
        """True when a quarantined item should be tried again now (always, if it changed)."""
        if version is not None and version != entry.version:
            return True
        if entry.attempts >= self.max_attempts or not entry.retryable:
            return False
        return entry.next_attempt <= iso(now or utcnow())

    def quarantine_list(self, source: str | None = None) -> list[QuarantineEntry]:
        """Every quarantined item, most recent failure first."""
        with self._tx() as db:
            if source is None:
                rows = db.execute("SELECT * FROM quarantine ORDER BY last_seen DESC").fetchall()
            else:
                rows = db.execute(
                    "SELECT * FROM quarantine WHERE source=? ORDER BY last_seen DESC", (source,)
                ).fetchall()
        return [_entry(row) for row in rows]

    def release(self, source: str | None = None, key: str | None = None) -> int:
        """Make quarantined items due now with a fresh attempt budget; returns how many."""
        query = "UPDATE quarantine SET next_attempt=?, attempts=0, retryable=1"
        args: list[Any] = [iso(utcnow())]
        clauses = []
        if source is not None:
            clauses.append("source=?")
            args.append(source)
        if key is not None:
            clauses.append("key=?")
            args.append(key)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        with self._tx() as db:
            return db.execute(query, args).rowcount

    # -- pending writes (objects stored, point not yet upserted) --------------------------------
    def add_pending(self, sha256: str, point_id: str, keys: list[str]) -> None:
        """Note objects about to be written, so a crash before the upsert can be cleaned up."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO pending(sha256, point_id, keys, created_at) "
                "VALUES (?,?,?,?)",
                (sha256, point_id, json.dumps(keys), iso(utcnow())),
            )

    def clear_pending(self, sha256s: list[str]) -> None:
        """Forget pending writes whose points are now upserted."""
        with self._tx() as db:
            db.executemany("DELETE FROM pending WHERE sha256=?", [(s,) for s in sha256s])

    def pending(self) -> list[tuple[str, str, list[str]]]:
        """Pending writes left by an interrupted run: (sha256, point_id, object keys)."""
        with self._tx() as db:
            rows = db.execute("SELECT sha256, point_id, keys FROM pending").fetchall()
        return [(str(r["sha256"]), str(r["point_id"]), json.loads(r["keys"])) for r in rows]

    # -- run reports --------------------------------------------------------------------------
    def start_run(self, report: RunReport) -> int:
        """Record a run as started; returns its id."""
        with self._tx() as db:
            cursor = db.execute(
                "INSERT INTO runs(started_at, status, report) VALUES (?,?,?)",
                (report.started_at or iso(utcnow()), "running", json.dumps(report.to_dict())),
            )
        return int(cursor.lastrowid or 0)

    def interrupt_stale_runs(self) -> int:
        """Mark runs still "running" as interrupted (call only while holding the run lock)."""
        with self._tx() as db:
            return db.execute(
                "UPDATE runs SET status='interrupted', finished_at=? WHERE status='running'",
                (iso(utcnow()),),
            ).rowcount

    def request_run(self) -> None:
        """Ask the process that holds the schedule to run the daily job now ("Run now")."""
        with self._tx() as db:
            db.execute("INSERT INTO run_requests(requested_at) VALUES (?)", (iso(utcnow()),))

    def take_run_requests(self) -> int:
        """Consume the pending "Run now" requests; returns how many there were."""
        with self._tx() as db:
            return db.execute("DELETE FROM run_requests").rowcount

    def pending_run_request(self) -> str | None:
        """When the oldest unconsumed "Run now" request was made, or None."""
        with self._tx() as db:
            row = db.execute("SELECT MIN(requested_at) AS at FROM run_requests").fetchone()
        return str(row["at"]) if row and row["at"] else None

    def update_run(self, run_id: int, report: RunReport) -> None:
        """Store a running run's report so far (its status stays "running")."""
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET report=? WHERE id=? AND status='running'",
                (json.dumps(report.to_dict()), run_id),
            )

    def finish_run(self, run_id: int, report: RunReport) -> None:
        """Store the final report of a run, with its status."""
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET finished_at=?, status=?, report=? WHERE id=?",
                (iso(utcnow()), report.status, json.dumps(report.to_dict()), run_id),
            )

    def runs(self, limit: int = 20) -> list[RunRecord]:
        """Most recent runs first."""
        with self._tx() as db:
            rows = db.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [
            RunRecord(
                int(r["id"]),
                str(r["started_at"]),
                r["finished_at"],
                str(r["status"]),
                RunReport.from_dict(json.loads(r["report"])),
            )
            for r in rows
        ]


def _entry(row: sqlite3.Row) -> QuarantineEntry:
    return QuarantineEntry(
        source=str(row["source"]),
        key=str(row["key"]),
        version=str(row["version"]),
        uri=str(row["uri"]),
        stage=str(row["stage"]),
        reason=str(row["reason"]),
        retryable=bool(row["retryable"]),
        attempts=int(row["attempts"]),
        first_seen=str(row["first_seen"]),
        last_seen=str(row["last_seen"]),
        next_attempt=str(row["next_attempt"]),
    )
