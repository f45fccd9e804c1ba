import math

import numpy as np
import pytest

from recommend.evaluation.metrics import (
    evaluate_rankings,
    hit_rate_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)

# Ranked list used by most cases: relevant items 7 and 9 sit at ranks 1 and 3.
RANKED = [7, 3, 9, 4, 5]
RELEVANT = {7, 9}


def test_precision_counts_hits_over_k():
    # 2 hits in the top 5 -> 2 / 5
    assert precision_at_k(RANKED, RELEVANT, 5) == pytest.approx(0.4)


def test_precision_pads_short_list_with_misses():
    # 2 hits, k = 10 although only 5 items are ranked -> 2 / 10
    assert precision_at_k(RANKED, RELEVANT, 10) == pytest.approx(0.2)


def test_recall_divides_by_relevant_count():
    # top 2 = [7, 3] contains 1 of the 2 relevant items -> 1 / 2
    assert recall_at_k(RANKED, RELEVANT, 2) == pytest.approx(0.5)


def test_recall_full_when_all_found():
    assert recall_at_k(RANKED, RELEVANT, 3) == pytest.approx(1.0)


def test_ndcg_hits_at_ranks_one_and_three():
    # DCG@5  = 1/log2(2) + 1/log2(4) = 1 + 0.5 = 1.5
    # IDCG@5 = 1/log2(2) + 1/log2(3) = 1 + 0.6309298 = 1.6309298   (min(5, |R|) = 2 terms)
    # NDCG@5 = 1.5 / 1.6309298 = 0.9197207
    assert ndcg_at_k(RANKED, RELEVANT, 5) == pytest.approx(1.5 / (1 + 1 / math.log2(3)))
    assert ndcg_at_k(RANKED, RELEVANT, 5) == pytest.approx(0.9197207, abs=1e-7)


def test_ndcg_ideal_dcg_limited_by_k():
    # k = 1: DCG@1 = 1/log2(2) = 1, IDCG@1 = 1 (min(1, |R|) = 1 term) -> 1
    assert ndcg_at_k(RANKED, RELEVANT, 1) == pytest.approx(1.0)


def test_ndcg_single_relevant_at_rank_two():
    # DCG = 1/log2(3) = 0.6309298, IDCG = 1/log2(2) = 1 -> 0.6309298
    assert ndcg_at_k([1, 2, 3], {2}, 3) == pytest.approx(1 / math.log2(3))


def test_ndcg_zero_without_hits():
    assert ndcg_at_k([1, 2, 3], {8}, 3) == 0.0


def test_hit_rate_one_when_any_hit():
    assert hit_rate_at_k(RANKED, RELEVANT, 1) == 1.0


def test_hit_rate_zero_without_hit_in_top_k():
    # the first relevant item (9) is at rank 3
    assert hit_rate_at_k([3, 4, 9], {9}, 2) == 0.0


def test_metrics_accept_numpy_rows():
    assert ndcg_at_k(np.array(RANKED), RELEVANT, 5) == pytest.approx(ndcg_at_k(RANKED, RELEVANT, 5))


def test_padding_index_never_hits():
    # -1 marks an empty slot in top_k_excluding output
    assert precision_at_k([-1, -1, 4], {4}, 3) == pytest.approx(1 / 3)


def test_metric_rejects_empty_relevant_set():
    with pytest.raises(ValueError, match="at least one item"):
        ndcg_at_k([1, 2], set(), 2)


@pytest.mark.parametrize("k", [0, -3, 2.5, True])
def test_metric_rejects_invalid_k(k):
    with pytest.raises(ValueError, match="k must be a positive integer"):
        recall_at_k([1, 2], {1}, k)


def test_metric_rejects_repeated_item():
    with pytest.raises(ValueError, match="repeats an item"):
        precision_at_k([1, 1, 2], {1}, 3)


def test_evaluate_rankings_averages_over_users():
    # given
    ranked = np.array([[7, 3, 9], [1, 2, 3]])
    relevant = [{7, 9}, {5}]

    # when
    results = evaluate_rankings(ranked, relevant, ks=(1, 3))

    # then
    # user 0 @3: precision 2/3, recall 1, NDCG (1 + 0.5) / (1 + 1/log2 3), hit 1
    # user 1 @3: everything 0
    assert results["precision@3"] == pytest.approx((2 / 3) / 2)
    assert results["recall@3"] == pytest.approx(0.5)
    assert results["ndcg@3"] == pytest.approx(ndcg_at_k([7, 3, 9], {7, 9}, 3) / 2)
    assert results["hit_rate@3"] == pytest.approx(0.5)
    # user 0 @1: precision 1, recall 1/2, NDCG 1 / 1, hit 1
    assert results["precision@1"] == pytest.approx(0.5)
    assert results["recall@1"] == pytest.approx(0.25)
    assert results["ndcg@1"] == pytest.approx(0.5)
    assert results["hit_rate@1"] == pytest.approx(0.5)


def test_evaluate_rankings_matches_per_user_functions():
    # given
    rng = np.random.default_rng(3)
    ranked = [rng.permutation(30)[:20] for _ in range(25)]
    relevant = [set(rng.choice(30, size=rng.integers(1, 6), replace=False).tolist()) for _ in range(25)]
    functions = {"precision": precision_at_k, "recall": recall_at_k, "ndcg": ndcg_at_k, "hit_rate": hit_rate_at_k}

    # when
    results = evaluate_rankings(ranked, relevant, ks=(5, 10, 20))

    # then
    for k in (5, 10, 20):
        for name, function in functions.items():
            expected = np.mean([function(row, rel, k) for row, rel in zip(ranked, relevant)])
            assert results[f"{name}@{k}"] == pytest.approx(expected), f"{name}@{k}"


def test_evaluate_rankings_rejects_length_mismatch():
    with pytest.raises(ValueError, match="relevant_sets has 1"):
        evaluate_rankings([[1, 2], [2, 3]], [{1}])


def test_evaluate_rankings_rejects_no_users():
    with pytest.raises(ValueError, match="at least one user"):
        evaluate_rankings([], [])
