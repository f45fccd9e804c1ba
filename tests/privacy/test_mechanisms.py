import math

import numpy as np
import pytest

from privacy.accounting import CALIBRATION_MARGIN
from privacy.mechanisms import (
    MECHANISMS,
    SCORE_GRANULARITY,
    ImportanceWeightedMechanism,
    LaplaceMechanism,
    NonPrivateMechanism,
    UserVectorMechanism,
    build_mechanism,
    compute_user_vector,
    importance_score_scales,
    paper_nominal_cost,
    privacy_loss_bound,
    privatise_user_vector,
    select_top_k,
    user_vector_sensitivity,
)
from privacy.sampling import NoiseSampler

EPSILON = 1.0
SHAPES = [(k, c) for k in (1, 5, 10, 50) for c in (20, 100)]


@pytest.mark.parametrize("k,n_candidates", SHAPES)
def test_laplace_charge_matches_top_k_theorem(k, n_candidates):
    # given
    mechanism = LaplaceMechanism(EPSILON, retrieval_fraction=0.5, history_length=50)

    # when
    plan = mechanism.plan(k, n_candidates)

    # then: b = min(k (2 Delta + gamma_s), C Delta) / epsilon_s, Delta = 1
    epsilon_s = 0.5
    expected_numerator = min(k * (2 + SCORE_GRANULARITY), n_candidates)
    assert mechanism.charged_epsilon(k, n_candidates) == EPSILON
    assert plan.epsilon_user_vector + plan.epsilon_scores == EPSILON
    assert plan.score_scale == pytest.approx(expected_numerator / epsilon_s, rel=1e-9)
    assert expected_numerator / plan.score_scale <= epsilon_s
    assert privacy_loss_bound(plan) <= EPSILON
    assert privacy_loss_bound(plan) == pytest.approx(EPSILON, rel=1e-9)


@pytest.mark.parametrize(
    "k,n_candidates,bound",
    [(1, 20, "noisy_top_k"), (5, 20, "noisy_top_k"), (10, 20, "whole_vector"), (50, 20, "whole_vector"),
     (10, 100, "noisy_top_k"), (50, 100, "whole_vector"), (1, 2, "whole_vector")],
)
def test_laplace_switches_to_cheaper_bound(k, n_candidates, bound):
    plan = LaplaceMechanism(EPSILON).plan(k, n_candidates)

    assert plan.parameters["score_bound"] == bound


@pytest.mark.parametrize("k,n_candidates", SHAPES)
def test_laplace_records_paper_nominal_epsilon(k, n_candidates):
    plan = LaplaceMechanism(EPSILON).plan(k, n_candidates)

    nominal = plan.parameters["nominal_epsilon_per_score"]

    assert nominal == pytest.approx(1.0 / plan.score_scale)
    assert paper_nominal_cost(nominal, k, n_candidates) == pytest.approx(plan.epsilon_scores, rel=1e-9)


def test_paper_nominal_cost_values():
    assert paper_nominal_cost(0.1, 5, 100) == pytest.approx(1.0, rel=1e-5)
    assert paper_nominal_cost(0.1, 50, 100) == pytest.approx(10.0)
    assert paper_nominal_cost(0.1, 1, 1) == pytest.approx(0.1)


@pytest.mark.parametrize("k,n_candidates", SHAPES)
def test_importance_weighted_charge_is_sum_of_weighted_costs(k, n_candidates):
    # given
    mechanism = ImportanceWeightedMechanism(EPSILON, retrieval_fraction=0.25)
    plan = mechanism.plan(k, n_candidates)
    importance = np.abs(np.random.default_rng(k).normal(size=n_candidates))
    importance[0] = 0.0

    # when
    scales = importance_score_scales(importance, plan)

    # then: sum_j Delta / b_j = epsilon_s * sum_j w_j = epsilon_s
    assert mechanism.charged_epsilon(k, n_candidates) == EPSILON
    assert plan.epsilon_user_vector == pytest.approx(0.25)
    assert np.isinf(scales[0])
    assert np.sum(1.0 / scales[1:]) == pytest.approx(plan.epsilon_scores, rel=1e-9)
    assert np.sum(1.0 / scales[1:]) <= plan.epsilon_scores
    assert privacy_loss_bound(plan, importance) <= EPSILON


def test_importance_weighted_uses_uniform_weights_without_importance():
    plan = ImportanceWeightedMechanism(EPSILON).plan(5, 20)

    scales = importance_score_scales(np.zeros(20), plan)

    assert np.allclose(scales, 20 / plan.epsilon_scores)


@pytest.mark.parametrize("k,n_candidates", SHAPES)
def test_user_vector_charge_is_epsilon_on_vector(k, n_candidates):
    plan = UserVectorMechanism(EPSILON, history_length=50).plan(k, n_candidates)

    # b_u = Delta_1 (1 + 2**-20) / epsilon with Delta_1 = 2 / L
    assert plan.epsilon == EPSILON
    assert plan.epsilon_user_vector == EPSILON
    assert plan.epsilon_scores == 0.0
    assert plan.score_scale_rule == "none"
    assert plan.user_vector_scale == pytest.approx(2 / 50 / EPSILON, rel=1e-5)
    assert privacy_loss_bound(plan) == pytest.approx(EPSILON * (1 - CALIBRATION_MARGIN))


def test_non_private_mechanism_is_not_selectable():
    plan = NonPrivateMechanism().plan(10, 100)

    assert "non_private" not in MECHANISMS
    assert plan.epsilon == math.inf
    assert plan.user_vector_scale is None
    with pytest.raises(ValueError, match="mechanism must be one of"):
        build_mechanism("non_private", 1.0)


@pytest.mark.parametrize("epsilon", [0, -1.0, math.nan, math.inf, -math.inf, 10.5, "1"])
@pytest.mark.parametrize("name", sorted(MECHANISMS))
def test_mechanism_rejects_invalid_epsilon(name, epsilon):
    with pytest.raises(ValueError, match="epsilon must be greater than 0 and at most 10; got"):
        build_mechanism(name, epsilon)


def test_mechanism_rejects_zero_with_exact_message():
    with pytest.raises(ValueError) as error:
        LaplaceMechanism(0)

    assert str(error.value) == "epsilon must be greater than 0 and at most 10; got 0"


def test_mechanism_respects_lower_configured_maximum(settings):
    settings.PRIVACY_MAX_EPSILON = 2.0

    with pytest.raises(ValueError, match="at most 2; got 3"):
        UserVectorMechanism(3.0)


def test_configured_maximum_cannot_raise_hard_cap(settings):
    settings.PRIVACY_MAX_EPSILON = 50.0

    with pytest.raises(ValueError, match="at most 10; got 20"):
        UserVectorMechanism(20.0)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, math.nan])
def test_mechanism_rejects_invalid_retrieval_fraction(fraction):
    with pytest.raises(ValueError, match="retrieval_fraction must be greater than 0 and less than 1"):
        LaplaceMechanism(1.0, retrieval_fraction=fraction)


def test_build_mechanism_ignores_other_policy_fields():
    mechanism = build_mechanism("laplace", 2.0, retrieval_fraction=0.3, history_length=20, max_k=10, n_candidates=100)

    assert isinstance(mechanism, LaplaceMechanism)
    assert mechanism.retrieval_fraction == 0.3
    assert mechanism.history_length == 20


def test_build_mechanism_rejects_unknown_parameter():
    with pytest.raises(TypeError, match="histroy_length"):
        build_mechanism("laplace", 1.0, histroy_length=20)


def test_user_vector_change_is_within_sensitivity():
    # given: a full window, then the same window plus one interaction
    rng = np.random.default_rng(0)
    history_length = 10
    items = rng.normal(size=(history_length + 1, 16))
    weights = rng.uniform(size=history_length + 1)

    # when
    u = compute_user_vector(items[:history_length], weights[:history_length], history_length)
    u_added = compute_user_vector(items[1:], weights[1:], history_length)
    u_short = compute_user_vector(items[:3], weights[:3], history_length)
    u_short_added = compute_user_vector(items[:4], weights[:4], history_length)

    # then: ||u - u'||_1 <= 2 / L, and <= 1 / L while the window is not full
    assert np.abs(u - u_added).sum() <= user_vector_sensitivity(history_length)
    assert np.abs(u_short - u_short_added).sum() <= 1 / history_length + 1e-15


def test_user_vector_clamps_weights_and_skips_zero_embeddings():
    embeddings = np.array([[1.0, -1.0], [0.0, 0.0]])

    u = compute_user_vector(embeddings, [5.0, 1.0], history_length=2)

    assert np.allclose(u, [0.25, -0.25])


def test_privatise_rejects_history_longer_than_window():
    plan = UserVectorMechanism(1.0, history_length=3).plan(1, 10)

    with pytest.raises(ValueError, match="at most history_length = 3"):
        privatise_user_vector(np.ones((4, 8)), np.ones(4), plan, NoiseSampler.seeded(0))


def test_privatise_returns_noisy_vector_of_same_dimension():
    plan = UserVectorMechanism(1.0, history_length=5).plan(1, 10)
    embeddings = np.random.default_rng(1).normal(size=(5, 128))

    noisy = privatise_user_vector(embeddings, np.ones(5), plan, NoiseSampler.seeded(1))

    assert noisy.shape == (128,)
    assert not np.allclose(noisy, compute_user_vector(embeddings, np.ones(5), 5))


def test_select_top_k_rejects_more_candidates_than_planned():
    plan = LaplaceMechanism(1.0).plan(2, 5)

    with pytest.raises(ValueError, match="at most n_candidates = 5"):
        select_top_k(np.zeros(6), 2, plan, NoiseSampler.seeded(0))


def test_select_top_k_rejects_k_above_plan():
    plan = LaplaceMechanism(1.0).plan(2, 5)

    with pytest.raises(ValueError, match="at most the planned k = 2"):
        select_top_k(np.zeros(5), 3, plan, NoiseSampler.seeded(0))


def test_select_top_k_releases_distinct_indices():
    plan = LaplaceMechanism(10.0).plan(5, 20)
    scores = np.linspace(0, 1, 20)

    released = select_top_k(scores, 5, plan, NoiseSampler.seeded(2))

    assert len(set(released.tolist())) == 5


def test_select_top_k_releases_all_when_fewer_candidates():
    plan = LaplaceMechanism(1.0).plan(10, 100)

    released = select_top_k([0.2, 0.9, 0.5], 10, plan, NoiseSampler.seeded(3))

    assert sorted(released.tolist()) == [0, 1, 2]


def test_importance_weighted_ranks_dropped_scores_last():
    plan = ImportanceWeightedMechanism(1.0).plan(4, 4)

    released = select_top_k([1.0, 0.0, 0.5, 0.2], 4, plan, NoiseSampler.seeded(4), importance=[0.0, 1.0, 0.0, 1.0])

    assert sorted(released[:2].tolist()) == [1, 3]
    assert released[2:].tolist() == [0, 2]


def test_importance_weighted_requires_importance():
    plan = ImportanceWeightedMechanism(1.0).plan(2, 4)

    with pytest.raises(ValueError, match="importance is required"):
        select_top_k(np.zeros(4), 2, plan, NoiseSampler.seeded(0))


def test_user_vector_plan_ranks_scores_without_noise():
    plan = UserVectorMechanism(1.0).plan(3, 5)

    released = select_top_k([0.1, 0.9, 0.3, 0.9, 0.0], 3, plan, NoiseSampler.seeded(0))

    assert released.tolist() == [1, 3, 2]


def test_scores_outside_range_are_clamped():
    plan = LaplaceMechanism(10.0).plan(1, 2)
    sampler = NoiseSampler.seeded(5)

    first = [select_top_k([50.0, 1.0], 1, plan, sampler)[0] for _ in range(400)]

    # Both scores clamp to 1, so each candidate is equally likely to come first.
    assert 120 < sum(first) < 280


def test_plan_parameters_are_json_serialisable():
    import json

    for name in MECHANISMS:
        plan = build_mechanism(name, 1.0).plan(10, 100)
        assert json.loads(json.dumps(plan.parameters)) == plan.parameters
