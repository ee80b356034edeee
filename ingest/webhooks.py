"""Delivery of alerts to webhooks from the outbox: retried with backoff until a 2xx, never twice.

Each delivery is marked attempted (its retry time set) before the request goes out and
delivered after a 2xx, so a rerun never sends a delivered alert again. A crash between the
receiver's 2xx and the mark can only lead to a later resend of the same alert with the same
`Idempotency-Key` header (the alert's key, a UUID5 of entry and image), which receivers use to
drop the duplicate. Targets go through the same private-address guard as feeds
(ingest/netguard.py, IMGSEARCH_FETCH__ALLOWED_PRIVATE_HOSTS). A webhook that fails, refuses or
hangs is recorded with its reason and never stops the run or command that delivers.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import httpx

from config import AlertsSettings, FetchSettings
from ingest.alerts import AlertStore, Delivery
from ingest.http import _guarded_transport
from ingest.netguard import Policy, Refused

log = logging.getLogger(__name__)


@dataclass
class DeliveryReport:
    """What one `deliver` call did."""

    delivered: int = 0
    failed: int = 0  # attempts that got no 2xx (each is retried later)
    pending: int = 0  # deliveries left for a later call

    def summary(self) -> str:
        """ "delivered 3, failed attempts 1, left for later 0"."""
        return (
            f"delivered {self.delivered}, failed attempts {self.failed}, "
            f"left for later {self.pending}"
        )


def body_of(delivery: Delivery) -> dict[str, object]:
    """The JSON body: Slack-compatible `text` plus the structured alert."""
    return {"text": delivery.alert.text(), "alert": delivery.alert.as_dict()}


class Webhooks:
    """Sends due outbox deliveries; thread-safe (one delivery pass at a time)."""

    def __init__(self, settings: AlertsSettings, fetch: FetchSettings, store: AlertStore) -> None:
        self.settings = settings
        self.fetch = fetch
        self.store = store
        self.policy = Policy(fetch.allowed_private_hosts)
        self._lock = threading.Lock()

    def deliver(self, linger_s: float | None = None) -> DeliveryReport:
        """Send every due delivery; keep retrying those that fail for up to `linger_s` (the
        setting by default, 0: one pass), then leave the rest to a later call."""
        report = DeliveryReport()
        linger = self.settings.linger_s if linger_s is None else linger_s
        deadline = time.monotonic() + linger
        with self._lock, self._client() as client:
            while True:
                for delivery in self.store.due():
                    if self._send(client, delivery):
                        report.delivered += 1
                    else:
                        report.failed += 1
                upcoming = self.store.next_due()
                if upcoming is None:
                    break
                wait = max(0.0, upcoming - time.time())
                if time.monotonic() + wait > deadline:
                    break
                time.sleep(wait)
        report.pending = len(self.store.due(now=float("inf"), limit=100_000))
        if report.delivered or report.failed:
            log.info("alert webhooks: %s", report.summary())
        return report

    def _client(self) -> httpx.Client:
        limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
        return httpx.Client(
            timeout=httpx.Timeout(self.settings.timeout_s, connect=self.fetch.connect_timeout_s),
            transport=_guarded_transport(self.policy, limits),
            trust_env=False,  # a proxy would resolve names itself, out of the guard's checks
            follow_redirects=False,
            headers={"User-Agent": self.fetch.user_agent},
        )

    def _retry_at(self, attempts: int) -> float:
        pause = self.settings.backoff_s * 2 ** max(0, attempts)
        return time.time() + min(pause, self.settings.max_backoff_s)

    def _send(self, client: httpx.Client, delivery: Delivery) -> bool:
        """One attempt: marked before it goes out, delivered only after a 2xx."""
        self.store.attempting(delivery, self._retry_at(delivery.attempts))
        status: int | None = None
        try:
            response = client.post(
                delivery.url,
                json=body_of(delivery),
                headers={"Idempotency-Key": delivery.alert.key},
            )
            status = response.status_code
            if 200 <= status < 300:
                self.store.delivered(delivery, status)
                return True
            reason = f"answered {status}"
        except Exception as exc:  # refused by the guard, unreachable, timed out: retried later
            reason = exc.reason if isinstance(exc, Refused) else f"{type(exc).__name__}: {exc}"
        log.warning("alert %s to %s: %s", delivery.alert.key, delivery.url, reason)
        self.store.failed(delivery, status, reason)
        return False
