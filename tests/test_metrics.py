"""Ranking metrics on rankings worked out by hand (the definitions are in the README)."""

from __future__ import annotations

import math

import pytest

from search.metrics import (
    Judged,
    average_precision_at,
    cutoffs,
    ndcg_at,
    precision_at,
    recall_at,
    summarise,
)

# Relevant at ranks 1, 3 and 10; four relevant items exist (one was never found).
RANKING = [True, False, True, False, False, False, False, False, False, True]


def test_precision_counts_relevant_results_in_the_top_k() -> None:
    assert precision_at(RANKING, 1) == 1.0
    assert precision_at(RANKING, 5) == pytest.approx(2 / 5)
    assert precision_at(RANKING, 10) == pytest.approx(3 / 10)


def test_precision_counts_missing_results_as_misses() -> None:
    assert precision_at([False, True], 5) == pytest.approx(1 / 5)


def test_recall_is_the_share_of_all_relevant_items_found() -> None:
    assert recall_at(RANKING, 10, 4) == pytest.approx(3 / 4)
    assert recall_at(RANKING, 1, 4) == pytest.approx(1 / 4)


def test_average_precision_by_hand() -> None:
    # (1/min(4, 10)) x (P@1 + P@3 + P@10) = (1 + 2/3 + 3/10) / 4
    assert average_precision_at(RANKING, 10, 4) == pytest.approx((1 + 2 / 3 + 3 / 10) / 4)
    assert average_precision_at(RANKING, 10, 4) == pytest.approx(0.4916667, abs=1e-6)
    # at k = 3 only ranks 1 and 3 count, normalised by min(4, 3) = 3
    assert average_precision_at(RANKING, 3, 4) == pytest.approx((1 + 2 / 3) / 3)


def test_average_precision_is_normalised_by_min_of_r_and_k() -> None:
    # 20 relevant items exist; a top 10 of relevant results is perfect at k = 10.
    assert average_precision_at([True] * 10, 10, 20) == 1.0
    assert average_precision_at([False, True], 5, 1) == pytest.approx(0.5)
    assert average_precision_at([False] * 10, 10, 3) == 0.0


def test_ndcg_by_hand() -> None:
    dcg = 1 / math.log2(2) + 1 / math.log2(4) + 1 / math.log2(11)
    ideal = sum(1 / math.log2(i + 1) for i in range(1, 5))
    assert ndcg_at(RANKING, 10, 4) == pytest.approx(dcg / ideal)
    assert ndcg_at(RANKING, 10, 4) == pytest.approx(0.698416, abs=1e-6)


def test_ndcg_ideal_has_min_of_r_and_k_relevant_items_first() -> None:
    assert ndcg_at([True, True, True], 3, 10) == 1.0
    assert ndcg_at([False, True], 5, 1) == pytest.approx(1 / math.log2(3))
    assert ndcg_at([True, False, False], 3, 1) == 1.0


def test_cutoffs_are_one_five_and_k_not_above_k() -> None:
    assert cutoffs(10) == [1, 5, 10]
    assert cutoffs(5) == [1, 5]
    assert cutoffs(3) == [1, 3]
    assert cutoffs(1) == [1]


def test_summary_is_the_mean_over_queries_with_relevant_items() -> None:
    judged = [
        Judged(RANKING, 4),
        Judged([False, True, True], 2),
        Judged([False, False], 0),  # a class of one image: no recall to measure, left out
    ]
    figures = summarise(judged, 10)
    assert set(figures) == {"p@1", "p@5", "p@10", "r@10", "map@10", "ndcg@10"}
    assert figures["p@1"] == pytest.approx((1 + 0) / 2)
    assert figures["p@5"] == pytest.approx((2 / 5 + 2 / 5) / 2)
    assert figures["p@10"] == pytest.approx((3 / 10 + 2 / 10) / 2)
    assert figures["r@10"] == pytest.approx((3 / 4 + 1) / 2)
    second_ap = (1 / 2 + 2 / 3) / 2
    assert figures["map@10"] == pytest.approx(((1 + 2 / 3 + 3 / 10) / 4 + second_ap) / 2)
    second_ndcg = (1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert figures["ndcg@10"] == pytest.approx((0.698416 + second_ndcg) / 2, abs=1e-6)


def test_summary_without_any_relevant_item_has_no_figures() -> None:
    assert summarise([Judged([False], 0)], 3) == {
        "p@1": None,
        "p@3": None,
        "r@3": None,
        "map@3": None,
        "ndcg@3": None,
    }


@pytest.mark.parametrize("k", [0, -1])
def test_a_cut_off_below_one_is_refused(k: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        precision_at(RANKING, k)


def test_recall_without_relevant_items_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one relevant"):
        recall_at(RANKING, 10, 0)
