import numpy as np
import pytest
import torch

from recommend.evaluation.baselines import (
    ItemKNNRecommender,
    PopularityRecommender,
    SASRecRecommender,
    recommend_top_k,
    top_k_excluding,
)

# ---------------------------------------------------------------------------
# top_k_excluding
# ---------------------------------------------------------------------------


def test_top_k_orders_by_score_and_skips_seen():
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [0.4, 0.3, 0.2, 0.1]])

    ranked = top_k_excluding(scores, [[1], []], 2)

    assert ranked.tolist() == [[3, 2], [0, 1]]


def test_top_k_breaks_ties_by_lower_index():
    # Items 1, 2, 4 and 5 tie, and the lowest indices win both the order and the cut.
    scores = np.array([[0.0, 1.0, 1.0, 2.0, 1.0, 1.0]])

    ranked = top_k_excluding(scores, [[]], 3)

    assert ranked.tolist() == [[3, 1, 2]]


def test_top_k_pads_when_too_few_unseen():
    scores = np.array([[0.3, 0.2, 0.1]])

    ranked = top_k_excluding(scores, [[0, 2]], 3)

    assert ranked.tolist() == [[1, -1, -1]]


def test_top_k_caps_k_at_item_count():
    ranked = top_k_excluding(np.array([[0.1, 0.2]]), [[]], 5)

    assert ranked.tolist() == [[1, 0]]


def test_top_k_leaves_scores_unchanged():
    scores = np.array([[0.1, 0.9, 0.5]], dtype=np.float32)

    top_k_excluding(scores, [[1]], 1)

    np.testing.assert_array_equal(scores, np.array([[0.1, 0.9, 0.5]], dtype=np.float32))


def test_top_k_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        top_k_excluding(np.array([[np.nan, 1.0]]), [[]], 1)


def test_top_k_rejects_out_of_range_seen_item():
    with pytest.raises(ValueError, match="item index 5, outside 0..2"):
        top_k_excluding(np.zeros((1, 3)), [[5]], 1)


# ---------------------------------------------------------------------------
# Popularity
# ---------------------------------------------------------------------------


def test_popularity_recommends_most_popular_unseen():
    # given: item 0 has 3 interactions, item 1 two, item 2 one, item 3 none
    train = [[0, 1, 2], [0, 1], [0]]
    model = PopularityRecommender().fit(train, n_items=4)

    # when
    ranked = recommend_top_k(model, [[0], []], 2)

    # then
    assert ranked.tolist() == [[1, 2], [0, 1]]


def test_popularity_scores_are_counts():
    model = PopularityRecommender().fit([[0, 1, 2], [0, 1], [0]], n_items=4)

    assert model.score([[]]).tolist() == [[3.0, 2.0, 1.0, 0.0]]


def test_popularity_rejects_unknown_item():
    with pytest.raises(ValueError, match="train_sequences\\[0\\] contains item index 4"):
        PopularityRecommender().fit([[4]], n_items=4)


# ---------------------------------------------------------------------------
# Item-kNN
# ---------------------------------------------------------------------------


def _co_occurrence_train() -> list[list[int]]:
    # Items 0 and 1 always appear together, as do 2 and 3. Item 4 is the most popular
    # overall but co-occurs with each of them only rarely.
    train = [[0, 1]] * 10 + [[2, 3]] * 10 + [[4]] * 30
    return train + [[0, 4], [2, 4]]


def test_item_knn_recommends_co_occurring_item():
    model = ItemKNNRecommender().fit(_co_occurrence_train(), n_items=5, neighbours=10, shrinkage=0.0)

    ranked = recommend_top_k(model, [[0], [3]], 1)

    assert ranked.tolist() == [[1], [2]]


def test_item_knn_similarity_uses_shrinkage():
    # items 0 and 1: 10 users in common, n_0 = 11, n_1 = 10
    # sim(0, 1) = 10 / (sqrt(11) * sqrt(10) + 5)
    model = ItemKNNRecommender().fit(_co_occurrence_train(), n_items=5, neighbours=10, shrinkage=5.0)

    assert model.similarity[0, 1] == pytest.approx(10 / (np.sqrt(11 * 10) + 5), rel=1e-6)


def test_item_knn_keeps_top_neighbours_only():
    model = ItemKNNRecommender().fit(_co_occurrence_train(), n_items=5, neighbours=1, shrinkage=0.0)

    assert np.diff(model.similarity.indptr).max() == 1
    assert model.similarity[0].nonzero()[1].tolist() == [1]


def test_item_knn_similarity_has_zero_diagonal():
    model = ItemKNNRecommender().fit(_co_occurrence_train(), n_items=5)

    assert model.similarity.diagonal().tolist() == [0.0] * 5


# ---------------------------------------------------------------------------
# SASRec
# ---------------------------------------------------------------------------

N_CYCLE_ITEMS = 12


@pytest.fixture(autouse=True, scope="module")
def _single_torch_thread():
    # The SASRec fits here are tiny, and a second OpenMP thread on a busy machine made
    # them many times slower. Restore the caller's setting afterwards.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _cyclic_sequences(n_users: int, seed: int) -> list[np.ndarray]:
    """Return sequences that step through items 0..11 in a fixed cycle from a random start."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, N_CYCLE_ITEMS, size=n_users)
    return [(start + np.arange(6)) % N_CYCLE_ITEMS for start in starts]


def _fit_cyclic_sasrec(seed: int = 0) -> SASRecRecommender:
    return SASRecRecommender().fit(
        _cyclic_sequences(300, seed=1),
        n_items=N_CYCLE_ITEMS,
        epochs=30,
        max_len=8,
        hidden=16,
        blocks=1,
        heads=2,
        dropout=0.0,
        seed=seed,
        batch_size=32,
        learning_rate=5e-3,
    )


@pytest.fixture(scope="module")
def cyclic_sasrec() -> SASRecRecommender:
    return _fit_cyclic_sasrec()


def test_sasrec_learns_next_item_in_cycle(cyclic_sasrec):
    # given
    histories = [[3, 4, 5], [10, 11], [11, 0, 1, 2]]

    # when
    ranked = recommend_top_k(cyclic_sasrec, histories, 1)

    # then
    assert ranked[:, 0].tolist() == [6, 0, 3]


def test_sasrec_loss_decreases(cyclic_sasrec):
    assert cyclic_sasrec.epoch_losses[-1] < 0.5 * cyclic_sasrec.epoch_losses[0]


def test_sasrec_same_seed_same_scores():
    first = _fit_cyclic_sasrec(seed=7).score([[1, 2, 3]])
    second = _fit_cyclic_sasrec(seed=7).score([[1, 2, 3]])

    np.testing.assert_array_equal(first, second)


def test_sasrec_restores_global_rng_state():
    before = torch.get_rng_state()

    _fit_cyclic_sasrec()

    assert torch.equal(torch.get_rng_state(), before)


def test_sasrec_scores_every_item(cyclic_sasrec):
    scores = cyclic_sasrec.score([[1, 2], [], list(range(12)) * 2])

    assert scores.shape == (3, N_CYCLE_ITEMS)
    assert np.isfinite(scores).all()


def test_sasrec_stops_at_max_seconds():
    model = SASRecRecommender().fit(_cyclic_sequences(50, seed=2), n_items=N_CYCLE_ITEMS, epochs=50, max_seconds=0.0)

    assert len(model.epoch_losses) == 1


def test_sasrec_rejects_hidden_not_divisible_by_heads():
    with pytest.raises(ValueError, match="hidden must be divisible by heads"):
        SASRecRecommender().fit(_cyclic_sequences(5, seed=0), n_items=N_CYCLE_ITEMS, hidden=10, heads=3)
