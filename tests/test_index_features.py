"""Search features of the index on both engines: paging, recommend, filters, facets."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from store.factory import open_local_index
from store.index import BadFilter, Hit, PointRecord, Strategy, VectorIndex, VectorSpec
from store.keys import point_id

N = 40


@pytest.fixture(params=["edge", "local"])
def index(request: pytest.FixtureRequest) -> Iterator[VectorIndex]:
    """A small catalog with sources, categories, dates and titles, on each engine."""
    opened = open_local_index(
        ":memory:", "images", [VectorSpec("image", 2048, "cosine")], engine=request.param
    )
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(N, 2048)).astype(np.float32)
    opened.upsert(
        [
            PointRecord(
                point_id(f"s{i}"),
                {"image": vectors[i]},
                {
                    "sha256": f"s{i}",
                    "n": i,
                    "source": ["bbc", "afp", "rtr"][i % 3],
                    "category": "sport" if i < 10 else "news",
                    "published_at": f"2024-{1 + i % 12:02d}-15T12:00:00+00:00",
                    "title": f"Flood in the valley, picture {i}" if i % 4 == 0 else f"Match {i}",
                },
            )
            for i in range(N)
        ]
    )
    opened.vectors = vectors  # type: ignore[attr-defined]
    yield opened
    opened.close()


def ns(hits: list[Hit]) -> list[int]:
    return [h.payload["n"] for h in hits]


def test_offset_pages_through_the_same_ranking(index: VectorIndex) -> None:
    query = index.vectors[3]  # type: ignore[attr-defined]
    full = ns(index.query(query, using="image", top_k=12))
    assert (
        ns(index.query(query, using="image", top_k=6))
        + ns(index.query(query, using="image", top_k=6, offset=6))
        == full
    )
    (batch,) = index.query_many([query], using="image", top_k=4, offset=2)
    assert ns(batch) == full[2:6]


def test_recommend_from_ids_leaves_the_examples_out(index: VectorIndex) -> None:
    hits = index.recommend([point_id("s5")], using="image", top_k=5)
    assert 5 not in ns(hits) and len(hits) == 5
    by_vector = index.recommend([index.vectors[5]], using="image", top_k=5)  # type: ignore[attr-defined]
    assert ns(by_vector)[0] == 5  # a vector example is not a point, nothing is left out
    assert ns(by_vector)[1:] == ns(hits)[:4]


def test_recommend_negatives_push_results_away(index: VectorIndex) -> None:
    vectors = index.vectors  # type: ignore[attr-defined]
    near_8 = vectors[0] + 0.9 * vectors[8]  # s8 is the closest after s0 to this query
    plain = index.recommend([near_8], using="image", top_k=3)
    assert ns(plain)[:2] == [0, 8]
    for strategy in Strategy:
        pushed = index.recommend(
            [near_8], [point_id("s8")], strategy=strategy, using="image", top_k=3
        )
        assert 8 not in ns(pushed), strategy
        assert ns(pushed)[0] == 0, strategy


def test_recommend_best_score_and_filters(index: VectorIndex) -> None:
    hits = index.recommend(
        [point_id("s1"), point_id("s2")],
        strategy=Strategy.BEST_SCORE,
        using="image",
        top_k=5,
        where={"source": "bbc"},
    )
    assert hits and all(h.payload["source"] == "bbc" for h in hits)
    assert not {1, 2} & set(ns(hits))


def test_recommend_an_unknown_id_is_a_key_error(index: VectorIndex) -> None:
    with pytest.raises(KeyError):
        index.recommend([point_id("nope")], using="image")


def test_filters_exact_any_range_and_words(index: VectorIndex) -> None:
    query = index.vectors[0]  # type: ignore[attr-defined]
    assert index.count({"source": "afp"}) == len([i for i in range(N) if i % 3 == 1])
    assert index.count({"source": ["afp", "rtr"]}) == len([i for i in range(N) if i % 3])
    spring = {"published_at": {"gte": "2024-03-01T00:00:00Z", "lt": "2024-05-01T00:00:00Z"}}
    months = {
        int(h.payload["published_at"][5:7])
        for h in index.query(query, using="image", top_k=N, where=spring)
    }
    assert months == {3, 4}
    assert index.count(spring) == len([i for i in range(N) if 1 + i % 12 in (3, 4)])
    assert index.count({"n": {"gte": 10, "lt": 20}}) == 10
    flood = index.query(query, using="image", top_k=N, where={"title": {"text": "VALLEY flood"}})
    assert sorted(ns(flood)) == [i for i in range(N) if i % 4 == 0]
    assert index.count({"title": {"text": "valley match"}}) == 0  # every word must occur
    both = {"category": "sport", "source": "bbc"}
    assert sorted(h.payload["n"] for h in index.scroll(where=both)) == [0, 3, 6, 9]


def test_facet_counts_values_largest_first(index: VectorIndex) -> None:
    assert index.facet("category") == [("news", 30), ("sport", 10)]
    sources = dict(index.facet("source", where={"category": "sport"}))
    assert sources == {"bbc": 4, "afp": 3, "rtr": 3}
    assert index.facet("source", limit=1)[0][1] == 14


def test_a_filter_of_an_unknown_shape_is_one_sentence(index: VectorIndex) -> None:
    with pytest.raises(BadFilter, match="gt/gte/lt/lte") as caught:
        index.count({"published_at": {"after": "2024-01-01"}})
    assert "\n" not in str(caught.value)
    with pytest.raises(BadFilter, match="not an ISO-8601 date"):
        index.count({"published_at": {"gte": "yesterday"}})
