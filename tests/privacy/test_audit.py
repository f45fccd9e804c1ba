import math

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from privacy.audit import (
    AUDIT_SHAPES,
    build_scenario,
    clopper_pearson_lower,
    clopper_pearson_upper,
    epsilon_lower_bound,
    run_audit,
    synthetic_item_embeddings,
    under_noised_copy,
)
from privacy.mechanisms import MECHANISMS, build_mechanism, privacy_loss_bound
from privacy.sampling import NoiseSampler

RUNS = 3000
DIMENSIONS = 16


def scenario_for(name: str, *, k=None, n_candidates=None, seed=0):
    default_k, default_candidates = AUDIT_SHAPES[name]
    rng = np.random.default_rng(seed)
    items = synthetic_item_embeddings(64, DIMENSIONS, rng)
    return build_scenario(
        items, history_length=20, n_candidates=n_candidates or default_candidates, k=k or default_k, rng=rng
    )


def test_clopper_pearson_bounds_contain_estimate():
    lower = clopper_pearson_lower(30, 100, 0.025)
    upper = clopper_pearson_upper(30, 100, 0.025)

    assert 0.2 < lower < 0.3 < upper < 0.41
    assert clopper_pearson_lower(0, 100, 0.025) == 0.0
    assert clopper_pearson_upper(100, 100, 0.025) == 1.0


def test_epsilon_lower_bound_grows_with_ratio():
    assert epsilon_lower_bound(500, 500, 1000, 0.05) < 0
    assert 0 < epsilon_lower_bound(700, 300, 1000, 0.05) < math.log(7 / 3)


def test_scenario_neighbours_differ_by_one_interaction():
    scenario = scenario_for("user_vector")

    # H' is H shifted by one: the oldest interaction left, one new one entered.
    assert np.array_equal(scenario.history_embeddings[1:], scenario.neighbour_embeddings[:-1])
    assert not np.array_equal(scenario.history_embeddings[0], scenario.neighbour_embeddings[-1])


def test_scenario_scores_flip_across_full_range():
    scenario = scenario_for("laplace")

    assert np.all(np.abs(scenario.scores - scenario.neighbour_scores) == 1.0)


@pytest.mark.parametrize("name", sorted(MECHANISMS))
def test_audit_passes_correct_mechanism(name):
    mechanism = build_mechanism(name, 1.0, history_length=20)

    result = run_audit(mechanism, scenario_for(name), runs=RUNS, sampler=NoiseSampler.seeded(11))

    assert result.charged_epsilon == 1.0
    assert result.epsilon_lower_bound <= result.charged_epsilon
    assert result.passed


@pytest.mark.parametrize("name", sorted(MECHANISMS))
def test_audit_fails_under_noised_control(name):
    broken = under_noised_copy(build_mechanism(name, 1.0, history_length=20), 10.0)

    result = run_audit(broken, scenario_for(name), runs=RUNS, sampler=NoiseSampler.seeded(12), is_control=True)

    assert result.charged_epsilon == 1.0
    assert result.epsilon_lower_bound > result.charged_epsilon
    assert result.violates


@pytest.mark.parametrize("k,n_candidates", [(1, 2), (2, 6)])
def test_audit_covers_both_laplace_bounds(k, n_candidates):
    mechanism = build_mechanism("laplace", 1.0, history_length=20)
    scenario = scenario_for("laplace", k=k, n_candidates=n_candidates)

    result = run_audit(mechanism, scenario, runs=RUNS, sampler=NoiseSampler.seeded(13))
    control = run_audit(
        under_noised_copy(mechanism), scenario, runs=RUNS, sampler=NoiseSampler.seeded(14), is_control=True
    )

    assert not result.violates
    assert control.violates


def test_under_noised_copy_breaks_the_proven_bound():
    mechanism = build_mechanism("laplace", 1.0)

    broken = under_noised_copy(mechanism, 10.0)

    assert broken.plan(1, 3).epsilon == 1.0
    assert privacy_loss_bound(broken.plan(1, 3)) == pytest.approx(10.0, rel=1e-6)
    assert privacy_loss_bound(mechanism.plan(1, 3)) <= 1.0


def test_privacy_audit_command_uses_tenant_videos(privacy_tenant, set_policy, make_videos_with_embeddings, capsys):
    set_policy(epsilon=1.0, history_length=20)
    make_videos_with_embeddings(25)

    call_command(
        "privacy_audit", "--tenant", privacy_tenant.name, "--runs", "400", "--seed", "1",
        "--mechanism", "laplace", "--no-control",
    )

    output = capsys.readouterr().out
    assert "fused embeddings of 25 ready videos" in output
    assert "| laplace | 1 |" in output
    assert "Privacy audit passed." in output


def test_privacy_audit_command_falls_back_to_synthetic_vectors(privacy_tenant, set_policy, capsys):
    set_policy(epsilon=1.0, history_length=20)

    call_command(
        "privacy_audit", "--tenant", privacy_tenant.name, "--runs", "2000", "--seed", "2",
        "--mechanism", "user_vector",
    )

    captured = capsys.readouterr()
    assert "synthetic unit vectors" in captured.err
    assert "detected (expected)" in captured.out
    assert "Privacy audit passed." in captured.out


def test_privacy_audit_command_rejects_unknown_tenant(db):
    with pytest.raises(CommandError, match="No tenant named 'nobody'"):
        call_command("privacy_audit", "--tenant", "nobody")


@pytest.mark.parametrize("name", ["laplace", "importance_weighted"])
def test_audit_fails_under_noised_scores(name):
    broken = under_noised_copy(build_mechanism(name, 1.0, history_length=20), 10.0, scores_only=True)

    result = run_audit(broken, scenario_for(name), runs=RUNS, sampler=NoiseSampler.seeded(15), is_control=True)

    assert result.violates
    assert "candidate" in result.event or "favoured" in result.event
