"""Compose the core (index, image store, encoder, state, pipeline, search) from settings."""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from types import TracebackType

from config import Settings
from embed.clip import ClipEncoder
from embed.descriptors import (
    CLIP,
    IMAGE,
    SSCD,
    ClipDescriptor,
    Descriptors,
    ImageDescriptor,
    SscdDescriptor,
    load_descriptors,
    specs,
)
from embed.encoder import Encoder
from embed.metadata import MetadataReader
from embed.sscd import SscdEncoder
from ingest.alerts import AlertStore
from ingest.items import Source
from ingest.pipeline import Pipeline
from ingest.sources import adhoc_source, make_source
from ingest.state import StateStore
from search.alerts import Alerts
from search.banks import Banks
from search.catalog import Catalog
from search.service import SearchService
from store.factory import open_bank_index, open_index
from store.images import ImageStore, make_image_store
from store.index import VectorIndex


class Runtime:
    """Heavy objects built lazily, once, and shared by whatever this process runs.

    A command uses it as a context manager (`with Runtime(settings) as runtime:`), which
    releases the index lock and the state database however the command ends.
    """

    def __init__(self, settings: Settings, *, accept_relabel: Sequence[str] = ()) -> None:
        self.settings = settings
        self.accept_relabel = tuple(accept_relabel)  # descriptors `reindex --rebuild` recomputes

    @cached_property
    def index(self) -> VectorIndex:
        """The vector index (opening it takes the embedded folder's lock)."""
        return open_index(self.settings, specs(self.settings))

    @cached_property
    def bank_index(self) -> VectorIndex:
        """The banks' vector index (a second collection with the catalog's vectors)."""
        return open_bank_index(self.settings, specs(self.settings))

    @cached_property
    def banks(self) -> Banks:
        """The banks of known pictures (their vectors checked against this process's models)."""
        descriptors = self.descriptors
        self.bank_index.check_labels(descriptors.labels, self.accept_relabel)
        return Banks(self.bank_index, self.images, descriptors, self.settings)

    @cached_property
    def alert_store(self) -> AlertStore:
        """Alerts and their outbox, in the state database."""
        return AlertStore(self.settings.state_db)

    @cached_property
    def alerts(self) -> Alerts:
        """Finds, records and delivers alerts (the pipeline's watcher)."""
        return Alerts(
            self.settings,
            self.banks,
            self.index,
            self.search.detector,
            self.images,
            self.alert_store,
        )

    @cached_property
    def images(self) -> ImageStore:
        """The image store."""
        return make_image_store(self.settings)

    @cached_property
    def encoder(self) -> Encoder:
        """The encoder (the model loads here, once per process)."""
        return ImageDescriptor.load_model(self.settings, self.settings.embed.device)

    @cached_property
    def sscd(self) -> SscdEncoder | None:
        """The SSCD copy-detection model, when its weights are configured or cached."""
        return SscdDescriptor.load_model(self.settings, str(self.encoder.device))

    @cached_property
    def clip(self) -> ClipEncoder | None:
        """The CLIP model of text search, when IMGSEARCH_TEXT__ENABLED (missing: one sentence)."""
        return ClipDescriptor.load_model(self.settings, str(self.encoder.device))

    @cached_property
    def descriptors(self) -> Descriptors:
        """Every descriptor this process computes; the catalog is checked against their models."""
        models = {IMAGE: self.encoder, SSCD: self.sscd, CLIP: self.clip}
        # Any other descriptor's model loads on the encoder's device.
        descriptors = load_descriptors(self.settings, models, device=str(self.encoder.device))
        self.index.check_labels(descriptors.labels, self.accept_relabel)
        return descriptors

    @cached_property
    def state(self) -> StateStore:
        """The ingestion state database."""
        return StateStore(
            self.settings.state_db,
            max_attempts=self.settings.worker.max_attempts,
            backoff_s=self.settings.worker.retry_backoff_s,
        )

    @cached_property
    def metadata(self) -> MetadataReader:
        """The reader of pictures' own metadata and Content Credentials (trust list parsed once)."""
        return MetadataReader(self.settings.metadata)

    @cached_property
    def pipeline(self) -> Pipeline:
        """The ingestion pipeline."""
        return Pipeline(
            self.settings,
            self.index,
            self.images,
            self.descriptors,
            self.state,
            self.metadata,
            watcher=self.alerts,
        )

    @cached_property
    def search(self) -> SearchService:
        """The search service (example URLs go through the same fetch settings as feeds)."""
        return SearchService(
            self.index,
            self.images,
            self.descriptors,
            self.settings.verdict,
            self.settings.fetch,
            self.settings.decode,
            self.metadata,
            banks=self.banks,
        )

    @cached_property
    def catalog(self) -> Catalog:
        """One image's record and files, deletions and the catalog's counts."""
        return Catalog(self.index, self.images)

    def warm_up(self) -> None:
        """Open the index and load the models (checked against the catalog's) before the first
        request, so a visitor never waits for them; IndexUnavailable/ModelUnavailable if not."""
        self.index.ensure_collection()
        _ = self.descriptors

    def __enter__(self) -> Runtime:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def declared_sources(self) -> list[Source]:
        """The sources declared in settings (what the daily job parses)."""
        return [make_source(spec, self.settings) for spec in self.settings.sources]

    def adhoc_sources(self, locations: Sequence[str]) -> list[Source]:
        """Sources for paths and URLs given on the command line."""
        return [make_source(adhoc_source(loc), self.settings) for loc in locations]

    def close(self) -> None:
        """Release the index lock and the state database (a second call does nothing)."""
        if "alerts" in self.__dict__:
            self.__dict__.pop("alerts").close()  # lets the last run's webhooks finish
        if "search" in self.__dict__:
            self.__dict__.pop("search").close()
        if "index" in self.__dict__:
            self.__dict__.pop("index").close()
        if "bank_index" in self.__dict__:
            self.__dict__.pop("bank_index").close()
        if "alert_store" in self.__dict__:
            self.__dict__.pop("alert_store").close()
        if "state" in self.__dict__:
            self.__dict__.pop("state").close()


# The one Runtime per settings that everything in a process shares (the page, the API and the
# in-app schedule): the embedded index allows a single client per folder and process.
_shared: dict[str, Runtime] = {}
_shared_lock = threading.Lock()


@contextmanager
def scratch_runtime(settings: Settings, data_dir: Path | None = None) -> Iterator[Runtime]:
    """A runtime with these settings on a throw-away catalog: embedded index, local images.

    The catalog lives in data_dir, or in a temporary folder removed at the end.
    """
    if data_dir is None:
        with (
            tempfile.TemporaryDirectory(prefix="imgsearch-eval-") as tmp,
            scratch_runtime(settings, Path(tmp) / "data") as runtime,
        ):
            yield runtime
        return
    scratch = settings.model_copy(
        update={
            "data_dir": data_dir,
            "qdrant": settings.qdrant.model_copy(update={"url": ""}),
            "storage": settings.storage.model_copy(update={"url": ""}),
            "sources": [],
        }
    )
    with Runtime(scratch) as runtime:
        yield runtime


def settings_key(settings: Settings) -> str:
    """A key for settings: their JSON, with each secret as a digest (JSON masks secrets)."""
    secrets = [
        settings.qdrant.api_key.get_secret_value() if settings.qdrant.api_key else "",
        settings.api.token.get_secret_value() if settings.api.token else "",
    ]
    digest = hashlib.sha256("\0".join(secrets).encode()).hexdigest()
    return f"{settings.model_dump_json()}|{digest}"


def shared_runtime(settings: Settings) -> Runtime:
    """This process's Runtime for these settings, built on first use (cheap: parts are lazy)."""
    key = settings_key(settings)
    with _shared_lock:
        runtime = _shared.get(key)
        if runtime is None:
            runtime = _shared[key] = Runtime(settings)
        return runtime


def close_shared_runtimes() -> None:
    """Close every shared Runtime (the server's shutdown): the index lock is released cleanly."""
    with _shared_lock:
        runtimes = list(_shared.values())
        _shared.clear()
    for runtime in runtimes:
        runtime.close()


def configure_logging(level: str) -> None:
    """Log lines to stderr with time, level and logger."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
