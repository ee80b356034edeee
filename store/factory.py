"""Open the configured vector index: a Qdrant server, Qdrant Edge embedded, or local mode.

The one module that knows every engine; the rest of imgsearch asks it for a `VectorIndex` with
the named vectors (specs) it declares.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from config import QdrantSettings, Settings
from store.client import open_local_mode_index, open_server_index
from store.edge import open_edge_index
from store.index import VectorIndex, VectorSpec
from store.migrate import migrate_local_mode


def open_index(settings: Settings, specs: Sequence[VectorSpec]) -> VectorIndex:
    """Open the configured index: a Qdrant server when a URL is set, else the embedded folder."""
    q = settings.qdrant
    if q.url:
        return open_server_index(q, specs)
    return open_local_index(
        settings.qdrant_path,
        q.collection,
        specs,
        upsert_batch=q.upsert_batch,
        engine=q.engine,
        hnsw_after=q.hnsw_after,
        quantization=q.quantization == "int8",
    )


def open_bank_index(settings: Settings, specs: Sequence[VectorSpec]) -> VectorIndex:
    """Open the banks' index: the same engine and vectors as the catalog, its own collection
    (`<collection>_banks` on a server, the embedded folder DATA_DIR/banks)."""
    q = settings.qdrant
    if q.url:
        return open_server_index(q.model_copy(update={"collection": bank_collection(q)}), specs)
    return open_local_index(
        settings.data_dir / "banks",
        bank_collection(q),
        specs,
        upsert_batch=q.upsert_batch,
        engine=q.engine,
        hnsw_after=q.hnsw_after,
        quantization=q.quantization == "int8",
    )


def bank_collection(q: QdrantSettings) -> str:
    """The banks' collection name beside the catalog's."""
    return f"{q.collection}_banks"


def open_local_index(
    path: Path | str,
    collection: str,
    specs: Sequence[VectorSpec],
    *,
    upsert_batch: int = 128,
    engine: Literal["edge", "local"] = "edge",
    hnsw_after: int = 0,
    quantization: bool = False,
) -> VectorIndex:
    """Open an embedded index folder (or ":memory:"); a held folder raises IndexLocked.

    engine "edge" (the default) is Qdrant Edge, which first moves in any catalog that
    qdrant-client's local mode left in the folder (on first use, once the shard is checked);
    "local" is qdrant-client's local mode. hnsw_after: build the HNSW graph in the background
    once that many points are unindexed (0: Qdrant's own indexing threshold). quantization: Edge
    keeps an int8 copy of the vectors that are not binary (local mode has no quantization).
    """
    if engine == "local":
        return open_local_mode_index(path, collection, specs, upsert_batch=upsert_batch)
    return open_edge_index(
        path,
        collection,
        specs,
        upsert_batch=upsert_batch,
        hnsw_after=hnsw_after,
        quantization=quantization,
        on_open=migrate_local_mode,
    )
