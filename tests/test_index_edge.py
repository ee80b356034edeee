"""Qdrant Edge specifics: a local-mode catalog moved in, the record file, background HNSW."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from store.edge import EdgeIndex
from store.factory import open_local_index
from store.index import PointRecord, VectorSpec
from store.keys import point_id

SPECS = [VectorSpec("image", 2048, "cosine"), VectorSpec("pdq", 256, "manhattan")]
IMAGE_ONLY = SPECS[:1]


def unit_vectors(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, 2048)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write_local_mode_catalog(folder: Path, n: int) -> np.ndarray:
    """A catalog as the previous default (qdrant-client local mode) wrote it, with its record."""
    index = open_local_index(folder, "images", specs=SPECS, engine="local")
    vectors = unit_vectors(n)
    bits = (vectors[:, :256] > 0).astype(np.float32)
    index.upsert(
        [
            PointRecord(
                point_id(f"s{i}"),
                {"image": vectors[i], "pdq": bits[i]} if i % 2 else {"image": vectors[i]},
                {"sha256": f"s{i}", "also_seen": [{"source": "a", "n": i}]},
            )
            for i in range(n)
        ]
    )
    index.check_labels({"image": "ResNet50 imagenet", "pdq": "PDQ"})
    index.close()
    return vectors


def test_a_local_mode_catalog_moves_into_edge_with_every_vector_and_payload(
    tmp_path: Path,
) -> None:
    vectors = write_local_mode_catalog(tmp_path / "q", 300)
    index = open_local_index(tmp_path / "q", "images", specs=SPECS)
    assert isinstance(index, EdgeIndex)
    try:
        assert index.count() == 300
        assert index.recorded_labels() == {"image": "ResNet50 imagenet", "pdq": "PDQ"}
        (hit,) = index.get([point_id("s7")], with_vectors=["image", "pdq"])
        assert hit.payload == {"sha256": "s7", "also_seen": [{"source": "a", "n": 7}]}
        assert np.allclose(hit.vectors["image"], vectors[7], atol=1e-6)
        assert np.array_equal(hit.vectors["pdq"], (vectors[7, :256] > 0).astype(np.float32))
        assert set(index.get([point_id("s8")], with_vectors=["pdq"])[0].vectors) == set()
        assert index.query(vectors[123], using="image", top_k=1)[0].id == point_id("s123")
    finally:
        index.close()
    client = QdrantClient(path=str(tmp_path / "q"))
    try:
        assert not client.collection_exists("images")  # dropped only after the copy
    finally:
        client.close()
    again = open_local_index(tmp_path / "q", "images", specs=SPECS)
    assert again.count() == 300
    again.close()


def test_a_move_killed_half_way_finishes_on_the_next_open(tmp_path: Path) -> None:
    # A killed move leaves some points in the shard and the whole local catalog in place.
    partial = open_local_index(tmp_path / "q", "images", specs=SPECS)
    vectors = unit_vectors(200)
    partial.upsert(
        [PointRecord(point_id(f"s{i}"), {"image": vectors[i]}, {"stale": True}) for i in range(90)]
    )
    partial.close()
    write_local_mode_catalog(tmp_path / "q", 200)
    index = open_local_index(tmp_path / "q", "images", specs=SPECS)
    try:
        assert index.count() == 200
        assert index.count({"stale": True}) == 0  # the local catalog's payloads won
    finally:
        index.close()


def test_a_catalog_with_another_distance_is_refused_before_anything_moves(tmp_path: Path) -> None:
    from store.index import CatalogMismatch

    client = QdrantClient(path=str(tmp_path / "q"))
    client.create_collection(
        "images",
        vectors_config={"image": models.VectorParams(size=2048, distance=models.Distance.EUCLID)},
    )
    client.close()
    index = open_local_index(tmp_path / "q", "images", specs=SPECS)
    with pytest.raises(CatalogMismatch, match="euclid distance"):
        index.count()
    index.close()


def test_the_record_is_a_json_file_beside_the_shard(tmp_path: Path) -> None:
    index = open_local_index(tmp_path / "q", "images", specs=SPECS)
    index.check_labels({"image": "ResNet50 imagenet"})
    index.close()
    record = json.loads((tmp_path / "q" / "edge" / "images.json").read_text())
    assert record["vectors"]["image"] == {
        "label": "ResNet50 imagenet",
        "size": 2048,
        "distance": "cosine",
    }
    assert not list((tmp_path / "q" / "edge").glob(".*.tmp"))  # written whole, then renamed


def test_a_new_descriptor_is_added_to_an_existing_shard(tmp_path: Path) -> None:
    first = open_local_index(tmp_path / "q", "images", specs=SPECS[:1])
    vectors = unit_vectors(5)
    first.upsert([PointRecord(point_id(f"s{i}"), {"image": vectors[i]}, {}) for i in range(5)])
    first.close()
    index = open_local_index(tmp_path / "q", "images", specs=SPECS)
    try:
        bits = np.ones(256, dtype=np.float32)
        index.update_vectors({point_id("s1"): {"pdq": bits}})
        (hit,) = index.query(bits, using="pdq", top_k=1)
        assert hit.id == point_id("s1") and hit.score == pytest.approx(0.0)
        assert index.count() == 5
    finally:
        index.close()


def test_the_background_build_keeps_every_write_made_meanwhile(tmp_path: Path) -> None:
    index = open_local_index(tmp_path / "q", "images", IMAGE_ONLY, hnsw_after=100)
    assert isinstance(index, EdgeIndex)
    vectors = unit_vectors(160)
    try:
        index.upsert(
            [PointRecord(point_id(f"s{i}"), {"image": vectors[i]}, {"i": i}) for i in range(120)]
        )
        assert index._build is not None, "120 new points start a build"
        # Writes while the child indexes its copy: they must survive the swap.
        index.upsert(
            [
                PointRecord(point_id(f"s{i}"), {"image": vectors[i]}, {"i": i})
                for i in range(120, 160)
            ]
        )
        index.delete([point_id("s0")])
        index.set_payload(point_id("s1"), {"title": "changed"})
        assert index.query(vectors[50], using="image", top_k=1)[0].id == point_id(
            "s50"
        )  # answers meanwhile
        index.build_hnsw(wait=True)
        assert index._build is None
        assert json.loads(index.meta_path.read_text())["hnsw_points"] == 159
        assert index.count() == 159
        assert index.get([point_id("s0")]) == []
        assert index.get([point_id("s1")])[0].payload == {"i": 1, "title": "changed"}
        assert index.query(vectors[150], using="image", top_k=1)[0].id == point_id("s150")
    finally:
        index.close()
    assert not (tmp_path / "q" / "edge" / "images.building").exists()
    again = open_local_index(tmp_path / "q", "images", IMAGE_ONLY)
    assert again.count() == 159
    again.close()


def test_a_swap_killed_between_the_renames_keeps_the_old_shard(tmp_path: Path) -> None:
    index = open_local_index(tmp_path / "q", "images", IMAGE_ONLY)
    vectors = unit_vectors(3)
    index.upsert([PointRecord(point_id(f"s{i}"), {"image": vectors[i]}, {}) for i in range(3)])
    index.close()
    edge = tmp_path / "q" / "edge"
    (edge / "images").rename(edge / "images.old")  # live shard moved aside, copy not yet in
    (edge / "images.building").mkdir()
    again = open_local_index(tmp_path / "q", "images", IMAGE_ONLY)
    try:
        assert again.count() == 3
        assert not (edge / "images.old").exists() and not (edge / "images.building").exists()
    finally:
        again.close()


BINARY_SPECS = [VectorSpec("image", 2048, "cosine"), VectorSpec("pdq", 256, "dot", binary=True)]


def signed_bits(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random((n, 256)) > 0.5, 1.0, -1.0).astype(np.float32)


def points_of(vectors: np.ndarray, bits: np.ndarray, payload: bool = False) -> list[PointRecord]:
    """One point per row: its image vector and its signed PDQ bits (and {"i": row})."""
    return [
        PointRecord(
            point_id(f"s{i}"), {"image": vectors[i], "pdq": bits[i]}, {"i": i} if payload else {}
        )
        for i in range(len(bits))
    ]


def quantized_segments(index: EdgeIndex, vector: str) -> list[Path]:
    """The shard's segments that hold a quantized copy of `vector` (the engine's file layout)."""
    return list((index.path / "segments").glob(f"*/vector_storage-{vector}/quantized.meta.json"))


def assert_exact_pdq_answers(index: EdgeIndex, bits: np.ndarray) -> None:
    """Queries 12 bits away from stored hashes: the stored one first at dot 256 - 2 x 12, and
    every score the exact dot product of the full vectors (what the verdict's Hamming reads)."""
    rng = np.random.default_rng(7)
    for target in rng.choice(len(bits), 10, replace=False):
        query = bits[target].copy()
        query[rng.choice(256, 12, replace=False)] *= -1
        hits = index.query(query, using="pdq", top_k=5)
        assert hits[0].id == point_id(f"s{target}") and hits[0].score == 256 - 2 * 12
        expected = np.sort(bits @ query)[::-1][:5]
        assert [h.score for h in hits] == expected.tolist()


def test_pdq_bits_are_indexed_as_binary_quantized_vectors_and_score_exactly(
    tmp_path: Path,
) -> None:
    vectors, bits = unit_vectors(1500), signed_bits(1500)
    index = open_local_index(tmp_path / "q", "images", specs=BINARY_SPECS, hnsw_after=100)
    assert isinstance(index, EdgeIndex)
    try:
        index.upsert(points_of(vectors, bits))
        index.build_hnsw(wait=True)
        config = json.loads((index.path / "edge_config.json").read_text())["vectors"]
        assert config["pdq"]["quantization_config"] == {"binary": {"always_ram": True}}
        assert "quantization_config" not in config["image"]
        assert quantized_segments(index, "pdq") and not quantized_segments(index, "image")
        assert_exact_pdq_answers(index, bits)
    finally:
        index.close()


def test_a_catalog_made_before_binary_quantization_gets_it_and_is_reindexed(
    tmp_path: Path,
) -> None:
    vectors, bits = unit_vectors(1200), signed_bits(1200)
    plain = [VectorSpec("image", 2048, "cosine"), VectorSpec("pdq", 256, "dot")]
    old = open_local_index(tmp_path / "q", "images", specs=plain, hnsw_after=100)
    assert isinstance(old, EdgeIndex)
    old.upsert(points_of(vectors, bits, payload=True))
    old.build_hnsw(wait=True)
    assert not quantized_segments(old, "pdq")
    old.close()
    index = open_local_index(tmp_path / "q", "images", specs=BINARY_SPECS)
    assert isinstance(index, EdgeIndex)
    try:
        assert index.count() == 1200
        assert index._build is not None, "the upgraded config starts a re-index"
        assert index.query(vectors[3], using="image", top_k=1)[0].id == point_id(
            "s3"
        )  # answers meanwhile
        index.build_hnsw(wait=True)
        assert quantized_segments(index, "pdq")
        assert index.count() == 1200
        assert index.get([point_id("s5")])[0].payload == {"i": 5}
        assert index.query(vectors[77], using="image", top_k=1)[0].id == point_id("s77")
        assert_exact_pdq_answers(index, bits)
    finally:
        index.close()
    again = open_local_index(tmp_path / "q", "images", specs=BINARY_SPECS)
    assert isinstance(again, EdgeIndex)
    try:
        assert again._build is None, "nothing left to upgrade"
        assert_exact_pdq_answers(again, bits)
    finally:
        again.close()


def test_int8_on_request_searches_an_int8_copy_and_rescores_and_can_be_turned_off(
    tmp_path: Path,
) -> None:
    vectors, bits = unit_vectors(1500), signed_bits(1500)
    points = points_of(vectors, bits)
    index = open_local_index(
        tmp_path / "q", "images", specs=BINARY_SPECS, hnsw_after=100, quantization=True
    )
    assert isinstance(index, EdgeIndex)
    try:
        index.upsert(points)
        index.build_hnsw(wait=True)
        config = json.loads((index.path / "edge_config.json").read_text())["vectors"]
        assert set(config["image"]["quantization_config"]) == {"scalar"}
        assert set(config["pdq"]["quantization_config"]) == {"binary"}
        assert quantized_segments(index, "image")
        for i in (3, 700, 1499):
            hits = index.query(vectors[i], using="image", top_k=3)
            assert hits[0].id == point_id(f"s{i}")
            exact = np.sort(vectors @ vectors[i])[::-1][:3]  # rescored: the float scores
            assert [h.score for h in hits] == pytest.approx(exact.tolist(), abs=1e-5)
        assert_exact_pdq_answers(index, bits)
    finally:
        index.close()
    plain = open_local_index(tmp_path / "q", "images", specs=BINARY_SPECS)
    assert isinstance(plain, EdgeIndex)
    try:
        assert plain.count() == 1500
        assert plain._build is not None, "turning int8 off re-indexes"
        plain.build_hnsw(wait=True)
        assert not quantized_segments(plain, "image") and quantized_segments(plain, "pdq")
        assert plain.query(vectors[42], using="image", top_k=1)[0].id == point_id("s42")
    finally:
        plain.close()


def test_hashes_at_the_match_threshold_are_found_among_100k(tmp_path: Path) -> None:
    # HNSW at Qdrant's default search breadth reached about 91% of these (measured: see
    # embed/descriptors.PDQ_SEARCH_EF); the PDQ vector's own breadth must reach them all.
    from embed.descriptors import PDQ_SEARCH_EF, specs
    from tests.conftest import make_settings

    (pdq,) = [s for s in specs(make_settings(tmp_path / "unused")) if s.name == "pdq"]
    assert pdq.binary and pdq.search_ef == PDQ_SEARCH_EF
    bits = signed_bits(100_000, seed=3)
    # Built once, after every point is in (a build on the way would index only part of them).
    index = open_local_index(tmp_path / "q", "images", specs=[pdq], hnsw_after=10**9)
    assert isinstance(index, EdgeIndex)
    try:
        for start in range(0, len(bits), 5000):
            index.upsert(
                [
                    PointRecord(point_id(f"s{i}"), {"pdq": bits[i]}, {})
                    for i in range(start, start + 5000)
                ]
            )
        index.build_hnsw(wait=True)
        rng = np.random.default_rng(4)
        targets = rng.choice(len(bits), 100, replace=False)
        queries = []
        for target in targets:
            query = bits[target].copy()
            query[rng.choice(256, 31, replace=False)] *= -1
            queries.append(query)
        answers = index.query_many(queries, using="pdq", top_k=8)
        found = sum(
            point_id(f"s{t}") in {h.id for h in hits}
            for t, hits in zip(targets, answers, strict=True)
        )
        assert found >= 98, f"{found} of 100 copies at 31 bits found"
    finally:
        index.close()
