"""The verdict, its evidence and the timeline in words: one presenter for the page and the CLI.

Plain text with no markup; the page escapes it for Markdown, the CLI prints it as it is. The
API returns the same facts as data (`SearchResult.as_check`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from PIL import Image, ImageDraw

from ingest.alerts import known_fake
from search.banks import BankMatch
from search.changes import Changes
from search.service import Match, SearchResult
from search.verdict import Verdict

NOT_IN_CATALOG = "Not in the catalog: no copy of this picture has been seen before."
NO_MATCHES = "No similar images found."


def title_of(payload: Mapping[str, Any]) -> str:
    """An image's title, else the last part of its link, else the start of its hash."""
    if payload.get("title"):
        return str(payload["title"])
    uri = str(payload.get("source_uri") or "")
    return uri.rstrip("/").rsplit("/", 1)[-1] or str(payload.get("sha256", "?"))[:12]


def when_published(place: Mapping[str, Any]) -> str:
    """When a place published the picture: its date, else when the catalog first saw it."""
    return str(place.get("published_at") or f"first seen {place.get('first_seen') or '?'}")


def when_of(payload: Mapping[str, Any]) -> str:
    """A catalog image's date for a result line: published, else ingested."""
    return str(payload.get("published_at") or payload.get("ingested_at") or "")


def kind_of(verdict: Verdict) -> str:
    """ "Same file", "Edited copy" or "Not in the catalog"."""
    return {"exact": "Same file", "copy": "Edited copy"}.get(verdict.kind, "Not in the catalog")


def evidence_of(verdict: Verdict) -> str:
    """The strongest member's evidence in words ("edited copy: 14 of 256 hash bits differ")."""
    return verdict.original.evidence.text if verdict.original else ""


def skipped_layers(verdict: Verdict) -> dict[str, str]:
    """{layer: why} for every layer of the verdict that did not run."""
    return {layer: why for layer, why in verdict.layers.items() if not why.startswith("ran")}


def first_publication(verdict: Verdict) -> str:
    """ "First published DATE by SOURCE: TITLE <LINK>." (empty without a timeline)."""
    first = verdict.first_published
    if not first:
        return ""
    date = first.get("published_at") or first.get("first_seen") or "an unknown date"
    where = f"First published {date} by {first.get('source') or '?'}: {title_of(first)}"
    return where + (f" <{first['source_uri']}>." if first.get("source_uri") else ".")


def evidence_line(verdict: Verdict, changes: Changes | None = None) -> str:
    """The evidence, and for an edited copy what changed ("edited copy: 14 of 256 hash bits
    differ; a region of 6% changed, text added; cropped 10%")."""
    evidence = evidence_of(verdict)
    return f"{evidence}; {changes.summary()}" if changes else evidence


def verdict_line(verdict: Verdict, changes: Changes | None = None) -> str:
    """One sentence: the verdict, its evidence and where the picture was first published."""
    if verdict.kind == "none":
        return NOT_IN_CATALOG
    what = "the same file" if verdict.kind == "exact" else "an edited copy"
    where = first_publication(verdict)
    line = f"Published before: {what} is in the catalog ({evidence_line(verdict, changes)})."
    return f"{line} {where}" if where else line


def bank_line(match: BankMatch) -> str:
    """ "Known fake: in bank debunked, NOTE, LINK (edited copy: 12 of 256 hash bits differ)." """
    return f"{known_fake(match.bank, match.note, match.link)} ({match.evidence.text})."


def bank_lines(result: SearchResult) -> list[str]:
    """One line per bank the picture is in, shown above the verdict."""
    return [bank_line(match) for match in result.banks]


def score_name(result: SearchResult) -> str:
    """ "score" for similarities, "distance" for distances."""
    return "score" if result.higher_is_better else "distance"


def match_mark(match: Match) -> str:
    """What the verdict said of a match: "same file", "edited copy" or nothing."""
    return "same file" if match.exact else "edited copy" if match.copy else ""


STATES = {
    "trusted": "signed by a trusted signer, and intact",
    "valid": "signed and intact, by a signer not in the trust list",
    "invalid": "they do not hold (changed after signing, or a bad signature)",
}


def metadata_rows(metadata: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What a file says about itself, as (label, value) rows; only the fields it carries."""
    rows: list[tuple[str, str]] = []
    for key, label in (
        ("captured_at", "Taken"),
        ("camera", "Camera"),
        ("software", "Software"),
        ("creator", "Creator"),
        ("credit", "Credit"),
        ("caption", "Caption"),
    ):
        if metadata.get(key):
            rows.append((label, str(metadata[key])))
    gps = metadata.get("gps")
    if isinstance(gps, Mapping) and "lat" in gps and "lon" in gps:
        rows.append(("Location", f"{gps['lat']:.5f}, {gps['lon']:.5f}"))
    if metadata.get("digital_source_type"):
        term = str(metadata["digital_source_type"]).rsplit("/", 1)[-1]
        made = " (made with a generative model)" if metadata.get("ai_generated") else ""
        rows.append(("Source type", term + made))
    credentials = metadata.get("c2pa")
    if isinstance(credentials, Mapping):
        state = str(credentials.get("state"))
        said = STATES.get(state, state)
        who = ", ".join(
            f"{label} {credentials[key]}"
            for key, label in (("signer", "signer"), ("generator", "made with"))
            if credentials.get(key)
        )
        rows.append(("Content Credentials", f"{said}" + (f"; {who}" if who else "")))
        if credentials.get("actions"):
            rows.append(("Recorded edits", ", ".join(map(str, credentials["actions"]))))
    if metadata.get("unreadable"):
        rows.append(("Unreadable", ", ".join(map(str, metadata["unreadable"])) + " (damaged)"))
    return rows


def verdict_text(name: str, result: SearchResult) -> list[str]:
    """The verdict as lines: the sentence, each member's evidence, the timeline, skipped layers."""
    verdict = result.verdict
    lines = [f"{name}: {line}" for line in bank_lines(result)]
    lines.append(f"{name}: {verdict_line(verdict, result.changes)}")
    lines.extend(f"    warning ({w.code}): {w.message}" for w in result.warnings)
    for region in result.changes.regions if result.changes else ():
        x0, y0, x1, y1 = region.box
        lines.append(f"    changed: {region.kind}, {region.share:.1%} at x {x0}-{x1}, y {y0}-{y1}")
    for member in verdict.members:
        shown = f"{title_of(member.payload)} ({member.sha256[:12]})"
        lines.append(f"    {member.evidence.text}: {shown}")
    if verdict.timeline:
        lines.append("    timeline, earliest first:")
    for place in verdict.timeline:
        lines.append(
            f"      {when_published(place)}  {place.get('source') or ''}  {title_of(place)}  "
            f"{place.get('source_uri') or ''}"
        )
    rows = metadata_rows(result.metadata.as_dict()) if result.metadata else []
    if rows:
        lines.append("    the file says:")
        lines.extend(f"      {label}: {value}" for label, value in rows)
    lines.extend(f"    ({layer} {why})" for layer, why in skipped_layers(verdict).items())
    return lines


def matches_text(result: SearchResult, *, with_ids: bool) -> list[str]:
    """The ranked matches as lines (with ids when there is no verdict to name them)."""
    if not result.matches:
        return [NO_MATCHES]
    lines = []
    for rank, match in enumerate(result.matches, result.offset + 1):
        p = match.payload
        mark = " (exact)" if match.exact else " (copy)" if match.copy else ""
        who = f"{score_name(result)} {match.score:.4f}  {match.id}" if with_ids else ""
        head = who or f"{match.score:.4f}{mark}"
        lines.append(
            f"{rank:>3}. {head}  {title_of(p)}  {when_of(p)}  {p.get('source_uri', '')}".rstrip()
        )
    return lines


def outlined(picture: Image.Image, changes: Changes, upload_size: tuple[int, int]) -> Image.Image:
    """A copy of the query's picture with each changed region outlined (boxes are in the
    upload's pixels; the picture may be a smaller preview of it)."""
    shown = picture.convert("RGB")
    scale = shown.width / max(1, upload_size[0])
    draw = ImageDraw.Draw(shown)
    width = max(2, round(max(shown.size) / 200))
    for region in changes.regions:
        box = tuple(round(v * scale) for v in region.box)
        draw.rectangle(box, outline=(255, 0, 64), width=width)
    return shown
