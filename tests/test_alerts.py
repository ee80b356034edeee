"""Alert delivery from the outbox: retried with backoff until a 2xx, never twice, guarded, and
never able to stop the run that delivers; an alert per (entry, image) once."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from config import AlertsSettings, FetchSettings
from embed.encoder import Encoder
from ingest.alerts import Alert, AlertStore
from ingest.items import Stored
from ingest.pipeline import Pipeline
from ingest.sources.folder import FolderSource
from ingest.state import StateStore
from ingest.webhooks import Webhooks
from store.images import make_image_store
from tests.conftest import image_bytes, make_descriptors, make_settings, open_catalog
from tests.webhook_server import WebhookServer

BANKS = [{"bank": "debunked", "note": "staged", "link": "https://fc.example/1"}]


def alert(image: str = "img-1", entry: str = "entry-1") -> Alert:
    payload = {
        "sha256": "ab" * 32,
        "source": "wire",
        "source_uri": "https://news.example/story",
        "title": "Storm over the bay",
        "published_at": "2030-01-02T00:00:00Z",
    }
    return Alert.of(entry, image, payload, BANKS, "ingest", {"layer": "pdq", "text": "copy"})


def webhooks(store: AlertStore, *allowed: str, **alerts: float) -> Webhooks:
    settings = AlertsSettings.model_validate({"backoff_s": 0.05, "linger_s": 0.0, **alerts})
    return Webhooks(settings, FetchSettings(allowed_private_hosts=list(allowed)), store)


def test_an_entry_and_image_are_alerted_once_with_their_deliveries_in_one_write() -> None:
    store = AlertStore(":memory:")
    first = store.add(alert(), ["https://hooks.example/a", "https://hooks.example/b"])
    assert first is not None and first.id == 1
    assert [d["url"] for d in first.deliveries] == [
        "https://hooks.example/a",
        "https://hooks.example/b",
    ]
    assert store.add(alert(), ["https://hooks.example/a"]) is None  # a rerun adds nothing
    assert store.add(alert(image="img-2"), []) is not None  # another image is another alert
    assert store.count() == 2
    assert first.text() == (
        "Known fake: in bank debunked, staged, https://fc.example/1. Found in the catalog: "
        "Storm over the bay from wire <https://news.example/story> published "
        "2030-01-02T00:00:00Z."
    )


def test_a_failed_delivery_is_retried_with_backoff_then_never_sent_again() -> None:
    with WebhookServer(lambda n: 500 if n < 2 else 204) as hook:
        store = AlertStore(":memory:")
        store.add(alert(), [hook.url])
        sender = webhooks(store, hook.host_port, backoff_s=0.2, linger_s=5)
        report = sender.deliver()
        assert (report.delivered, report.failed, report.pending) == (1, 2, 0)
        assert [p.status for p in hook.posts] == [500, 500, 204]
        assert len({p.key for p in hook.posts}) == 1  # one alert, one Idempotency-Key
        assert sender.deliver().delivered == 0  # delivered: a rerun sends nothing
        assert len(hook.posts) == 3
        (delivery,) = store.recent()[0].deliveries
        assert delivery["attempts"] == 3 and delivery["delivered_at"]


def test_retries_back_off_and_what_is_left_waits_for_the_next_call() -> None:
    with WebhookServer(lambda n: 500) as hook:
        store = AlertStore(":memory:")
        store.add(alert(), [hook.url])
        # Attempts at 0, 0.2 and 0.6 s; the next (1.4 s) is past the 1 s this call lingers.
        report = webhooks(store, hook.host_port, backoff_s=0.2, linger_s=1.0).deliver()
        assert (report.delivered, report.failed, report.pending) == (0, 3, 1)
        assert len(hook.posts) == 3
        (delivery,) = store.recent()[0].deliveries
        assert delivery["error"] == "answered 500" and delivery["delivered_at"] is None


def test_a_crash_after_sending_resends_later_with_the_same_idempotency_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with WebhookServer() as hook:
        store = AlertStore(":memory:")
        store.add(alert(), [hook.url])
        sender = webhooks(store, hook.host_port, backoff_s=0.5)

        def crash(*args: object) -> None:
            raise KeyboardInterrupt  # the process dies between the 2xx and the record

        with monkeypatch.context() as patched:
            patched.setattr(store, "delivered", crash)
            with pytest.raises(KeyboardInterrupt):
                sender.deliver()
        # Marked attempted before the send: not due at once, so no burst of resends.
        assert sender.deliver(linger_s=0).delivered == 0
        assert webhooks(store, hook.host_port).deliver(linger_s=1).delivered == 1
        assert [p.key for p in hook.posts] == [alert().key, alert().key]
        assert hook.acknowledged() == {alert().key: 2}  # the receiver drops the second by key


def test_a_webhook_on_a_private_address_is_refused_unless_allowed() -> None:
    with WebhookServer() as hook:
        store = AlertStore(":memory:")
        store.add(alert(), [hook.url])
        report = webhooks(store).deliver()
        assert (report.delivered, report.failed, report.pending) == (0, 1, 1)
        assert hook.posts == []
        (delivery,) = store.recent()[0].deliveries
        assert "IMGSEARCH_FETCH__ALLOWED_PRIVATE_HOSTS" in delivery["error"]


class Watcher:
    """A watcher that fails on every batch, and counts what it was told."""

    def __init__(self) -> None:
        self.batches = 0
        self.finished_runs = 0
        self.lock = threading.Lock()

    def added(self, stored: Sequence[Stored], vectors: Sequence[Mapping[str, np.ndarray]]) -> None:
        with self.lock:
            self.batches += 1
        raise RuntimeError("the banks are down")

    def finished(self) -> None:
        self.finished_runs += 1
        raise RuntimeError("the webhooks are down")


def test_a_failing_watcher_never_stops_a_run(tmp_path: Path, encoder: Encoder) -> None:
    settings = make_settings(tmp_path / "data")
    folder = tmp_path / "photos"
    folder.mkdir()
    for seed in range(3):
        (folder / f"p{seed}.jpg").write_bytes(image_bytes(900 + seed))
    index = open_catalog(":memory:", settings)
    state = StateStore(":memory:")
    watcher = Watcher()
    pipeline = Pipeline(
        settings,
        index,
        make_image_store(settings),
        make_descriptors(settings, encoder),
        state,
        watcher=watcher,
    )
    report = pipeline.run([FolderSource("photos", folder)])
    assert report.status == "ok" and report.total().new == 3
    assert index.count() == 3
    assert watcher.batches >= 1 and watcher.finished_runs == 1


def test_a_verified_or_embargoed_bank_is_never_called_a_known_fake() -> None:
    from ingest.alerts import known_fake

    assert known_fake("debunked", "staged", "https://fc.example/1") == (
        "Known fake: in bank debunked, staged, https://fc.example/1"
    )
    assert (
        known_fake("verified", "checked on site") == "Verified: in bank verified, checked on site"
    )
    assert known_fake("Embargoed") == "Embargoed: in bank Embargoed"
