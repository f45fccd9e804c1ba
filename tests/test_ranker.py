"""The sequence ranker: candidate-only last layer, the traced serving copy, stored artifacts."""

import logging

import numpy as np
import pytest
import torch

from recommend.ranker import SequenceRanker, ranker_from_state


@pytest.fixture
def ranker():
    torch.manual_seed(3)
    model = SequenceRanker(history_length=12, model_dim=32, heads=2, layers=3, dropout=0.0)
    # Random weights in place of training: the tests compare two ways of computing the same scores.
    with torch.no_grad():
        model.padding_token.normal_()
    model.eval()
    return model


def _state(model: SequenceRanker) -> dict:
    return {"config": model.config(), "weights": model.state_dict()}


def _inputs(seed: int, history: int, candidates: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(history, 128)).astype(np.float32),
            rng.normal(size=(candidates, 128)).astype(np.float32))


def test_candidates_are_scored_independently_of_each_other(ranker):
    history, candidates = _inputs(0, 9, 30)
    together = ranker.score_candidates(history, candidates)
    alone = np.array([ranker.score_candidates(history, candidates[i:i + 1])[0] for i in range(30)])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)
    assert np.all((together > 0) & (together < 1))


def test_shared_history_encoding_matches_the_batched_forward(ranker):
    history, candidates = _inputs(1, 5, 17)
    padded = np.zeros((17, 12, 128), np.float32)
    padded[:, -5:] = history
    mask = np.zeros((17, 12), bool)
    mask[:, -5:] = True
    with torch.inference_mode():
        batched = torch.sigmoid(ranker(torch.from_numpy(padded), torch.from_numpy(mask), torch.from_numpy(candidates)))
    np.testing.assert_allclose(ranker.score_candidates(history, candidates), batched.numpy(), rtol=1e-5, atol=1e-6)


def test_only_the_last_history_length_items_count(ranker):
    history, candidates = _inputs(2, 40, 8)
    older = history.copy()
    older[:28] = np.random.default_rng(9).normal(size=(28, 128))
    np.testing.assert_array_equal(ranker.score_candidates(history, candidates),
                                  ranker.score_candidates(older, candidates))


@pytest.mark.parametrize("history_length", [0, 1, 7, 12, 30])
@pytest.mark.parametrize("candidate_count", [1, 23, 100])
def test_traced_serving_copy_gives_the_same_scores(ranker, history_length, candidate_count):
    served = ranker_from_state(_state(ranker), for_serving=True)
    history, candidates = _inputs(history_length, history_length, candidate_count)
    np.testing.assert_allclose(served.score_candidates(history, candidates),
                               ranker.score_candidates(history, candidates), rtol=1e-5, atol=1e-6)


def test_traced_copy_stays_out_of_the_state_dict(ranker):
    served = ranker_from_state(_state(ranker), for_serving=True)
    assert served.state_dict().keys() == ranker.state_dict().keys()
    assert ranker_from_state(_state(served)).config() == ranker.config()


def test_older_artifact_format_is_ignored(ranker, caplog):
    state = _state(ranker)
    state["config"] = {key: value for key, value in state["config"].items() if key != "format"}
    with caplog.at_level(logging.WARNING, logger="recommend.ranker"):
        assert ranker_from_state(state, for_serving=True) is None
    assert "Retrain with manage.py train" in caplog.text


def test_model_dim_must_split_into_heads():
    with pytest.raises(ValueError, match="multiple of heads"):
        SequenceRanker(model_dim=30, heads=4)
