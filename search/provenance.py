"""Warnings a fact-checker should read first: what the picture's own metadata claims, weighed
against what the catalog knows about where it was published.

Each warning has a stable code (an API client may branch on it) and one sentence for a person:
- `ai_generated`: IPTC's digital source type (in XMP or a C2PA action) says a generative model
  made the picture, or part of it;
- `credentials_invalid`: the picture carries Content Credentials that no longer hold: its pixels
  changed after signing, or the signature fails;
- `captured_after_published`: the capture date in its metadata is later than the catalog's
  first publication of the picture, beyond any time-zone difference (so the date was changed, or
  the picture is not what its metadata says).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from embed.metadata import IPTC_TERMS, Metadata

AI_GENERATED = "ai_generated"
CREDENTIALS_INVALID = "credentials_invalid"
CAPTURED_AFTER_PUBLISHED = "captured_after_published"
CODES = (AI_GENERATED, CREDENTIALS_INVALID, CAPTURED_AFTER_PUBLISHED)
# A time without an offset may be local time anywhere (UTC-12 to UTC+14): only a capture later
# than the first publication whatever the zones of both (and the hour of a date alone) warns.
ZONE_SLACK = timedelta(hours=14)


@dataclass(frozen=True)
class Caution:
    """One warning: a stable code and the sentence shown to people."""

    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """The JSON form: {"code", "message"}."""
        return {"code": self.code, "message": self.message}


def warnings_for(
    metadata: Metadata | None, timeline: Sequence[dict[str, Any]] = ()
) -> list[Caution]:
    """The warnings of one picture: its metadata, and (when known) the catalog's timeline of it."""
    if metadata is None:
        return []
    found: list[Caution] = []
    if metadata.ai_generated:
        term = (metadata.digital_source_type or "").removeprefix(IPTC_TERMS)
        where = "Content Credentials" if _from_c2pa(metadata) else "metadata"
        found.append(
            Caution(
                AI_GENERATED,
                f"Its {where} say it was made with a generative model (digital source type "
                f"{term}).",
            )
        )
    if metadata.c2pa is not None and metadata.c2pa.state == "invalid":
        codes = ", ".join(metadata.c2pa.errors[:3]) or "no reason given"
        found.append(
            Caution(
                CREDENTIALS_INVALID,
                "Its Content Credentials do not hold: the picture changed after it was signed, "
                f"or the signature fails ({codes}).",
            )
        )
    late = _captured_after(metadata.captured_at, timeline)
    if late is not None:
        place, first = late
        source = f" ({place['source']})" if place.get("source") else ""
        found.append(
            Caution(
                CAPTURED_AFTER_PUBLISHED,
                f"Its metadata says it was taken {metadata.captured_at}, after the catalog's "
                f"first publication of it on {first}{source}: the capture date was changed, or "
                "the picture is not what its metadata says.",
            )
        )
    return found


def _from_c2pa(metadata: Metadata) -> bool:
    credentials = metadata.c2pa
    return credentials is not None and credentials.digital_source_type == (
        metadata.digital_source_type
    )


def _captured_after(
    captured_at: str | None, timeline: Sequence[dict[str, Any]]
) -> tuple[dict[str, Any], str] | None:
    """The first dated place and its date, when the capture is surely later than it."""
    captured = _moment(captured_at, latest=False)
    if captured is None:
        return None
    dated = [
        (moment, place, str(value))
        for place in timeline
        if (value := place.get("published_at") or place.get("first_seen"))
        and (moment := _moment(str(value), latest=True)) is not None
    ]
    if not dated:
        return None
    first, place, value = min(dated, key=lambda entry: entry[0])
    return (place, value) if captured > first else None


def _moment(value: str | None, *, latest: bool) -> datetime | None:
    """The earliest (or latest) UTC moment a date can mean.

    A time without an offset is local time somewhere (UTC-12 to UTC+14); a date alone is any
    time that day.
    """
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        return parsed.astimezone(UTC)
    if len(value) <= 10 and latest:
        parsed = datetime.combine(parsed.date(), datetime.max.time())
    parsed = parsed.replace(tzinfo=UTC)
    return parsed + ZONE_SLACK if latest else parsed - ZONE_SLACK
