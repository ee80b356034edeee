"""Ranking metrics of the search evaluations, binary relevance (README: "Evaluating search").

A ranking is the list of results in rank order, each relevant (True) or not; R is the number of
relevant items that exist for the query (for `eval labels`: the other images of its class).
- P@k = (relevant results in the top k) / k (missing results count as not relevant);
- R@k = (relevant results in the top k) / R;
- AP@k = (1 / min(R, k)) x sum over ranks i <= k of P@i x rel_i; mAP@k is its mean;
- nDCG@k = DCG@k / IDCG@k with DCG@k = sum over i <= k of rel_i / log2(i + 1) and IDCG@k the DCG
  of min(R, k) relevant results first.
Queries with R = 0 have no defined recall or AP: they are left out of the means and counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def precision_at(relevant: Sequence[bool], k: int) -> float:
    """P@k: the share of the top k that is relevant (fewer than k results count as misses)."""
    _check_k(k)
    return sum(bool(r) for r in relevant[:k]) / k


def recall_at(relevant: Sequence[bool], k: int, total: int) -> float:
    """R@k: the share of the `total` relevant items found in the top k."""
    _check_k(k)
    _check_total(total)
    return sum(bool(r) for r in relevant[:k]) / total


def average_precision_at(relevant: Sequence[bool], k: int, total: int) -> float:
    """AP@k = (1 / min(R, k)) x sum over ranks i <= k of P@i x rel_i."""
    _check_k(k)
    _check_total(total)
    hits = 0
    summed = 0.0
    for rank, rel in enumerate(relevant[:k], start=1):
        if rel:
            hits += 1
            summed += hits / rank
    return summed / min(total, k)


def ndcg_at(relevant: Sequence[bool], k: int, total: int) -> float:
    """nDCG@k with binary gains and a log2(i + 1) discount; ideal: min(R, k) relevant first."""
    _check_k(k)
    _check_total(total)
    dcg = sum(1.0 / math.log2(rank + 1) for rank, rel in enumerate(relevant[:k], 1) if rel)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(total, k) + 1))
    return dcg / ideal


def cutoffs(k: int) -> list[int]:
    """The precision cut-offs reported for a run at k: 1, 5 and k (those not above k)."""
    _check_k(k)
    return sorted({c for c in (1, 5, k) if c <= k})


@dataclass(frozen=True)
class Judged:
    """One query's ranking, judged: relevance in rank order and how many relevant items exist."""

    relevant: Sequence[bool]
    total: int


def summarise(judged: Iterable[Judged], k: int) -> dict[str, float | None]:
    """Mean P@1, P@5, P@k, R@k, mAP@k and nDCG@k over the queries that have relevant items.

    Keys are "p@1", "p@5", "p@{k}", "r@{k}", "map@{k}", "ndcg@{k}"; a value is None when no
    query has a relevant item.
    """
    scored = [j for j in judged if j.total > 0]
    names = [f"p@{c}" for c in cutoffs(k)] + [f"r@{k}", f"map@{k}", f"ndcg@{k}"]
    if not scored:
        return dict.fromkeys(names)
    sums = dict.fromkeys(names, 0.0)
    for j in scored:
        for c in cutoffs(k):
            sums[f"p@{c}"] += precision_at(j.relevant, c)
        sums[f"r@{k}"] += recall_at(j.relevant, k, j.total)
        sums[f"map@{k}"] += average_precision_at(j.relevant, k, j.total)
        sums[f"ndcg@{k}"] += ndcg_at(j.relevant, k, j.total)
    return {name: value / len(scored) for name, value in sums.items()}


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"the cut-off k must be at least 1, not {k}")


def _check_total(total: int) -> None:
    if total < 1:
        raise ValueError("a query needs at least one relevant item for recall, AP and nDCG")
