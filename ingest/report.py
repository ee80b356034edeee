"""Run reports: per-source counts, bytes, duration and throughput, and what failed.

`RunReport.to_dict` is the JSON stored in the state database's runs table and printed by
`imgsearch runs --json`; `RunReport.from_dict` reads it back, including rows written before a
field existed (missing fields take their defaults, unknown ones are ignored).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ingest.items import Failed

# Stages of failures that concern a whole source rather than one of its items.
DISCOVER = "discover"  # the source could not be listed, or its listing was cut short
DEADLINE = "deadline"  # the source's or the run's time was up


@dataclass
class SourceReport:
    """Counts for one source in one run."""

    seen: int = 0  # items the source offered
    new: int = 0  # embedded and added to the index
    unchanged: int = 0  # same version as last run: nothing fetched
    duplicate: int = 0  # fetched, but the image was already in the catalog
    failed: int = 0  # quarantined this run
    retried: int = 0  # quarantined items attempted again
    deferred: int = 0  # quarantined items not yet due (backoff) or out of attempts
    postponed: int = 0  # left for the next run: the run stopped or ran out of time first
    bytes: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SourceReport:
        """Counts as stored; a counter the row lacks is 0."""
        return cls(**{f.name: int(data.get(f.name) or 0) for f in fields(cls)})


@dataclass(frozen=True)
class RunFailure:
    """One line of a run's failures: an item that failed, or a source that could not be read."""

    source: str
    key: str  # the item's key; "" when the failure is the source's own (listing, deadline)
    stage: str  # fetch, decode, store, internal... or DISCOVER, DEADLINE
    reason: str  # one sentence for people

    @classmethod
    def of_item(cls, failed: Failed) -> RunFailure:
        """The report line of an item that failed at some stage."""
        return cls(failed.item.source, failed.item.key, failed.stage, failed.reason)

    @classmethod
    def of_source(cls, source: str, stage: str, reason: str) -> RunFailure:
        """The report line of a source that could not be listed or ran out of time."""
        return cls(source, "", stage, reason)

    def to_dict(self) -> dict[str, str]:
        """As stored: source, key, stage, reason."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunFailure:
        """As stored; a missing field is empty."""
        return cls(**{f.name: str(data.get(f.name) or "") for f in fields(cls)})


@dataclass
class RunReport:
    """Everything a run did, as stored in the state database and printed at the end."""

    started_at: str
    finished_at: str | None = None
    duration_s: float = 0.0
    images_per_s: float = 0.0
    status: str = "running"
    error: str | None = None
    sources: dict[str, SourceReport] = field(default_factory=dict)
    failures: list[RunFailure] = field(default_factory=list)

    def source(self, name: str) -> SourceReport:
        """The counters of one source, created on first use."""
        return self.sources.setdefault(name, SourceReport())

    def total(self) -> SourceReport:
        """Counts summed over sources."""
        total = SourceReport()
        for report in self.sources.values():
            for key, value in asdict(report).items():
                setattr(total, key, getattr(total, key) + value)
        return total

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as stored: these fields, then `total` (the counts summed)."""
        data = asdict(self)
        data["total"] = asdict(self.total())
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunReport:
        """A stored report read back (`total` is recomputed from the sources)."""
        duration = data.get("duration_s")
        speed = data.get("images_per_s")
        finished = data.get("finished_at")
        error = data.get("error")
        return cls(
            started_at=str(data.get("started_at") or ""),
            finished_at=None if finished is None else str(finished),
            duration_s=float(duration or 0),
            images_per_s=float(speed or 0),
            status=str(data.get("status") or "running"),
            error=None if error is None else str(error),
            sources={
                str(name): SourceReport.from_dict(counts)
                for name, counts in (data.get("sources") or {}).items()
            },
            failures=[RunFailure.from_dict(f) for f in data.get("failures") or ()],
        )

    def failures_of(self, source: str, key: str | None = None) -> list[RunFailure]:
        """The failures of one source (of one of its items, given its key)."""
        return [f for f in self.failures if f.source == source and (key is None or f.key == key)]

    def summary(self) -> str:
        """One log line."""
        t = self.total()
        return (
            f"seen {t.seen}, new {t.new}, unchanged {t.unchanged}, duplicate {t.duplicate}, "
            f"failed {t.failed}, retried {t.retried}, deferred {t.deferred}, "
            f"postponed {t.postponed}; "
            f"{t.bytes / 1e6:.1f} MB in {self.duration_s:.1f} s ({self.images_per_s:.1f} images/s)"
        )
