"""Stage decode: Fetched bytes -> Decoded RGB image (or Failed with the reason), memory bounded.

Two bounds keep ingestion's memory a property of the design rather than of the input:
- pixels: each image is decoded only as large as the thumbnail and the descriptors need
  (`ingest_fit`), a JPEG at a reduced DCT scale, so what travels on to the store and embed
  stages is a working copy of about a megapixel, never the full-size buffer;
- concurrency: at most `decode.concurrency` images are decoded at once, so however many
  downloads are in flight, only that many full-size buffers (each within the pixel cap) exist.
"""

from __future__ import annotations

import os
import threading

from config import Settings
from embed.decode import DecodeError, Fit, decode_image
from embed.descriptors import needed_fit
from embed.metadata import MetadataReader
from ingest.items import Decoded, Failed, Fetched

# The short side the model inputs are resized to, the largest any descriptor asks for (SSCD's
# "small_288" recipe covers ResNet50's and CLIP's).
MODEL_SHORT_SIDE = needed_fit().short
MAX_AUTO_CONCURRENCY = 4


def ingest_fit(settings: Settings) -> Fit:
    """What ingestion's consumers need: every descriptor's input (the models' short side, the
    hashes' long side) and the thumbnail's long side. The copy verdict's geometric check reads
    the stored original."""
    return needed_fit(long=settings.storage.thumbnail_px)


def decode_concurrency(settings: Settings) -> int:
    """How many images may be decoded at once: the setting, or one per two cores (1 to 4)."""
    if settings.decode.concurrency:
        return settings.decode.concurrency
    return max(1, min(MAX_AUTO_CONCURRENCY, (os.cpu_count() or 1) // 2))


class Decoder:
    """The decode stage: thread-safe, at most `concurrency` decodes at a time."""

    def __init__(
        self,
        *,
        fit: Fit | None,
        max_pixels: int,
        concurrency: int,
        metadata: MetadataReader | None = None,
    ) -> None:
        self.fit = fit
        self.max_pixels = max_pixels
        self.concurrency = max(1, concurrency)
        self.metadata = metadata
        self._slots = threading.BoundedSemaphore(self.concurrency)

    @classmethod
    def from_settings(cls, settings: Settings, metadata: MetadataReader | None = None) -> Decoder:
        """The ingestion decoder these settings describe (reading each file's own metadata)."""
        return cls(
            fit=ingest_fit(settings),
            max_pixels=settings.decode.max_pixels,
            concurrency=decode_concurrency(settings),
            metadata=metadata or MetadataReader(settings.metadata),
        )

    def __call__(self, fetched: Fetched) -> Decoded | Failed:
        """Decode through the one safe decoder every path uses."""
        try:
            with self._slots:
                image = decode_image(fetched.data, max_pixels=self.max_pixels, fit=self.fit)
        except DecodeError as exc:
            # A changed source item gets a new version and is tried again; retries of the same
            # bytes would fail the same way unless the failure was a cut-off download.
            return Failed(fetched.item, "decode", exc.reason, retryable="truncated" in exc.reason)
        reader = self.metadata
        claims = (
            reader.read(fetched.data, image.content_type).as_dict()
            if reader is not None and reader.settings.enabled
            else None
        )
        return Decoded(fetched.item, fetched.data, image, claims)
