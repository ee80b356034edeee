"""Alerts: a banked picture found in the catalog, whichever of the two arrives second.

- Ingestion: every image a run adds is matched against the banks (`added`, called by the
  pipeline after each batch is upserted; one count of the banks' index when they are empty).
- Retroactive: a picture added to a bank is checked against the catalog with the catalog's own
  verdict (`retroactive`), so what was already seen is found too.
Each (entry, image) is alerted once (ingest/alerts.py) and delivered to the webhooks from the
outbox (ingest/webhooks.py) when the run ends, in a thread of its own: an upload through the API
or the page never waits for a slow or failing webhook; a command waits for it when it closes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence

import numpy as np

from config import Settings
from embed.decode import DecodedImage, DecodeError, decode_image
from embed.descriptors import IMAGE
from ingest.alerts import Alert, AlertStore
from ingest.items import Stored
from ingest.webhooks import DeliveryReport, Webhooks
from search.banks import Added, BankMatch, Banks, Entry
from search.service import query_fit
from search.verdict import CopyDetector
from store.images import ImageStore, StoreError
from store.index import VectorIndex

log = logging.getLogger(__name__)


class Alerts:
    """Finds, records and delivers alerts; the pipeline's watcher of what each run adds."""

    def __init__(
        self,
        settings: Settings,
        banks: Banks,
        catalog: VectorIndex,
        detector: CopyDetector,
        images: ImageStore,
        store: AlertStore,
    ) -> None:
        self.settings = settings
        self.banks = banks
        self.catalog = catalog
        self.detector = detector  # the catalog's (the search service's) verdict
        self.images = images
        self.store = store
        self.webhooks = Webhooks(settings.alerts, settings.fetch, store)
        self._sender: threading.Thread | None = None
        self._again = False  # a run ended while the sender was busy: one more pass
        self._sender_lock = threading.Lock()

    # -- the pipeline's watcher ---------------------------------------------------------------
    def added(
        self, stored: Sequence[Stored], vectors: Sequence[Mapping[str, np.ndarray]]
    ) -> list[Alert]:
        """Match the images a batch just added against the banks; returns the new alerts."""
        if not stored or self.banks.is_empty():
            return []
        new: list[Alert] = []
        for item, named in zip(stored, vectors, strict=True):
            decoded = self._decode(item.image_key)
            if decoded is None:
                continue
            matches = self.banks.match(decoded, named.get(IMAGE))
            if not matches:
                continue
            hits = self.catalog.get([item.point_id])
            payload = hits[0].payload if hits else {}
            new.extend(self._record(matches, item.point_id, payload))
        return new

    def finished(self) -> None:
        """The run is over: deliver what is due, in the background (failures are retried for
        `linger_s`, then kept for the next run or command)."""
        if not self.settings.alerts.webhooks:
            return
        with self._sender_lock:
            if self._sender is not None and self._sender.is_alive():
                self._again = True
                return
            self._sender = threading.Thread(target=self._send, name="alert-webhooks", daemon=True)
            self._sender.start()

    def close(self) -> None:
        """Wait for the background delivery (bounded by its linger and the webhooks' timeouts)."""
        with self._sender_lock:
            sender = self._sender
        if sender is not None:
            alerts = self.settings.alerts
            sender.join(timeout=alerts.linger_s + 2 * alerts.timeout_s + 5)

    def _send(self) -> None:
        while True:
            self.deliver()
            with self._sender_lock:
                if not self._again:
                    self._sender = None
                    return
                self._again = False

    # -- banks -> catalog ---------------------------------------------------------------------
    def bank(
        self,
        bank: str,
        data: bytes,
        *,
        note: str = "",
        link: str = "",
        added_by: str = "",
        file: str = "",
    ) -> tuple[Added, list[Alert]]:
        """Add a picture to a bank (creating the bank) and match it against the catalog at once;
        the CLI, the API and the page all add entries through here."""
        added = self.banks.add(bank, data, note=note, link=link, added_by=added_by, file=file)
        return added, self.retroactive(added.entry)

    def retroactive(self, entry: Entry) -> list[Alert]:
        """Check a banked picture against the catalog; an alert for each image that is it."""
        decoded = self._decode(str(entry.payload.get("image_key") or ""))
        if decoded is None:
            return []
        verdict = self.detector.check(decoded)
        new = []
        for member in verdict.members:
            alert = Alert.of(
                entry.id,
                member.id,
                member.payload,
                [m.as_dict() for m in entry.banks],
                "retroactive",
                member.evidence.as_dict(),
            )
            recorded = self.store.add(alert, self.settings.alerts.webhooks)
            if recorded is not None:
                new.append(recorded)
        return new

    def deliver(self, linger_s: float | None = None) -> DeliveryReport:
        """Send the outbox's due deliveries (never raises: failures are retried later)."""
        try:
            return self.webhooks.deliver(linger_s)
        except Exception:  # the state database itself failing: logged, the caller goes on
            log.exception("alert delivery failed")
            return DeliveryReport()

    # -- internals ----------------------------------------------------------------------------
    def _record(
        self, matches: Sequence[BankMatch], image: str, payload: Mapping[str, object]
    ) -> list[Alert]:
        """One alert per entry matched (its banks together), unless already alerted."""
        new = []
        for entry_id in dict.fromkeys(m.entry for m in matches):
            mine = [m for m in matches if m.entry == entry_id]
            entry = self.banks.get(entry_id)
            banks = [m.as_dict() for m in entry.banks] if entry else []
            alert = Alert.of(entry_id, image, payload, banks, "ingest", mine[0].evidence.as_dict())
            recorded = self.store.add(alert, self.settings.alerts.webhooks)
            if recorded is not None:
                log.info("alert: %s", recorded.text())
                new.append(recorded)
        return new

    def _decode(self, key: str) -> DecodedImage | None:
        """A stored original decoded as a query is (the verdict's geometric side)."""
        try:
            data = self.images.get(key)
            return decode_image(
                data,
                max_pixels=self.settings.decode.max_pixels,
                fit=query_fit(self.settings.verdict),
            )
        except (StoreError, DecodeError) as exc:
            log.warning("cannot match %s against the banks: %s", key, exc)
            return None
