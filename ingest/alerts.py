"""Alerts and their outbox, in the state database (SQLite) beside the ingestion state.

An alert is one banked picture (an entry) found as one catalog image: UNIQUE (entry, image), so
a rerun, a retroactive match after an ingested one, or a second process finds the row there and
adds nothing. Each new alert's outbox rows (one per configured webhook) are written in the same
transaction as the alert, so an alert is never recorded without its deliveries, nor the reverse.
A delivery is marked attempted before it is sent and delivered after a 2xx (ingest/webhooks.py).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.state import iso, utcnow

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    entry TEXT NOT NULL,
    image TEXT NOT NULL,
    bank TEXT NOT NULL,
    banks TEXT NOT NULL,
    found TEXT NOT NULL,
    evidence TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    source TEXT NOT NULL,
    source_uri TEXT NOT NULL,
    title TEXT NOT NULL,
    published_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (entry, image)
);
CREATE TABLE IF NOT EXISTS alert_outbox (
    alert_id INTEGER NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_sent_at TEXT,
    delivered_at TEXT,
    status INTEGER,
    last_error TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (alert_id, url)
);
"""
# Alert keys: a UUID5 of (entry, image) in this namespace, the same on every machine and run.
NAMESPACE = uuid.UUID("0f6d8c1e-2b7a-5c3d-9e41-7a5b3c2d1e0f")
CARRIED = ("source", "source_uri", "title", "published_at")  # from the image's catalog payload


# What a bank's name says its pictures are; every other bank holds known fakes.
BANK_WORDS = {
    "verified": "Verified",
    "authentic": "Verified",
    "genuine": "Verified",
    "embargoed": "Embargoed",
}


def known_fake(bank: str, note: str = "", link: str = "") -> str:
    """ "Known fake: in bank debunked, NOTE, LINK": the words for a banked picture, everywhere
    ("Verified: in bank verified, ..." and "Embargoed: ..." for the banks BANK_WORDS names)."""
    said = ", ".join(x for x in (note, link) if x)
    head = BANK_WORDS.get(bank.strip().lower(), "Known fake")
    return f"{head}: in bank {bank}" + (f", {said}" if said else "")


def alert_key(entry: str, image: str) -> str:
    """The alert's identity, sent as the Idempotency-Key of every delivery of it."""
    return str(uuid.uuid5(NAMESPACE, f"{entry} {image}"))


@dataclass(frozen=True)
class Alert:
    """A banked picture found in the catalog: the bank(s), the entry, the image and where."""

    entry: str
    image: str
    banks: list[dict[str, str]]  # the entry's memberships: bank, note, link, added_by, added_at
    found: str  # "ingest" (a new image matched) | "retroactive" (a new entry matched)
    evidence: dict[str, Any]
    sha256: str = ""
    source: str = ""
    source_uri: str = ""
    title: str = ""
    published_at: str = ""
    id: int = 0
    created_at: str = ""
    deliveries: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(
        cls,
        entry: str,
        image: str,
        payload: Mapping[str, Any],
        banks: Sequence[Mapping[str, str]],
        found: str,
        evidence: Mapping[str, Any],
    ) -> Alert:
        """An alert for a catalog image (its payload gives source, link, title and date)."""
        return cls(
            entry=entry,
            image=image,
            banks=[dict(b) for b in banks],
            found=found,
            evidence=dict(evidence),
            sha256=str(payload.get("sha256") or ""),
            source=str(payload.get("source") or ""),
            source_uri=str(payload.get("source_uri") or ""),
            title=str(payload.get("title") or ""),
            published_at=str(payload.get("published_at") or ""),
        )

    @property
    def key(self) -> str:
        """The idempotency key (entry, image)."""
        return alert_key(self.entry, self.image)

    @property
    def bank(self) -> str:
        """The first bank the entry is in."""
        return self.banks[0]["bank"] if self.banks else ""

    @property
    def note(self) -> str:
        """The first bank's note."""
        return self.banks[0].get("note", "") if self.banks else ""

    @property
    def link(self) -> str:
        """The first bank's link (the fact check)."""
        return self.banks[0].get("link", "") if self.banks else ""

    def text(self) -> str:
        """One line for people (the webhook's Slack `text`, the CLI's list)."""
        where = ", ".join(b["bank"] for b in self.banks) or "?"
        image = self.title or self.source_uri or self.sha256[:12]
        place = " ".join(
            x
            for x in (
                f"from {self.source}" if self.source else "",
                f"<{self.source_uri}>" if self.source_uri else "",
                f"published {self.published_at}" if self.published_at else "",
            )
            if x
        )
        head = known_fake(where, self.note, self.link)
        return f"{head}. Found in the catalog: {image}" + (f" {place}" if place else "") + "."

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (`imgsearch alerts --json`, GET /api/alerts, the webhook's `alert`)."""
        return {
            "id": self.id,
            "key": self.key,
            "bank": self.bank,
            "entry": self.entry,
            "note": self.note,
            "link": self.link,
            "banks": self.banks,
            "image": {
                "id": self.image,
                "sha256": self.sha256,
                **{k: getattr(self, k) or None for k in CARRIED},
            },
            "found": self.found,
            "evidence": self.evidence,
            "created_at": self.created_at,
            "deliveries": self.deliveries,
        }


@dataclass(frozen=True)
class Delivery:
    """One alert still to be delivered to one webhook."""

    alert: Alert
    url: str
    attempts: int


class AlertStore:
    """Alerts and the outbox in the state database (its own connection; writes commit at once)."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._tx() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._db:
            yield self._db

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def add(self, alert: Alert, webhooks: Sequence[str]) -> Alert | None:
        """Record an alert and its deliveries in one transaction; None when (entry, image) was
        already alerted (nothing is written then)."""
        now = iso(utcnow())
        with self._tx() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO alerts(key, entry, image, bank, banks, found, evidence, "
                "sha256, source, source_uri, title, published_at, created_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    alert.key,
                    alert.entry,
                    alert.image,
                    alert.bank,
                    json.dumps(alert.banks),
                    alert.found,
                    json.dumps(alert.evidence),
                    alert.sha256,
                    alert.source,
                    alert.source_uri,
                    alert.title,
                    alert.published_at,
                    now,
                ),
            )
            if not cursor.rowcount:
                return None
            alert_id = int(cursor.lastrowid or 0)
            db.executemany(
                "INSERT OR IGNORE INTO alert_outbox(alert_id, url, next_attempt) VALUES (?,?,?)",
                [(alert_id, url, 0.0) for url in dict.fromkeys(webhooks)],
            )
        return self.get(alert_id)

    def get(self, alert_id: int) -> Alert | None:
        """One alert by id, with its deliveries."""
        with self._tx() as db:
            row = db.execute("SELECT * FROM alerts WHERE id=?", (alert_id,)).fetchone()
        return None if row is None else self._with_deliveries([_alert(row)])[0]

    def recent(self, limit: int = 100, *, bank: str | None = None) -> list[Alert]:
        """The most recent alerts first (of one bank, if given), with their deliveries."""
        with self._tx() as db:
            if bank is None:
                rows = db.execute(
                    "SELECT * FROM alerts ORDER BY id DESC LIMIT ?", (limit,)
                ).fetchall()
            else:
                rows = db.execute(
                    "SELECT a.* FROM alerts a, json_each(a.banks) j "
                    "WHERE json_extract(j.value, '$.bank') = ? "
                    "GROUP BY a.id ORDER BY a.id DESC LIMIT ?",
                    (bank, limit),
                ).fetchall()
        return self._with_deliveries([_alert(r) for r in rows])

    def count(self) -> int:
        """How many alerts there are."""
        with self._tx() as db:
            return int(db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0])

    def _with_deliveries(self, alerts: list[Alert]) -> list[Alert]:
        if not alerts:
            return alerts
        marks = ",".join("?" * len(alerts))
        with self._tx() as db:
            rows = db.execute(
                f"SELECT * FROM alert_outbox WHERE alert_id IN ({marks}) ORDER BY url",
                [a.id for a in alerts],
            ).fetchall()
        by_alert: dict[int, list[dict[str, Any]]] = {}
        for r in rows:
            by_alert.setdefault(int(r["alert_id"]), []).append(
                {
                    "url": r["url"],
                    "attempts": int(r["attempts"]),
                    "delivered_at": r["delivered_at"],
                    "status": r["status"],
                    "error": r["last_error"] or None,
                }
            )
        return [Alert(**{**a.__dict__, "deliveries": by_alert.get(a.id, [])}) for a in alerts]

    # -- the outbox ---------------------------------------------------------------------------
    def due(self, now: float | None = None, limit: int = 100) -> list[Delivery]:
        """Deliveries not yet acknowledged whose next attempt is due, oldest alert first."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT a.*, o.url AS o_url, o.attempts AS o_attempts FROM alert_outbox o "
                "JOIN alerts a ON a.id = o.alert_id "
                "WHERE o.delivered_at IS NULL AND o.next_attempt <= ? "
                "ORDER BY a.id, o.url LIMIT ?",
                (time.time() if now is None else now, limit),
            ).fetchall()
        return [Delivery(_alert(r), str(r["o_url"]), int(r["o_attempts"])) for r in rows]

    def next_due(self) -> float | None:
        """When the earliest undelivered delivery is due (epoch seconds), or None."""
        with self._tx() as db:
            row = db.execute(
                "SELECT MIN(next_attempt) FROM alert_outbox WHERE delivered_at IS NULL"
            ).fetchone()
        return None if row[0] is None else float(row[0])

    def attempting(self, delivery: Delivery, retry_at: float) -> None:
        """Before sending: count the attempt and set when to retry if no 2xx is recorded (a
        crash after sending then retries later with the same Idempotency-Key)."""
        with self._tx() as db:
            db.execute(
                "UPDATE alert_outbox SET attempts=attempts+1, next_attempt=?, last_sent_at=? "
                "WHERE alert_id=? AND url=?",
                (retry_at, iso(utcnow()), delivery.alert.id, delivery.url),
            )

    def delivered(self, delivery: Delivery, status: int) -> None:
        """After a 2xx: never sent again."""
        with self._tx() as db:
            db.execute(
                "UPDATE alert_outbox SET delivered_at=?, status=?, last_error='' "
                "WHERE alert_id=? AND url=?",
                (iso(utcnow()), status, delivery.alert.id, delivery.url),
            )

    def failed(self, delivery: Delivery, status: int | None, reason: str) -> None:
        """After a failure: the reason is kept; the retry time set before sending stands."""
        with self._tx() as db:
            db.execute(
                "UPDATE alert_outbox SET status=?, last_error=? WHERE alert_id=? AND url=?",
                (status, reason[:500], delivery.alert.id, delivery.url),
            )


def _alert(row: sqlite3.Row) -> Alert:
    return Alert(
        id=int(row["id"]),
        entry=str(row["entry"]),
        image=str(row["image"]),
        banks=json.loads(row["banks"]),
        found=str(row["found"]),
        evidence=json.loads(row["evidence"]),
        sha256=str(row["sha256"]),
        source=str(row["source"]),
        source_uri=str(row["source_uri"]),
        title=str(row["title"]),
        published_at=str(row["published_at"]),
        created_at=str(row["created_at"]),
    )
