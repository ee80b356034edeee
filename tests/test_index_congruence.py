"""The two embedded engines answer alike: the same random points in Qdrant Edge and in
qdrant-client's local mode, then random filters and queries, and the answers compared.

Each engine is checked against the other, not against a fixed expectation: a query's scores must
agree (to float tolerance), and so must the points, except that of several equally scored points
either engine may return any at the ends of a page. Nearest-neighbour scores are also checked
against numpy, so a tie at a page's end is a real tie. Small collections: no HNSW graph is built,
both engines search exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from store.edge import EdgeIndex
from store.factory import open_local_index
from store.index import Hit, PointRecord, Strategy, VectorIndex, VectorSpec
from store.keys import point_id

N = 90
DENSE, BITS = "dense", "bits"
SPECS = [
    VectorSpec(DENSE, 24, "cosine"),  # a float similarity vector
    VectorSpec(BITS, 64, "dot", binary=True),  # +1/-1 components, as PDQ's
]
SOURCES = ["bbc", "afp", "rtr", "ap"]
CATEGORIES = ["news", "sport", "arts"]
WORDS = ["flood", "valley", "match", "storm", "river", "city", "night", "fire"]
START = datetime(2024, 1, 1, tzinfo=UTC)
TOL = 1e-4
CASES = 40


class Catalog:
    """The random points, as loaded into both engines, and numpy's view of them."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.ids = [point_id(f"c{i}") for i in range(N)]
        dense = rng.normal(size=(N, 24)).astype(np.float32)
        dense[N - 1] = dense[0]  # a copy: equal scores for two points
        dense[N - 2] = dense[1]
        self.dense = dense / np.linalg.norm(dense, axis=1, keepdims=True)
        self.bits = np.where(rng.random((N, 64)) > 0.5, 1.0, -1.0).astype(np.float32)
        self.has_bits = rng.random(N) > 0.1  # some points lack the second vector
        self.payloads = [self._payload(i) for i in range(N)]

    def _payload(self, i: int) -> dict[str, Any]:
        rng = self.rng
        payload: dict[str, Any] = {
            "n": i,
            "source": str(rng.choice(SOURCES)),
            "category": str(rng.choice(CATEGORIES)),
            "flag": bool(rng.random() > 0.5),
            "title": " ".join(
                w.capitalize() if rng.random() > 0.5 else w
                for w in rng.choice(WORDS, size=int(rng.integers(1, 4)), replace=False)
            )
            + f", picture {i}",
        }
        if rng.random() > 0.1:  # some points have no date
            when = START + timedelta(hours=int(rng.integers(0, 24 * 365)))
            payload["published_at"] = when.isoformat()
        return payload

    def records(self) -> list[PointRecord]:
        return [
            PointRecord(
                pid,
                {DENSE: self.dense[i], BITS: self.bits[i]}
                if self.has_bits[i]
                else {DENSE: self.dense[i]},
                self.payloads[i],
            )
            for i, pid in enumerate(self.ids)
        ]

    def score(self, pid: str, query: np.ndarray, using: str) -> float:
        i = self.ids.index(pid)
        if using == DENSE:
            return float(self.dense[i] @ (query / np.linalg.norm(query)))
        return float(self.bits[i] @ query)

    def query(self, using: str) -> np.ndarray:
        if using == DENSE:
            return self.rng.normal(size=24).astype(np.float32)
        return np.where(self.rng.random(64) > 0.5, 1.0, -1.0).astype(np.float32)

    def where(self) -> dict[str, Any] | None:
        """A random filter: none, or one to three conditions of every kind."""
        rng = self.rng
        kinds = ["source", "category", "date", "number", "words", "flag", "exact_n"]
        picked = rng.choice(kinds, size=int(rng.integers(0, 4)), replace=False)
        where: dict[str, Any] = {}
        for kind in picked:
            if kind == "source":
                where["source"] = str(rng.choice(SOURCES))
            elif kind == "category":
                k = int(rng.integers(1, 3))
                where["category"] = [str(c) for c in rng.choice(CATEGORIES, size=k, replace=False)]
            elif kind == "date":
                low = START + timedelta(days=int(rng.integers(0, 300)))
                high = low + timedelta(days=int(rng.integers(1, 200)))
                where["published_at"] = {
                    "gte": low.isoformat().replace("+00:00", "Z"),
                    "lt": high.date(),  # a date: midnight of that day
                }
            elif kind == "number":
                low_n = float(rng.integers(0, N)) + (0.5 if rng.random() > 0.5 else 0.0)
                where["n"] = {"gt": low_n, "lte": low_n + float(rng.integers(5, 60))}
            elif kind == "words":
                words = rng.choice(WORDS, size=int(rng.integers(1, 3)), replace=False)
                where["title"] = {"text": " ".join(w.upper() for w in words)}
            elif kind == "flag":
                where["flag"] = bool(rng.random() > 0.5)
            else:
                where["n"] = int(rng.integers(0, N))
        return where or None


@pytest.fixture(scope="module")
def engines() -> Iterator[tuple[Catalog, VectorIndex, VectorIndex]]:
    catalog = Catalog(seed=20261204)
    edge = open_local_index(":memory:", "congruence", SPECS, upsert_batch=16, engine="edge")
    local = open_local_index(":memory:", "congruence", SPECS, upsert_batch=16, engine="local")
    assert isinstance(edge, EdgeIndex)
    for index in (edge, local):
        index.upsert(catalog.records())
    try:
        yield catalog, edge, local
    finally:
        edge.close()
        local.close()


def assert_same_ranking(edge: Sequence[Hit], local: Sequence[Hit], what: str) -> None:
    """The same scores in the same order, the same point at every score strictly inside the
    page; of points tied with the page's first or last score, either engine may pick any."""
    assert len(edge) == len(local), what
    assert [h.score for h in edge] == pytest.approx([h.score for h in local], abs=TOL), what
    if not edge:
        return
    ends = (edge[0].score, edge[-1].score)

    def inside(hits: Sequence[Hit]) -> set[str]:
        return {h.id for h in hits if all(abs(h.score - end) > TOL for end in ends)}

    assert inside(edge) == inside(local), what
    local_by_id = {h.id: h for h in local}
    for hit in edge:
        if hit.id in local_by_id:
            assert hit.score == pytest.approx(local_by_id[hit.id].score, abs=TOL), what
            assert hit.payload == local_by_id[hit.id].payload, what


def facet_order(value_count: tuple[Any, int]) -> tuple[int, str]:
    return -value_count[1], str(value_count[0])


def test_nearest_queries_agree_under_random_filters(
    engines: tuple[Catalog, VectorIndex, VectorIndex],
) -> None:
    catalog, edge, local = engines
    for case in range(CASES):
        using = DENSE if case % 2 else BITS
        queries = [catalog.query(using) for _ in range(3)]
        where = catalog.where()
        top_k = int(catalog.rng.integers(1, 15))
        offset = int(catalog.rng.integers(0, 4))
        threshold = None
        if case % 5 == 0:  # a threshold: an exact, reachable score for the integer dot products
            threshold = 0.1 if using == DENSE else float(2 * catalog.rng.integers(-2, 5))
        options: dict[str, Any] = {
            "using": using,
            "top_k": top_k,
            "offset": offset,
            "where": where,
            "threshold": threshold,
        }
        answers = edge.query_many(queries, **options), local.query_many(queries, **options)
        for query, edge_hits, local_hits in zip(queries, *answers, strict=True):
            what = f"case {case}: {options}"
            assert_same_ranking(edge_hits, local_hits, what)
            for hit in [*edge_hits, *local_hits]:  # every score is the exact one
                assert hit.score == pytest.approx(catalog.score(hit.id, query, using), abs=TOL)
                if threshold is not None:
                    assert hit.score >= threshold, what  # a minimum, reached included
            if using == BITS:  # a point without the vector is never a hit for it
                assert all(catalog.has_bits[catalog.ids.index(h.id)] for h in edge_hits)


@pytest.mark.parametrize("strategy", list(Strategy))
def test_recommend_agrees_with_ids_vectors_and_negatives(
    engines: tuple[Catalog, VectorIndex, VectorIndex], strategy: Strategy
) -> None:
    catalog, edge, local = engines
    rng = catalog.rng
    for case in range(CASES // 2):
        using = DENSE if case % 2 else BITS
        with_vector = [i for i in range(N) if using == DENSE or catalog.has_bits[i]]
        chosen = rng.choice(with_vector, size=4, replace=False)
        positive: list[str | np.ndarray] = [catalog.ids[int(chosen[0])]]
        if rng.random() > 0.5:
            positive.append(catalog.query(using))  # a vector example
        negative: list[str | np.ndarray] = [
            catalog.ids[int(i)] for i in chosen[1 : rng.integers(1, 4)]
        ]
        options: dict[str, Any] = {
            "using": using,
            "strategy": strategy,
            "top_k": int(rng.integers(1, 12)),
            "offset": int(rng.integers(0, 3)),
            "where": catalog.where(),
        }
        edge_hits = edge.recommend(positive, negative, **options)
        local_hits = local.recommend(positive, negative, **options)
        assert_same_ranking(edge_hits, local_hits, f"case {case}: {options}")
        examples = {e for e in [*positive, *negative] if isinstance(e, str)}
        assert not examples & {h.id for h in [*edge_hits, *local_hits]}  # examples left out


def test_recommend_by_an_id_without_that_vector_is_a_key_error_on_both(
    engines: tuple[Catalog, VectorIndex, VectorIndex],
) -> None:
    catalog, edge, local = engines
    lacking = catalog.ids[int(np.flatnonzero(~catalog.has_bits)[0])]
    for index in (edge, local):
        with pytest.raises(KeyError):
            index.recommend([lacking], using=BITS)
        with pytest.raises(KeyError):
            index.recommend([point_id("not in the catalog")], using=DENSE)


def test_count_facet_scroll_and_get_agree(
    engines: tuple[Catalog, VectorIndex, VectorIndex],
) -> None:
    catalog, edge, local = engines
    rng = catalog.rng
    assert edge.count() == local.count() == N
    for case in range(CASES):
        where = catalog.where()
        what = f"case {case}: {where}"
        assert edge.count(where) == local.count(where), what
        for key in ("source", "category"):  # equal counts may come in either order
            facets = [sorted(ix.facet(key, where=where), key=facet_order) for ix in (edge, local)]
            assert facets[0] == facets[1], what
        page = int(rng.integers(1, 40))
        scrolled = [
            {h.id: h for h in index.scroll(page, with_vectors=[BITS], where=where)}
            for index in (edge, local)
        ]
        assert scrolled[0].keys() == scrolled[1].keys(), what
        assert len(scrolled[0]) == edge.count(where), what
        for pid, hit in scrolled[0].items():
            other = scrolled[1][pid]
            assert hit.payload == other.payload, what
            assert hit.vectors.keys() == other.vectors.keys(), what
            if BITS in hit.vectors:
                assert np.array_equal(hit.vectors[BITS], other.vectors[BITS]), what
        ids = [catalog.ids[int(i)] for i in rng.choice(N, size=5, replace=False)]
        ids.append(point_id("missing"))
        got = [
            {h.id: h for h in index.get(ids, with_vectors=[DENSE, BITS])} for index in (edge, local)
        ]
        assert got[0].keys() == got[1].keys() == set(ids[:-1])
        for pid, hit in got[0].items():
            i = catalog.ids.index(pid)
            assert hit.payload == got[1][pid].payload == catalog.payloads[i]
            assert hit.vectors.keys() == got[1][pid].vectors.keys()
            np.testing.assert_allclose(hit.vectors[DENSE], got[1][pid].vectors[DENSE], atol=1e-6)
            np.testing.assert_allclose(hit.vectors[DENSE], catalog.dense[i], atol=1e-6)


def test_both_engines_report_the_same_stored_vectors(
    engines: tuple[Catalog, VectorIndex, VectorIndex],
) -> None:
    _, edge, local = engines
    assert (
        edge.stored_vectors()
        == local.stored_vectors()
        == {
            DENSE: ("cosine", 24),
            BITS: ("dot", 64),
        }
    )
