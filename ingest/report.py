"""Run reports: per-source counts, bytes, duration and throughput."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


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
    failures: list[dict[str, str]] = field(default_factory=list)

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

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        data = asdict(self)
        data["total"] = asdict(self.total())
        return data

    def summary(self) -> str:
        """One log line."""
        t = self.total()
        return (
            f"seen {t.seen}, new {t.new}, unchanged {t.unchanged}, duplicate {t.duplicate}, "
            f"failed {t.failed}, retried {t.retried}, deferred {t.deferred}, "
            f"postponed {t.postponed}; "
            f"{t.bytes / 1e6:.1f} MB in {self.duration_s:.1f} s ({self.images_per_s:.1f} images/s)"
        )
