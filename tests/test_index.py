"""The vector index on both engines (Qdrant Edge, qdrant-client local mode): same answers."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from store.factory import open_local_index
from store.index import (
    CatalogMismatch,
    IndexLocked,
    IndexUnavailable,
    PointRecord,
    VectorIndex,
    VectorSpec,
)
from store.keys import point_id

Engine = Literal["edge", "local"]
IMAGE_ONLY = [VectorSpec("image", 2048, "cosine")]


def unit_vectors(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, 2048)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def fill(index: VectorIndex, n: int = 20) -> np.ndarray:
    vectors = unit_vectors(n)
    index.upsert(
        [
            PointRecord(
                point_id(f"sha{i}"),
                {"image": vectors[i]},
                {"sha256": f"sha{i}", "source": "even" if i % 2 == 0 else "odd"},
            )
            for i in range(n)
        ]
    )
    return vectors


@pytest.fixture(params=["edge", "local"])
def engine(request: pytest.FixtureRequest) -> Engine:
    """Every test taking this runs on Qdrant Edge and on qdrant-client (local mode)."""
    engine: Engine = request.param
    return engine


def opener(engine: Engine) -> Callable[..., VectorIndex]:
    return functools.partial(open_local_index, specs=IMAGE_ONLY, engine=engine)


@pytest.fixture(params=["memory", "disk"])
def index(request: pytest.FixtureRequest, tmp_path: Path, engine: Engine) -> Iterator[VectorIndex]:
    where = ":memory:" if request.param == "memory" else tmp_path / "qdrant"
    opened = open_local_index(where, "images", IMAGE_ONLY, upsert_batch=7, engine=engine)
    yield opened
    opened.close()


def test_query_returns_the_same_vector_first_with_score_one(index: VectorIndex) -> None:
    vectors = fill(index)
    hits = index.query(vectors[5], using="image", top_k=3)
    assert hits[0].id == point_id("sha5")
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].payload["sha256"] == "sha5"
    assert len(hits) == 3


def test_upsert_is_idempotent_by_id(index: VectorIndex) -> None:
    fill(index)
    fill(index)
    assert index.count() == 20


def test_threshold_and_payload_filter(index: VectorIndex) -> None:
    vectors = fill(index)
    assert [h.id for h in index.query(vectors[3], using="image", top_k=10, threshold=0.9)] == [
        point_id("sha3")
    ]
    odd = index.query(vectors[4], using="image", top_k=20, where={"source": "odd"})
    assert odd and all(h.payload["source"] == "odd" for h in odd)


def test_get_existing_and_scroll(index: VectorIndex) -> None:
    fill(index, 30)
    assert index.existing([point_id("sha1"), point_id("missing")]) == {point_id("sha1")}
    assert index.get([point_id("sha2")])[0].payload["sha256"] == "sha2"
    assert sorted(h.payload["sha256"] for h in index.scroll(page_size=7)) == sorted(
        f"sha{i}" for i in range(30)
    )
    index.delete([point_id("sha1")])
    assert index.count() == 29


def test_disk_index_persists_across_reopen(tmp_path: Path, engine: Engine) -> None:
    first = opener(engine)(tmp_path / "q", "images")
    vectors = fill(first)
    first.close()
    again = opener(engine)(tmp_path / "q", "images")
    try:
        assert again.count() == 20
        assert again.query(vectors[9], using="image", top_k=1)[0].id == point_id("sha9")
    finally:
        again.close()


def test_a_second_opener_gets_one_sentence_naming_the_holder(
    tmp_path: Path, engine: Engine
) -> None:
    holder = opener(engine)(tmp_path / "q", "images")
    try:
        with pytest.raises(IndexLocked) as caught:
            opener(engine)(tmp_path / "q", "images")
        message = str(caught.value)
        assert "held by process" in message
        assert "IMGSEARCH_QDRANT__URL" in message
        assert "\n" not in message
    finally:
        holder.close()
    opener(engine)(tmp_path / "q", "images").close()  # released on close


def test_euclid_scores_are_distances(tmp_path: Path, engine: Engine) -> None:
    index = opener(engine)(":memory:", "images", specs=[VectorSpec("image", 2048, "euclid")])
    vectors = fill(index)
    hits = index.query(vectors[0], using="image", top_k=2)
    assert not index.specs["image"].higher_is_better
    assert hits[0].score == pytest.approx(0.0, abs=1e-4)
    assert hits[1].score > hits[0].score


def test_an_unreachable_server_is_one_clear_error(settings: object) -> None:
    from config import Settings
    from store.factory import open_index
    from tests.conftest import free_port

    assert isinstance(settings, Settings)
    settings.qdrant.url = f"http://127.0.0.1:{free_port()}"
    settings.qdrant.timeout_s = 2
    index = open_index(settings, IMAGE_ONLY)
    with pytest.raises(IndexUnavailable, match="did not answer"):
        index.count()


# -- named descriptors, the collection's record, migration ----------------------------------------
SPECS = [
    VectorSpec("image", 2048, "cosine"),
    VectorSpec("pdq", 256, "manhattan"),
    VectorSpec("sscd", 512, "cosine"),
]


def test_the_pdq_vector_distance_is_the_hamming_distance(engine: Engine) -> None:
    index = opener(engine)(":memory:", "images", specs=SPECS)
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2, size=(5, 256)).astype(np.float32)
    index.upsert([PointRecord(point_id(f"p{i}"), {"pdq": bits[i]}, {"n": i}) for i in range(5)])
    query = bits[2].copy()
    query[:14] = 1 - query[:14]  # 14 bits flipped
    (hit,) = index.query(query, using="pdq", top_k=1)
    assert hit.payload["n"] == 2
    assert hit.score == pytest.approx(14.0)
    assert index.query(query, using="pdq", top_k=5, threshold=13) == []


def test_a_point_may_lack_a_descriptor_and_still_answer_the_others(engine: Engine) -> None:
    index = opener(engine)(":memory:", "images", specs=SPECS)
    vectors = unit_vectors(2)
    index.upsert(
        [
            PointRecord(point_id("a"), {"image": vectors[0]}, {}),
            PointRecord(point_id("b"), {"image": vectors[1], "sscd": vectors[1][:512]}, {}),
        ]
    )
    assert [h.id for h in index.query(vectors[1][:512], using="sscd", top_k=5)] == [point_id("b")]
    index.update_vectors({point_id("a"): {"sscd": vectors[0][:512]}})
    (hit,) = index.get([point_id("a")], with_vectors=["sscd"])
    assert hit.vectors["sscd"].shape == (512,)


def test_the_collection_records_its_models_and_refuses_another(
    tmp_path: Path, engine: Engine
) -> None:
    index = opener(engine)(tmp_path / "q", "images", specs=SPECS)
    index.check_labels({"image": "ResNet50 imagenet", "pdq": "PDQ"})
    index.close()
    again = opener(engine)(tmp_path / "q", "images", specs=SPECS)
    assert again.recorded_labels() == {"image": "ResNet50 imagenet", "pdq": "PDQ"}
    with pytest.raises(CatalogMismatch, match=r"image vectors were made by ResNet50 imagenet"):
        again.check_labels({"image": "ResNet50 random (seeded)", "pdq": "PDQ"})
    again.check_labels({"image": "ResNet50 imagenet", "pdq": "PDQ", "sscd": "sscd file"})
    assert again.recorded_labels()["sscd"] == "sscd file"  # a new model is recorded
    again.check_labels({"image": "ResNet50 v2"}, accept_relabel=["image"])  # reindex --rebuild
    assert again.recorded_labels()["image"] == "ResNet50 v2"
    again.close()


def test_opening_with_another_distance_refuses_in_one_sentence(
    tmp_path: Path, engine: Engine
) -> None:
    first = opener(engine)(tmp_path / "q", "images", specs=SPECS)
    assert first.count() == 0  # the collection now exists
    first.close()
    other = [VectorSpec("image", 2048, "euclid"), *SPECS[1:]]
    index = opener(engine)(tmp_path / "q", "images", specs=other)
    with pytest.raises(CatalogMismatch, match="cosine distance") as caught:
        index.count()
    assert "\n" not in str(caught.value)
    index.close()


def test_a_catalog_of_the_previous_version_is_migrated_with_every_point(
    tmp_path: Path, engine: Engine
) -> None:
    from qdrant_client import QdrantClient, models

    # The previous version: one unnamed-model "image" vector, no metadata.
    client = QdrantClient(path=str(tmp_path / "q"))
    client.create_collection(
        "images",
        vectors_config={"image": models.VectorParams(size=2048, distance=models.Distance.COSINE)},
    )
    vectors = unit_vectors(300)
    client.upsert(
        "images",
        points=[
            models.PointStruct(id=point_id(f"s{i}"), vector={"image": v.tolist()}, payload={"i": i})
            for i, v in enumerate(vectors)
        ],
    )
    client.close()
    index = opener(engine)(tmp_path / "q", "images", specs=SPECS)
    assert index.count() == 300
    hits = index.query(vectors[7], using="image", top_k=1)
    assert hits[0].payload == {"i": 7}
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    index.check_labels({"image": "ResNet50 random (seeded)"})  # schema 1 recorded none
    index.close()
    again = opener(engine)(tmp_path / "q", "images", specs=SPECS)
    assert again.count() == 300
    assert again.recorded_labels() == {"image": "ResNet50 random (seeded)"}
    again.close()


def test_a_migration_killed_after_dropping_the_old_collection_finishes(tmp_path: Path) -> None:
    from store.client import ClientIndex

    first = open_local_index(tmp_path / "q", "images", specs=SPECS, engine="local")
    assert isinstance(first, ClientIndex)
    vectors = unit_vectors(10)
    first.upsert([PointRecord(point_id(f"s{i}"), {"image": vectors[i]}, {}) for i in range(10)])
    # Simulate the moment between "copy into the temporary collection" and "recreate".
    first._create("images__migrating", {})
    first._copy("images", "images__migrating")
    first.client.delete_collection("images")
    first.close()
    again = open_local_index(tmp_path / "q", "images", specs=SPECS, engine="local")
    assert isinstance(again, ClientIndex)
    assert again.count() == 10
    assert not again.client.collection_exists("images__migrating")
    again.close()


def test_a_process_without_a_descriptor_keeps_that_descriptors_record(
    tmp_path: Path, engine: Engine
) -> None:
    # Text search turned off for a while must not forget which model made the catalog's vectors.
    index = opener(engine)(tmp_path / "q", "images", specs=SPECS)
    index.check_labels({"image": "ResNet50 imagenet", "sscd": "sscd file"})
    index.close()
    without = [spec for spec in SPECS if spec.name != "sscd"]
    again = opener(engine)(tmp_path / "q", "images", specs=without)
    again.check_labels({"image": "ResNet50 v2"}, accept_relabel=["image"])
    assert again.recorded_labels() == {"image": "ResNet50 v2", "sscd": "sscd file"}
    again.close()
    later = opener(engine)(tmp_path / "q", "images", specs=SPECS)
    with pytest.raises(CatalogMismatch, match=r"sscd vectors were made by sscd file"):
        later.check_labels({"image": "ResNet50 v2", "sscd": "another sscd"})
    later.close()


def test_a_migration_keeps_vectors_this_process_does_not_declare(tmp_path: Path) -> None:
    # A catalog with sscd vectors, opened without sscd but with a new pdq vector (qdrant-client
    # rebuilds the collection to add pdq): the sscd vectors must come through.
    first = [SPECS[0], SPECS[2]]
    index = open_local_index(tmp_path / "q", "images", specs=first, engine="local")
    vector = np.linspace(0.1, 1.0, 2048, dtype=np.float32)
    index.upsert(
        [PointRecord(point_id("a"), {"image": vector, "sscd": vector[:512]}, {"title": "a"})]
    )
    index.close()
    again = open_local_index(tmp_path / "q", "images", specs=SPECS[:2], engine="local")
    (hit,) = again.get([point_id("a")], with_vectors=["image", "sscd"])
    again.close()
    assert set(hit.vectors) == {"image", "sscd"}
    assert hit.payload == {"title": "a"}


def test_a_server_collection_declares_binary_quantization_on_binary_vectors(
    tmp_path: Path,
) -> None:
    # qdrant-client's local mode keeps a collection's declared parameters as a server would.
    from qdrant_client import models

    from store.client import ClientIndex

    specs = [VectorSpec("image", 2048, "cosine"), VectorSpec("pdq", 256, "dot", binary=True)]
    index = open_local_index(tmp_path / "q", "images", specs=specs, engine="local")
    assert isinstance(index, ClientIndex)
    try:
        index.count()
        vectors = index.client.get_collection("images").config.params.vectors
        assert isinstance(vectors, dict)
        pdq = vectors["pdq"].quantization_config
        assert isinstance(pdq, models.BinaryQuantization) and pdq.binary.always_ram
        assert vectors["image"].quantization_config is None
        bits = np.where(np.arange(256) % 3 == 0, 1.0, -1.0).astype(np.float32)
        index.upsert([PointRecord(point_id("a"), {"image": unit_vectors(1)[0], "pdq": bits}, {})])
        assert index.query(bits, using="pdq", top_k=1)[0].score == pytest.approx(256.0)
    finally:
        index.close()


# Local mode searches exactly and says that search parameters have no effect there.
@pytest.mark.filterwarnings("ignore:Local mode performs exact")
def test_server_int8_collections_are_rescored_and_pdq_stays_binary() -> None:
    from qdrant_client import QdrantClient, models

    from store.client import ClientIndex

    specs = [
        VectorSpec("image", 2048, "cosine"),
        VectorSpec("pdq", 256, "dot", binary=True, search_ef=512),
    ]
    index = ClientIndex(
        QdrantClient(":memory:"), "images", specs=specs, quantization=True, search_params=True
    )
    try:
        # What the server is asked: the PDQ vector's breadth, rescoring with oversampling.
        bits = np.where(np.arange(256) % 2 == 0, 1.0, -1.0).astype(np.float32)
        params = index._search_params("pdq", [bits])
        assert params is not None and params.hnsw_ef == 512
        assert params.quantization is not None and params.quantization.rescore
        assert params.quantization.oversampling == 2.0
        # Another query on the bits (a recommend's average) is searched on the full vectors.
        averaged = index._search_params("pdq", [bits * 0.5])
        assert averaged is not None and averaged.quantization is not None
        assert averaged.quantization.ignore and averaged.hnsw_ef == 512
        image_params = index._search_params("image", [unit_vectors(1)[0]])
        assert image_params is not None and image_params.hnsw_ef is None
        vectors = unit_vectors(20)
        bits = np.where(vectors[:, :256] > 0, 1.0, -1.0).astype(np.float32)
        index.upsert(
            [
                PointRecord(point_id(f"s{i}"), {"image": vectors[i], "pdq": bits[i]}, {})
                for i in range(20)
            ]
        )
        # Local mode keeps per-vector parameters but not the collection's int8 setting.
        info = index.client.get_collection("images").config
        assert isinstance(info.params.vectors, dict)
        assert isinstance(info.params.vectors["pdq"].quantization_config, models.BinaryQuantization)
        (hit,) = index.query(
            vectors[4], using="image", top_k=1
        )  # a request with rescore=True is accepted
        assert hit.id == point_id("s4") and hit.score == pytest.approx(1.0, abs=1e-5)
        assert index.recommend([point_id("s4")], using="image", top_k=1)[0].id != point_id("s4")
    finally:
        index.close()
