"""What a picture says about itself: EXIF, IPTC and XMP (pyexiv2) and its Content Credentials.

Read from the uploaded file and from every ingested file, kept in the catalog's payload as
`metadata`. Each block is read on its own: a broken EXIF, a hostile XMP packet or a damaged C2PA
store costs that block (named in `unreadable`), never the picture or the run. A field the file
does not carry is absent, never guessed.

XMP is parsed by Exiv2's XMP toolkit, which refuses DOCTYPE declarations (so no entity
expansion: an entity bomb is an unreadable block), and packets over `max_xmp_bytes` are not
parsed at all.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from typing import Any

import pyexiv2

from config import MetadataSettings
from embed.credentials import CredentialReader, Credentials, load_trust_anchors

log = logging.getLogger(__name__)

# Exiv2 prints its own warnings on stderr; this module logs what matters instead.
pyexiv2.set_log_level(4)
# One pyexiv2 call at a time: Exiv2's XMP toolkit keeps process-wide state.
_EXIV2 = threading.Lock()

IPTC_TERMS = "http://cv.iptc.org/newscodes/digitalsourcetype/"
# IPTC's terms for pictures made by generative models (wholly, or composited with such parts):
# the ones Google's "About this image" and the IPTC's own guidance label as AI-generated.
AI_TERMS = ("trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia")
MAX_TEXT = 2000  # characters of a caption
MAX_SHORT = 300  # characters of any other field
MAX_NAMES = 10  # creators kept


@dataclass(frozen=True)
class Metadata:
    """The picture's own claims: capture, camera, authorship, source type, credentials."""

    captured_at: str | None = None  # ISO 8601; with its offset when the file gives one
    camera: str | None = None
    software: str | None = None
    gps: dict[str, float] | None = None  # {"lat", "lon"}
    creator: str | None = None
    credit: str | None = None
    caption: str | None = None
    digital_source_type: str | None = None  # IPTC's term (a URI), from XMP or C2PA
    ai_generated: bool | None = None  # None: nothing in the file says either way
    c2pa: Credentials | None = None
    unreadable: list[str] = field(default_factory=list)  # blocks present but not readable

    @property
    def empty(self) -> bool:
        """True when the file carries nothing this module reads."""
        return not self.as_dict()

    def as_dict(self) -> dict[str, Any]:
        """The `metadata` object: the fields the file carries (absent ones left out)."""
        out: dict[str, Any] = {
            name: value
            for name, value in (
                ("captured_at", self.captured_at),
                ("camera", self.camera),
                ("software", self.software),
                ("gps", self.gps),
                ("creator", self.creator),
                ("credit", self.credit),
                ("caption", self.caption),
                ("digital_source_type", self.digital_source_type),
                ("ai_generated", self.ai_generated),
            )
            if value is not None
        }
        if self.c2pa is not None:
            out["c2pa"] = self.c2pa.as_dict()
        if self.unreadable:
            out["unreadable"] = list(self.unreadable)
        return out


class MetadataReader:
    """Reads pictures' metadata; build once per process (settings in, trust list parsed once)."""

    def __init__(self, settings: MetadataSettings | None = None) -> None:
        self.settings = settings or MetadataSettings()
        self.credentials = CredentialReader(load_trust_anchors(self.settings.trust_anchors))

    def read(self, data: bytes, content_type: str) -> Metadata:
        """Everything the file says about itself; never raises for what the file holds."""
        if not self.settings.enabled:
            return Metadata()
        unreadable: list[str] = []
        tags = self._tags(data, unreadable)
        credentials = self._credentials(data, content_type, unreadable)
        return _combine(tags, credentials, unreadable)

    def _tags(self, data: bytes, unreadable: list[str]) -> dict[str, Any]:
        """EXIF, IPTC and XMP tags by Exiv2 key; a block that fails is named in `unreadable`.

        Exiv2 reads a file's blocks together and gives up on all of them when one is damaged,
        so a JPEG it refuses is read again one metadata segment at a time.
        """
        with _EXIV2:
            try:
                return self._read_blocks(data, unreadable)
            except RuntimeError as exc:
                blocks = _jpeg_blocks(data)
                if not blocks:  # not a JPEG, or no metadata segment: nothing more to try
                    log.info("no EXIF/IPTC/XMP read: %s", exc)
                    if data[:2] == JPEG_START:
                        unreadable.append("metadata")
                    return {}
            tags: dict[str, Any] = {}
            for name, segment in blocks:
                try:
                    tags.update(self._read_blocks(JPEG_START + segment + JPEG_END, unreadable))
                except RuntimeError as exc:
                    log.warning("the picture's %s block is unreadable: %s", name, exc)
                    unreadable.append(name)
            return tags

    def _read_blocks(self, data: bytes, unreadable: list[str]) -> dict[str, Any]:
        image = pyexiv2.ImageData(data)
        try:
            tags: dict[str, Any] = {}
            for block, read in (("exif", image.read_exif), ("iptc", image.read_iptc)):
                try:
                    tags.update(read())
                except (RuntimeError, UnicodeDecodeError, ValueError) as exc:
                    log.warning("the picture's %s block is unreadable: %s", block, exc)
                    unreadable.append(block)
            tags.update(self._xmp(image, unreadable))
            return tags
        finally:
            image.close()

    def _xmp(self, image: Any, unreadable: list[str]) -> dict[str, Any]:
        try:
            size = len(image.read_raw_xmp())
            if not size:
                return {}
            if size > self.settings.max_xmp_bytes:
                log.warning(
                    "the picture's XMP packet (%d bytes) is over the %d-byte limit: not read",
                    size,
                    self.settings.max_xmp_bytes,
                )
                unreadable.append("xmp")
                return {}
            tags = dict(image.read_xmp())
        except (RuntimeError, UnicodeDecodeError, ValueError) as exc:
            log.warning("the picture's XMP packet is unreadable: %s", exc)
            unreadable.append("xmp")
            return {}
        if not tags:  # a packet Exiv2's XMP toolkit refused (a DOCTYPE, broken XML)
            log.warning("the picture's XMP packet (%d bytes) is not valid XMP: not read", size)
            unreadable.append("xmp")
        return tags

    def _credentials(
        self, data: bytes, content_type: str, unreadable: list[str]
    ) -> Credentials | None:
        try:
            return self.credentials.read(data, content_type)
        except Exception as exc:  # a damaged manifest store is one unreadable block
            log.warning("the picture's C2PA manifest store is unreadable: %s", exc)
            unreadable.append("c2pa")
            return None


def _combine(tags: dict[str, Any], c2pa: Credentials | None, unreadable: list[str]) -> Metadata:
    source_type = _text(tags.get("Xmp.iptcExt.DigitalSourceType"), MAX_SHORT)
    if c2pa is not None and c2pa.digital_source_type:
        source_type = source_type or c2pa.digital_source_type
    kinds = {
        kind.removeprefix(IPTC_TERMS)
        for kind in (source_type, c2pa.digital_source_type if c2pa else None)
        if kind
    }
    ai = True if kinds & set(AI_TERMS) else (False if kinds else None)
    return Metadata(
        captured_at=_captured_at(tags),
        camera=_camera(tags),
        software=_first(tags, MAX_SHORT, "Exif.Image.Software", "Xmp.xmp.CreatorTool"),
        gps=_gps(tags),
        creator=_first(
            tags, MAX_SHORT, "Xmp.dc.creator", "Iptc.Application2.Byline", "Exif.Image.Artist"
        ),
        credit=_first(tags, MAX_SHORT, "Xmp.photoshop.Credit", "Iptc.Application2.Credit"),
        caption=_first(
            tags,
            MAX_TEXT,
            "Xmp.dc.description",
            "Iptc.Application2.Caption",
            "Exif.Image.ImageDescription",
        ),
        digital_source_type=source_type,
        ai_generated=ai,
        c2pa=c2pa,
        unreadable=unreadable,
    )


JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"
# JPEG segments that carry metadata Exiv2 reads, by the signature they start with.
SEGMENTS = (
    (0xE1, b"Exif\x00", "exif"),
    (0xE1, b"http://ns.adobe.com/xap/1.0/\x00", "xmp"),
    (0xED, b"Photoshop 3.0\x00", "iptc"),
)


def _jpeg_blocks(data: bytes) -> list[tuple[str, bytes]]:
    """A JPEG's EXIF, XMP and IPTC segments (marker and length included), before its scan."""
    if data[:2] != JPEG_START:
        return []
    blocks: list[tuple[str, bytes]] = []
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xDA:  # start of scan: no metadata after it
            break
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if end > len(data):
            break
        for kind, signature, name in SEGMENTS:
            if marker == kind and data[pos + 4 : pos + 4 + len(signature)] == signature:
                blocks.append((name, data[pos:end]))
        pos = end
    return blocks


def _text(value: Any, limit: int) -> str | None:
    """A tag's text: the default language of an XMP alternative, the names of a list."""
    if isinstance(value, dict):  # XMP lang-alt: {'lang="x-default"': text, ...}
        value = value.get('lang="x-default"') or next(iter(value.values()), None)
    if isinstance(value, list):
        value = "; ".join(str(v).strip() for v in value[:MAX_NAMES] if str(v).strip())
    if value is None:
        return None
    text = " ".join(str(value).replace("\x00", " ").split())
    return text[:limit] or None


def _first(tags: dict[str, Any], limit: int, *keys: str) -> str | None:
    for key in keys:
        text = _text(tags.get(key), limit)
        if text:
            return text
    return None


def _camera(tags: dict[str, Any]) -> str | None:
    make = _text(tags.get("Exif.Image.Make"), MAX_SHORT)
    model = _text(tags.get("Exif.Image.Model"), MAX_SHORT)
    if make and model and model.lower().startswith(make.split()[0].lower()):
        return model  # "Canon" + "Canon EOS R5" is "Canon EOS R5"
    return " ".join(part for part in (make, model) if part) or None


EXIF_DATE = re.compile(r"^(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
OFFSET = re.compile(r"^[+-]\d{2}:\d{2}$")


def _captured_at(tags: dict[str, Any]) -> str | None:
    """DateTimeOriginal (with OffsetTimeOriginal), else XMP's or IPTC's date of creation."""
    exif = _text(tags.get("Exif.Photo.DateTimeOriginal"), 64)
    if exif and (found := EXIF_DATE.match(exif)):
        try:
            year, month, day, hour, minute, second = (int(part) for part in found.groups())
            taken = datetime(year, month, day, hour, minute, second)
        except ValueError:
            taken = None
        if taken is not None:
            offset = _text(tags.get("Exif.Photo.OffsetTimeOriginal"), 16)
            if offset and OFFSET.match(offset):
                sign = -1 if offset[0] == "-" else 1
                hours, minutes = int(offset[1:3]), int(offset[4:6])
                if hours <= 14 and minutes < 60:
                    zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
                    taken = taken.replace(tzinfo=zone)
            return taken.isoformat()
    for key in ("Xmp.exif.DateTimeOriginal", "Xmp.photoshop.DateCreated"):
        text = _text(tags.get(key), 64)
        if text:
            try:
                return datetime.fromisoformat(text).isoformat()
            except ValueError:
                continue
    created = _text(tags.get("Iptc.Application2.DateCreated"), 16)
    if created:
        try:
            return datetime.fromisoformat(created).date().isoformat()
        except ValueError:
            return None
    return None


def _gps(tags: dict[str, Any]) -> dict[str, float] | None:
    lat = _degrees(tags.get("Exif.GPSInfo.GPSLatitude"), tags.get("Exif.GPSInfo.GPSLatitudeRef"))
    lon = _degrees(tags.get("Exif.GPSInfo.GPSLongitude"), tags.get("Exif.GPSInfo.GPSLongitudeRef"))
    if lat is None or lon is None or abs(lat) > 90 or abs(lon) > 180:
        return None
    return {"lat": round(lat, 6), "lon": round(lon, 6)}


def _degrees(value: Any, ref: Any) -> float | None:
    """EXIF's "d/1 m/1 s/100" rationals and an N/S/E/W reference as signed degrees."""
    if not isinstance(value, str) or not isinstance(ref, str):
        return None
    try:
        parts = [Fraction(part) for part in value.split()[:3]]
    except (ValueError, ZeroDivisionError):
        return None
    if not parts or any(p < 0 for p in parts):
        return None
    degrees = float(sum(p / 60**i for i, p in enumerate(parts)))
    side = ref.strip().upper()[:1]
    if side not in ("N", "S", "E", "W"):
        return None
    return -degrees if side in ("S", "W") else degrees
