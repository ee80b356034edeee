"""Banks of known pictures (debunked, verified, embargoed...), matched like the verdict's catalog.

A bank entry is one point of its own vector index (store/factory.py `open_bank_index`: the
catalog's named vectors in a second collection), its original and thumbnail in the image store
under the same content addresses as a catalog image's. Its payload lists its memberships: one
picture can be in several banks, each time with a note, a link (the fact check), who added it
and when. Matching is the verdict itself (search/verdict.py `CopyDetector`) run against the
banks' index, so SHA-256, PDQ, SSCD (when present) and geometric verification apply unchanged,
and finding an entry is an index query per layer, never a scan of the banks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from config import Settings
from embed.decode import DecodedImage, decode_image
from embed.descriptors import IMAGE, Descriptors
from ingest.decode import ingest_fit
from ingest.state import iso, utcnow
from search.verdict import CopyDetector, Evidence
from store.images import ImageStore, make_thumbnail
from store.index import Hit, PointRecord, VectorIndex
from store.keys import original_key, point_id, thumbnail_key

BANK_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
ENTRY_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class BankError(ValueError):
    """A bank request that cannot be done as asked (a bad bank name); one sentence why."""


class UnknownEntry(LookupError):
    """No such entry in that bank; one sentence naming it."""


@dataclass(frozen=True)
class Membership:
    """An entry's place in one bank: the desk's note, the fact check's link, who and when."""

    bank: str
    note: str = ""
    link: str = ""
    added_by: str = ""
    added_at: str = ""

    def as_dict(self) -> dict[str, str]:
        """JSON-ready form (as kept in the entry's payload)."""
        return {
            "bank": self.bank,
            "note": self.note,
            "link": self.link,
            "added_by": self.added_by,
            "added_at": self.added_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Membership:
        """From the payload's form."""
        return cls(
            **{k: str(data.get(k) or "") for k in ("note", "link", "added_by", "added_at")},
            bank=str(data.get("bank") or ""),
        )


def memberships(payload: Mapping[str, Any]) -> list[Membership]:
    """The banks an entry's payload says it is in."""
    return [Membership.from_dict(m) for m in payload.get("banks") or () if isinstance(m, Mapping)]


@dataclass(frozen=True)
class Entry:
    """One banked picture: its id (a UUID5 of its SHA-256), payload and memberships."""

    id: str
    payload: dict[str, Any]

    @property
    def sha256(self) -> str:
        """The entry's content hash."""
        return str(self.payload.get("sha256", ""))

    @property
    def banks(self) -> list[Membership]:
        """Every bank it is in."""
        return memberships(self.payload)

    def membership(self, bank: str) -> Membership | None:
        """Its membership of one bank, if any."""
        return next((m for m in self.banks if m.bank == bank), None)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: id, sha256, file, width, height, banks."""
        p = self.payload
        return {
            "id": self.id,
            "sha256": self.sha256,
            "file": p.get("file", ""),
            "width": p.get("width"),
            "height": p.get("height"),
            "banks": [m.as_dict() for m in self.banks],
        }


@dataclass(frozen=True)
class BankMatch:
    """A query found to be a banked picture: the bank, the entry, its note and link, and why."""

    bank: str
    entry: str
    note: str
    link: str
    evidence: Evidence

    def as_dict(self) -> dict[str, Any]:
        """The check's `banks` item: bank, entry, note, link, evidence."""
        return {
            "bank": self.bank,
            "entry": self.entry,
            "note": self.note,
            "link": self.link,
            "evidence": self.evidence.as_dict(),
        }


@dataclass(frozen=True)
class Added:
    """What `Banks.add` did: the entry, and whether its picture was new to every bank."""

    entry: Entry
    new: bool
    decoded: DecodedImage  # decoded as the catalog decodes an ingested image


def check_bank(name: str) -> str:
    """A bank name as given, or BankError: lower-case letters, digits, '-' and '_'."""
    if not BANK_NAME.match(name or ""):
        raise BankError(
            f"{name!r} is not a bank name: use lower-case letters, digits, '-' and '_' "
            "(at most 64, starting with a letter or digit)"
        )
    return name


class Banks:
    """The banks: add, list and remove entries, and match a decoded picture against them."""

    def __init__(
        self, index: VectorIndex, images: ImageStore, descriptors: Descriptors, settings: Settings
    ) -> None:
        self.index = index
        self.images = images
        self.descriptors = descriptors
        self.settings = settings
        self.detector = CopyDetector(index, images, descriptors, settings.verdict)

    # -- writes -------------------------------------------------------------------------------
    def add(
        self,
        bank: str,
        data: bytes,
        *,
        note: str = "",
        link: str = "",
        added_by: str = "",
        file: str = "",
    ) -> Added:
        """Bank one picture (DecodeError if it is not one); a picture already banked gains the
        membership (or, in the same bank, the note and link given, keeping who added it when)."""
        check_bank(bank)
        decoded = decode_image(
            data, max_pixels=self.settings.decode.max_pixels, fit=ingest_fit(self.settings)
        )
        pid = point_id(decoded.sha256)
        member = Membership(bank, note.strip(), link.strip(), added_by.strip(), iso(utcnow()))
        found = self.index.get([pid])
        if found:
            before = Entry(pid, found[0].payload).membership(bank)
            if before is not None:  # banked here already: a new note or link replaces the old
                member = Membership(
                    bank,
                    member.note or before.note,
                    member.link or before.link,
                    before.added_by,
                    before.added_at,
                )
            kept = [m for m in memberships(found[0].payload) if m.bank != bank]
            payload = {**found[0].payload, "banks": [m.as_dict() for m in [*kept, member]]}
            self.index.set_payload(pid, {"banks": payload["banks"]})
            return Added(Entry(pid, payload), False, decoded)
        okey = original_key(decoded.sha256, decoded.extension)
        tkey = thumbnail_key(decoded.sha256)
        # Content addresses: a catalog image's objects are the same bytes, rewritten harmlessly.
        self.images.put(okey, data, decoded.content_type)
        self.images.put(
            tkey,
            make_thumbnail(decoded.image, self.settings.storage.thumbnail_px),
            "image/jpeg",
        )
        vectors = self.descriptors.compute([self.descriptors.prepare(decoded.image)])[0]
        payload = {
            "sha256": decoded.sha256,
            "image_key": okey,
            "thumbnail_key": tkey,
            "width": decoded.width,
            "height": decoded.height,
            "format": decoded.format,
            "content_type": decoded.content_type,
            "bytes": decoded.nbytes,
            "file": file,
            "title": file or f"bank entry {decoded.sha256[:12]}",
            "banks": [member.as_dict()],
            "descriptors": dict(self.descriptors.labels),
        }
        self.index.upsert([PointRecord(pid, vectors, payload)])
        return Added(Entry(pid, payload), True, decoded)

    def remove(self, bank: str, entry: str, *, catalog: VectorIndex | None = None) -> Entry:
        """Take an entry out of one bank; out of its last bank, its point goes, and its files
        too unless the catalog holds the same picture (UnknownEntry if it is not in the bank)."""
        check_bank(bank)
        found = self.get(entry)
        if found is None or found.membership(bank) is None:
            raise UnknownEntry(f"There is no entry {entry} in the bank {bank}")
        kept = [m.as_dict() for m in found.banks if m.bank != bank]
        if kept:
            self.index.set_payload(found.id, {"banks": kept})
            return Entry(found.id, {**found.payload, "banks": kept})
        self.index.delete([found.id])
        if catalog is None or not catalog.existing([found.id]):
            for key in ("image_key", "thumbnail_key"):
                if found.payload.get(key):
                    self.images.delete(str(found.payload[key]))
        return Entry(found.id, {**found.payload, "banks": []})

    # -- reads --------------------------------------------------------------------------------
    def get(self, entry: str) -> Entry | None:
        """One entry by id, or None."""
        if not ENTRY_ID.match(entry.strip().lower()):
            return None
        hits = self.index.get([entry.strip().lower()])
        return Entry(hits[0].id, hits[0].payload) if hits else None

    def entries(self, bank: str | None = None) -> list[Entry]:
        """Every entry (of one bank), most recently added first."""
        out = []
        for hit in self.index.scroll():
            entry = Entry(hit.id, hit.payload)
            if bank is None or entry.membership(bank) is not None:
                out.append(entry)

        def added(e: Entry) -> str:
            times = [m.added_at for m in e.banks if bank is None or m.bank == bank]
            return max(times, default="")

        return sorted(out, key=added, reverse=True)

    def names(self) -> list[tuple[str, int]]:
        """(bank, number of entries) of every bank, by name."""
        counts: dict[str, int] = {}
        for hit in self.index.scroll():
            for m in memberships(hit.payload):
                counts[m.bank] = counts.get(m.bank, 0) + 1
        return sorted(counts.items())

    def is_empty(self) -> bool:
        """True when no bank holds anything (matching then costs one count)."""
        return self.index.count() == 0

    def thumbnail(self, entry: Entry) -> bytes:
        """An entry's thumbnail bytes (StoreError when missing)."""
        return self.images.get(str(entry.payload["thumbnail_key"]))

    # -- matching -----------------------------------------------------------------------------
    def match(self, image: DecodedImage, vector: np.ndarray | None = None) -> list[BankMatch]:
        """Every bank entry this picture is (same file or edited copy), strongest first.

        `vector` is the picture's ResNet50 vector when the caller has it already (it proposes
        candidates for geometric verification); without it the detector computes it.
        """
        if self.is_empty():
            return []
        similar: Sequence[Hit] | Callable[[], Sequence[Hit]] = ()
        if vector is not None and IMAGE in self.index.specs:
            top_k = self.settings.verdict.candidates
            similar = partial(self.index.query, vector, using=IMAGE, top_k=top_k)
        verdict = self.detector.check(image, similar)
        return [
            BankMatch(m.bank, member.id, m.note, m.link, member.evidence)
            for member in verdict.members
            for m in memberships(member.payload)
        ]
