import math
import os
import threading

import numpy as np
import pytest
from scipy import stats

from privacy import sampling
from privacy.sampling import (
    NoiseSampler,
    default_granularity,
    discrete_laplace_pmf,
    scale_ratio,
    snap_to_grid,
)


def discrete_laplace_p_value(draws: np.ndarray, t: float, support: int = 12) -> float:
    """Return the chi-square p-value of integer draws against the discrete Laplace with scale t.

    Bins are the integers |z| <= support, with both tails pooled into the outermost bins.
    """
    values = np.arange(-support, support + 1)
    observed = np.array([np.sum(draws == z) for z in values], dtype=float)
    observed[0] += np.sum(draws < -support)
    observed[-1] += np.sum(draws > support)
    expected = discrete_laplace_pmf(values, t) * draws.size
    tail = (1.0 - discrete_laplace_pmf(values, t).sum()) / 2 * draws.size
    expected[0] += tail
    expected[-1] += tail
    _, p_value = stats.chisquare(observed, expected)
    return p_value


def test_laplace_output_lies_on_grid():
    # given
    sampler = NoiseSampler.seeded(1)
    scale = 0.37

    # when
    noise = sampler.laplace(scale, 2000)

    # then
    granularity = default_granularity(scale)
    indices = noise / granularity
    assert noise.dtype == np.float64
    assert np.all(indices == np.round(indices))


def test_add_laplace_snaps_values_to_grid():
    sampler = NoiseSampler.seeded(2)
    values = np.array([0.1, 0.2, 0.3, 1.0 / 3.0])
    granularity = 2.0**-20

    noisy = sampler.add_laplace(values, 0.5, granularity=granularity)

    indices = noisy / granularity
    assert np.all(indices == np.round(indices))


def test_default_granularity_is_fine_power_of_two():
    for scale in (1e-4, 0.04, 1.0, 3.0, 200.0):
        granularity = default_granularity(scale)
        mantissa, _ = math.frexp(granularity)
        assert mantissa == 0.5
        assert 2**20 <= scale / granularity < 2**21


def test_discrete_laplace_matches_pmf_chi_square():
    # given: t = 2.75, a rational scale, so numerator / denominator = 11 / 4
    sampler = NoiseSampler.seeded(3)

    # when
    draws = np.array([sampler.discrete_laplace(11, 4) for _ in range(40000)])

    # then
    assert discrete_laplace_p_value(draws, 2.75) > 0.001


def test_discrete_laplace_mean_and_variance():
    sampler = NoiseSampler.seeded(4)
    t = 5.5
    numerator, denominator = t.as_integer_ratio()
    draws = np.array([sampler.discrete_laplace(numerator, denominator) for _ in range(40000)], dtype=float)

    # Var Z = 2 e^{-1/t} / (1 - e^{-1/t})^2 for the discrete Laplace with scale t.
    q = math.exp(-1.0 / t)
    variance = 2 * q / (1 - q) ** 2
    standard_error = math.sqrt(variance / draws.size)
    assert abs(draws.mean()) < 4 * standard_error
    assert abs(draws.var() / variance - 1) < 0.05


def test_laplace_on_fine_grid_has_continuous_variance():
    sampler = NoiseSampler.seeded(5)
    scale = 0.8

    noise = sampler.laplace(scale, 20000)

    # Continuous Laplace has variance 2 * scale**2, and this grid is 2**20 times finer than the scale.
    assert abs(noise.var() / (2 * scale**2) - 1) < 0.05


def test_secure_sampler_draws_on_grid():
    sampler = NoiseSampler.secure()

    noise = sampler.laplace(1.0, 500)

    granularity = default_granularity(1.0)
    assert sampler.is_secure
    assert np.all(noise / granularity == np.round(noise / granularity))
    assert 0.5 < noise.std() / math.sqrt(2) < 1.5


def test_forked_child_draws_fresh_noise():
    # given: a sampler that has drawn before the fork, as a serving worker's would have
    sampler = NoiseSampler.secure()
    sampler.laplace(1.0, 64)
    read_end, write_end = os.pipe()

    # when: parent and child each draw the same request after the fork
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.write(write_end, sampler.laplace(1.0, 64).tobytes())
        finally:
            os._exit(0)
    os.close(write_end)
    parent_noise = sampler.laplace(1.0, 64)
    child_bytes = b""
    while chunk := os.read(read_end, 4096):
        child_bytes += chunk
    os.close(read_end)
    os.waitpid(pid, 0)

    # then
    child_noise = np.frombuffer(child_bytes, dtype=np.float64)
    assert child_noise.shape == (64,)
    assert not np.array_equal(child_noise, parent_noise)


def test_per_coordinate_scales():
    sampler = NoiseSampler.seeded(6)
    scales = np.array([0.01] * 5000 + [10.0] * 5000)

    noise = sampler.laplace(scales)

    assert noise[:5000].std() < 0.05
    assert noise[5000:].std() > 5


def test_snap_commutes_with_integer_shift():
    granularity = 2.0**-4
    values = np.array([0.5 * granularity, 1.5 * granularity, -0.5 * granularity, 0.3])

    snapped = snap_to_grid(values, granularity)
    shifted = snap_to_grid(values + 3 * granularity, granularity)

    assert np.all(shifted - snapped == 3)


@pytest.mark.parametrize("scale", [0.0, -1.0, math.nan, math.inf])
def test_laplace_rejects_invalid_scale(scale):
    with pytest.raises(ValueError, match="scale must be finite and greater than 0"):
        NoiseSampler.seeded(0).laplace(scale, 3)


def test_add_laplace_rejects_non_power_of_two_granularity():
    with pytest.raises(ValueError, match="power of two"):
        NoiseSampler.seeded(0).add_laplace([0.5], 1.0, granularity=0.3)


def test_add_laplace_rejects_nan_values():
    with pytest.raises(ValueError, match="finite"):
        NoiseSampler.seeded(0).add_laplace([math.nan], 1.0)


def test_seeded_sampler_is_reproducible():
    first = NoiseSampler.seeded(7).laplace(1.0, 50)
    second = NoiseSampler.seeded(7).laplace(1.0, 50)

    assert np.array_equal(first, second)


def test_threads_draw_different_secure_noise():
    sampler = NoiseSampler.secure()
    draws = {}

    def draw(name: str) -> None:
        draws[name] = [sampler.laplace(1.0, 200) for _ in range(20)]

    threads = [threading.Thread(target=draw, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    granularity = default_granularity(1.0)
    for first, second in zip(draws["a"], draws["b"]):
        assert not np.array_equal(first, second)
        assert np.all(first / granularity == np.round(first / granularity))


def test_scale_ratio_rounds_up_to_short_numerator():
    from privacy.sampling import scale_ratio

    numerator, denominator = scale_ratio(1638.4)

    assert numerator / denominator >= 1638.4
    assert numerator / denominator - 1638.4 <= 1638.4 * 2.0**-31
    assert numerator.bit_length() <= 33


def test_pooled_draws_match_pmf_chi_square():
    # given: granularity 1, so the grid indices are the draws, and t = 2.75 exactly
    sampler = NoiseSampler.seeded(21)

    # when: one scale for all coordinates shares one batch of passes
    draws = sampler.laplace(2.75, 40000, granularity=1.0)

    # then
    assert discrete_laplace_p_value(draws, 2.75) > 0.001


def test_per_lane_scales_match_pmf_chi_square():
    # given: two scales interleaved in one call, so each lane keeps its own t
    sampler = NoiseSampler.seeded(22)
    scales = np.tile([2.75, 6.5], 20000)

    # when
    draws = sampler.laplace(scales, granularity=1.0)

    # then
    assert discrete_laplace_p_value(draws[0::2], 2.75) > 0.001
    assert discrete_laplace_p_value(draws[1::2], 6.5, support=30) > 0.001


def test_continuations_match_pmf_chi_square(monkeypatch):
    # given: one Algorithm 1 step and three trials drawn up front, so about half of the
    # passes continue Algorithm 1 and 5% continue the geometric count
    monkeypatch.setattr(sampling, "_ALGORITHM_1_FIRST_STEPS", 1)
    monkeypatch.setattr(sampling, "_FIRST_TRIAL_WORDS", 1)
    sampler = NoiseSampler.seeded(23)

    # when
    pooled = sampler.laplace(2.75, 40000, granularity=1.0)
    per_lane = sampler.laplace(np.tile([2.75, 6.5], 20000), granularity=1.0)

    # then
    assert discrete_laplace_p_value(pooled, 2.75) > 0.001
    assert discrete_laplace_p_value(per_lane[0::2], 2.75) > 0.001
    assert discrete_laplace_p_value(per_lane[1::2], 6.5, support=30) > 0.001


def test_python_integer_draws_match_pmf_chi_square(monkeypatch):
    # given: every numerator above the uint64 limit, so every lane uses Python integers
    monkeypatch.setattr(sampling, "_VECTOR_NUMERATOR_LIMIT", 1)
    sampler = NoiseSampler.seeded(24)

    # when
    draws = sampler.laplace(np.tile([2.75, 6.5], 10000), granularity=1.0)

    # then
    assert discrete_laplace_p_value(draws[0::2], 2.75) > 0.001
    assert discrete_laplace_p_value(draws[1::2], 6.5, support=30) > 0.001


def test_exp_minus_one_trial_continuation_rate():
    # given: digits 0, so every trial has passed steps 1 to m and continues one step at a time
    sampler = NoiseSampler.seeded(25)
    m = sampling._TRIAL_STEPS
    count = 40000

    # when
    outcomes = sampling._exp_minus_one_trials(sampler._draw_words, np.zeros((count, 1), dtype=np.int64))

    # then: P(stopping step K is odd | K > m), from P(K > k | K > m) = m! / k!
    expected = sum(
        math.factorial(m) / math.factorial(k - 1) - math.factorial(m) / math.factorial(k)
        for k in range(m + 1, m + 40, 2)
    )
    assert not outcomes[:, -1].any()
    assert stats.binomtest(int(outcomes[:, 0].sum()), count, expected).pvalue > 0.001


def test_exp_minus_one_trials_are_exact():
    # The table entries and the continuation together give exactly exp(-1).
    m = sampling._TRIAL_STEPS
    continuation = sum(
        math.factorial(m) / math.factorial(k - 1) - math.factorial(m) / math.factorial(k)
        for k in range(m + 1, m + 40, 2)
    )

    success = (sampling._TRIAL_OUTCOMES[1:].sum() + continuation) / sampling._TRIAL_RANGE

    assert success == pytest.approx(math.exp(-1), rel=1e-12)


def test_uniform_below_redraws_partial_period():
    # given: 2**64 mod 3 = 1, so the word 2**64 - 1 lies in the partial period of w mod 3
    words = iter([2**64 - 1, 5])
    calls = []

    def draw_words(count: int) -> np.ndarray:
        calls.append(count)
        return np.array([next(words) for _ in range(count)], dtype=np.uint64)

    # when
    draw = sampling._uniform_below(draw_words, np.array([3], dtype=np.uint64))

    # then: 2**64 - 1 is redrawn, and 5 mod 3 is kept
    assert calls == [1, 1]
    assert draw.tolist() == [2]


def test_uniform_below_keeps_full_period_word():
    # given: 2**64 - 2 ends the last full period of w mod 3, so it is kept
    def draw_words(count: int) -> np.ndarray:
        return np.full(count, 2**64 - 2, dtype=np.uint64)

    draw = sampling._uniform_below(draw_words, np.array([3], dtype=np.uint64))

    assert draw.tolist() == [(2**64 - 2) % 3]


def test_scale_ratios_match_scale_ratio():
    rng = np.random.default_rng(26)
    ratios = np.concatenate([
        np.exp(rng.uniform(-40, 40, 500)),
        [2.75, 1638.4, 2.0**20, 2.0**32, 2.0**32 - 0.5, 2.0**52 - 1, 5e-324],
    ])

    numerators, denominators, vectorised = sampling._scale_ratios(ratios)

    for t, numerator, denominator, fits in zip(ratios, numerators, denominators, vectorised):
        expected_numerator, expected_denominator = scale_ratio(float(t))
        expected_fits = expected_numerator < 2**52 and expected_denominator < 2**63
        assert bool(fits) == expected_fits, t
        if fits:
            assert (int(numerator), int(denominator)) == (expected_numerator, expected_denominator), t


def test_per_lane_scales_output_on_grid():
    sampler = NoiseSampler.seeded(27)
    scales = np.linspace(0.01, 3.0, 300)
    values = np.linspace(-1.0, 1.0, 300)

    noisy = sampler.add_laplace(values, scales)

    granularities = np.array([default_granularity(float(scale)) for scale in scales])
    indices = noisy / granularities
    assert np.all(indices == np.round(indices))


def test_mixed_python_integer_lanes_on_grid():
    # given: one lane per scale, half of them with t = 2**60, above the uint64 limit
    sampler = NoiseSampler.seeded(28)
    granularity = 2.0**-20
    scales = np.tile([1.0, 2.0**40], 2000)

    # when
    noise = sampler.laplace(scales, granularity=granularity)

    # then: on the grid, with the variance 2 * scale**2 of continuous Laplace per group
    assert np.all(noise / granularity == np.round(noise / granularity))
    assert abs(noise[0::2].var() / 2.0 - 1) < 0.15
    assert abs(noise[1::2].var() / (2.0 * 2.0**80) - 1) < 0.15


def test_huge_numerator_draws_python_integers():
    sampler = NoiseSampler.seeded(29)
    numerator = 3 * 2**70

    draws = [sampler.discrete_laplace(numerator) for _ in range(21)]

    assert all(isinstance(draw, int) for draw in draws)
    # |Z| is below t / 400 with probability about 1/400, so the median is far beyond int64.
    assert sorted(abs(draw) for draw in draws)[10] > 2**63


def test_overflow_guard_rejects_wide_algorithm_1_step(monkeypatch):
    # given: the uint64 limit lifted, so t * k for k = 5 exceeds 64 bits
    monkeypatch.setattr(sampling, "_VECTOR_NUMERATOR_LIMIT", 2**64)
    sampler = NoiseSampler.seeded(30)

    with pytest.raises(OverflowError, match="overflows uint64"):
        sampler.discrete_laplace(2**63 - 1)


def test_overflow_guard_rejects_wide_geometric_sum():
    # given: t = 2**60, so t * k fits 64 bits for the first 11 Algorithm 1 steps, but
    # U + t * V may reach 2**63 once V >= 7. A pass has V >= 7 with probability exp(-7),
    # so about 9000 passes all stay below it with probability about 3e-4.
    sampler = NoiseSampler.seeded(31)

    with pytest.raises(OverflowError, match="overflows int64"):
        sampling._draw_discrete_laplace_pool(sampler._draw_words, 2**60, 1, 5000)


def test_seeded_per_lane_draws_are_reproducible():
    scales = np.linspace(0.1, 2.0, 50)

    first = NoiseSampler.seeded(32).laplace(scales)
    second = NoiseSampler.seeded(32).laplace(scales)

    assert np.array_equal(first, second)


def test_discrete_laplace_rejects_non_positive_numerator():
    with pytest.raises(ValueError, match="at least 1"):
        NoiseSampler.seeded(0).discrete_laplace(0, 1)
