"""Top-k ranking metrics with binary relevance.

Notation for one user: the model's ranked list r_1, r_2, ... (best first), the set R of
relevant items (|R| >= 1), and hit_i = 1 if r_i is in R, else 0. Each metric looks at
the first k ranks only. A ranked list shorter than k counts its missing ranks as
misses. Negative item indices (the padding that ``top_k_excluding`` writes) never hit.

NDCG follows Järvelin & Kekäläinen, "Cumulated gain-based evaluation of IR
techniques" (ACM TOIS, 2002), with binary gains and the log2(i + 1) discount.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

import numpy as np

__all__ = [
    "evaluate_rankings",
    "hit_rate_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "recall_at_k",
]

def _validate_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer; got {k!r}")


def _hits(ranked_items: Sequence[int] | np.ndarray, relevant: Collection[int], k: int) -> np.ndarray:
    """Return hit_1 .. hit_k as a float array, padding a short ranked list with misses."""
    _validate_k(k)
    if len(relevant) == 0:
        raise ValueError("relevant must contain at least one item; drop users without relevant items first")
    top = [int(item) for item in list(ranked_items)[:k]]
    real_items = [item for item in top if item >= 0]
    if len(set(real_items)) != len(real_items):
        raise ValueError(f"ranked_items repeats an item in its first {k} positions: {top}")

    relevant_set = relevant if isinstance(relevant, (set, frozenset)) else set(relevant)
    hits = np.zeros(k, dtype=np.float64)
    for rank, item in enumerate(top):
        hits[rank] = item >= 0 and item in relevant_set
    return hits


def _discounts(k: int) -> np.ndarray:
    # 1 / log2(i + 1) for ranks i = 1 .. k
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def precision_at_k(ranked_items: Sequence[int] | np.ndarray, relevant: Collection[int], k: int) -> float:
    """Compute precision@k = (sum_{i<=k} hit_i) / k."""
    return float(_hits(ranked_items, relevant, k).sum() / k)


def recall_at_k(ranked_items: Sequence[int] | np.ndarray, relevant: Collection[int], k: int) -> float:
    """Compute recall@k = (sum_{i<=k} hit_i) / |R|."""
    return float(_hits(ranked_items, relevant, k).sum() / len(relevant))


def ndcg_at_k(ranked_items: Sequence[int] | np.ndarray, relevant: Collection[int], k: int) -> float:
    """Compute NDCG@k = DCG@k / IDCG@k with binary relevance.

    DCG@k = sum_{i=1..k} hit_i / log2(i + 1), and
    IDCG@k = sum_{i=1..min(k, |R|)} 1 / log2(i + 1), the DCG of a list that puts
    every relevant item first.
    """
    hits = _hits(ranked_items, relevant, k)
    discounts = _discounts(k)
    dcg = float(hits @ discounts)
    idcg = float(discounts[: min(k, len(relevant))].sum())
    return dcg / idcg


def hit_rate_at_k(ranked_items: Sequence[int] | np.ndarray, relevant: Collection[int], k: int) -> float:
    """Compute HR@k = 1 if any of the first k items is relevant, else 0."""
    return float(_hits(ranked_items, relevant, k).any())


def evaluate_rankings(
    ranked_item_lists: Sequence[Sequence[int]] | np.ndarray,
    relevant_sets: Sequence[Collection[int]] | Iterable[Collection[int]],
    ks: Sequence[int] = (10, 20),
) -> dict[str, float]:
    """Average precision, recall, NDCG and hit rate at each k over users.

    ``ranked_item_lists[u]`` is user u's ranked list and ``relevant_sets[u]`` the user's
    relevant items. A 2-D array of shape (n_users, K), as ``top_k_excluding`` returns,
    works as ``ranked_item_lists``. Returns keys such as ``"ndcg@10"`` and
    ``"hit_rate@20"``, each the unweighted mean over users of the per-user metric that
    the functions above define. Raises ValueError when the counts differ, when there are
    no users, or when a user has no relevant item.
    """
    relevant_sets = list(relevant_sets)
    if len(ranked_item_lists) != len(relevant_sets):
        raise ValueError(
            f"ranked_item_lists has {len(ranked_item_lists)} users but relevant_sets has {len(relevant_sets)}"
        )
    if not relevant_sets:
        raise ValueError("evaluate_rankings needs at least one user")
    ks = tuple(ks)
    if not ks:
        raise ValueError("ks must contain at least one cutoff")
    for k in ks:
        _validate_k(k)

    # One hit matrix at the largest cutoff serves every smaller k.
    max_k = max(ks)
    hits = np.stack([_hits(ranked, relevant, max_k) for ranked, relevant in zip(ranked_item_lists, relevant_sets)])
    n_relevant = np.array([len(relevant) for relevant in relevant_sets], dtype=np.float64)
    discounts = _discounts(max_k)
    # ideal_dcg_table[j] = sum_{i=1..j} 1 / log2(i + 1), with ideal_dcg_table[0] = 0
    ideal_dcg_table = np.concatenate(([0.0], np.cumsum(discounts)))

    results: dict[str, float] = {}
    for k in sorted(ks):
        hits_at_k = hits[:, :k]
        n_hits = hits_at_k.sum(axis=1)
        dcg = hits_at_k @ discounts[:k]
        idcg = ideal_dcg_table[np.minimum(n_relevant, k).astype(np.int64)]

        results[f"precision@{k}"] = float(np.mean(n_hits / k))
        results[f"recall@{k}"] = float(np.mean(n_hits / n_relevant))
        results[f"ndcg@{k}"] = float(np.mean(dcg / idcg))
        results[f"hit_rate@{k}"] = float(np.mean(n_hits > 0))
    return results
