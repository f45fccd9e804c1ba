import math
import threading

import numpy as np
import pytest
from scipy import stats

from privacy.sampling import (
    NoiseSampler,
    default_granularity,
    discrete_laplace_pmf,
    snap_to_grid,
)


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
    t = 2.75
    draws = np.array([sampler.discrete_laplace(11, 4) for _ in range(40000)])

    # when: bins |z| <= 12, with both tails pooled into the outermost bins
    support = np.arange(-12, 13)
    observed = np.array([np.sum(draws == z) for z in support], dtype=float)
    observed[0] += np.sum(draws < -12)
    observed[-1] += np.sum(draws > 12)
    expected = discrete_laplace_pmf(support, t) * draws.size
    tail = (1.0 - discrete_laplace_pmf(support, t).sum()) / 2 * draws.size
    expected[0] += tail
    expected[-1] += tail

    # then
    _, p_value = stats.chisquare(observed, expected)
    assert p_value > 0.001


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


def test_secure_sampler_drops_buffer_after_fork(monkeypatch):
    sampler = NoiseSampler.secure()
    sampler.laplace(1.0, 10)
    bits = sampler._local.source
    assert bits._word_bits > 0 or bits._words

    monkeypatch.setattr("privacy.sampling.os.getpid", lambda: -1)
    bits.check_fork()

    assert bits._word_bits == 0
    assert bits._words == []


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


def test_secure_sampler_gives_each_thread_its_own_bits():
    sampler = NoiseSampler.secure()
    sources = {}
    draws = {}

    def draw(name: str) -> None:
        draws[name] = sampler.laplace(1.0, 200)
        sources[name] = sampler._local.source

    threads = [threading.Thread(target=draw, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sources["a"] is not sources["b"]
    assert not np.array_equal(draws["a"], draws["b"])


def test_scale_ratio_rounds_up_to_short_numerator():
    from privacy.sampling import scale_ratio

    numerator, denominator = scale_ratio(1638.4)

    assert numerator / denominator >= 1638.4
    assert numerator / denominator - 1638.4 <= 1638.4 * 2.0**-31
    assert numerator.bit_length() <= 33
