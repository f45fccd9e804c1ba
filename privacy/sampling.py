"""Exact discrete Laplace noise on a power-of-two grid.

Textbook Laplace sampling in floating point (``-scale * sign(U) * log(1 - 2|U|)``)
leaks the noised value through the low bits of its output, because the set of floats
that ``value + noise`` can reach depends on ``value`` (Mironov 2012, "On significance
of the least significant bits for differential privacy"). This module never computes
noise in floating point:

1. the value is snapped to a grid of step ``granularity = 2**-g``, giving an integer
   ``n = floor(value / granularity + 1/2)``;
2. an integer ``Z`` is drawn from the discrete Laplace distribution
   ``P(Z = z) ∝ exp(-|z| / t)`` with ``t = scale / granularity`` (rounded up to 32
   significant bits, which only adds noise), exactly, with integer arithmetic only
   (Canonne, Kamath, Steinke 2020, "The discrete Gaussian for differential privacy",
   Algorithm 1 for Bernoulli(exp(-gamma)) and Algorithm 2 for the discrete Laplace);
3. the output is ``(n + Z) * granularity``, a grid point; every grid point can be
   reached from every input, so the output's bits carry nothing beyond ``n + Z``.

Privacy of one coordinate: if two inputs' snapped values differ by ``d`` grid steps, the
output distributions differ by a factor of at most ``exp(d / t)``. So sensitivity and
scale keep their usual meaning in grid units, and ``epsilon = sensitivity / scale`` when
the sensitivity is a multiple of the granularity. Snapping moves each coordinate by
less than half a step. Callers that noise a vector whose sensitivity is not a multiple
of the granularity must add one step per coordinate to the L1 sensitivity, which is why
the mechanisms choose the granularity from the sensitivity.

Randomness comes from ``secrets`` in production (``NoiseSampler.secure()``) and from a
seeded ``random.Random`` only in tests and evaluation (``NoiseSampler.seeded(seed)``).
A secure sampler may be shared by threads and survives forks: each thread of each
process reads its own buffer of random bits.
"""

import math
import os
import random
import secrets
import threading
from collections.abc import Sequence

import numpy as np

# Bits of resolution of the default grid below the scale: the granularity is the
# largest power of two <= scale / 2**20, so t = scale / granularity lies in
# [2**20, 2**21). The sampler's expected work does not depend on t, because CKS20
# Algorithm 2 accepts with probability about 1 - 1/e whatever t is. So a fine grid
# costs nothing, and it keeps the discrete noise within one part in a million of
# continuous Laplace.
DEFAULT_GRID_BITS = 20

# Grid values n + Z are converted to float64 exactly while |n + Z| < 2**53; larger
# integers are rounded to the nearest float, which is post-processing of n + Z and so
# costs no privacy, but snapping itself needs value / granularity below this bound.
_MAX_GRID_INDEX = 2**52

_REFILL_BYTES = 512
# Significant bits kept of each discrete Laplace scale t (see scale_ratio).
_SCALE_RATIO_BITS = 32


def default_granularity(scale: float) -> float:
    """Return the largest power of two <= scale / 2**DEFAULT_GRID_BITS."""
    _check_scale(scale)
    _, exponent = math.frexp(scale)  # scale = mantissa * 2**exponent, mantissa in [0.5, 1)
    return math.ldexp(1.0, exponent - 1 - DEFAULT_GRID_BITS)


def power_of_two_at_most(value: float) -> float:
    """Return the largest power of two <= value, for a finite value > 0."""
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"value must be finite and greater than 0; got {value}")
    _, exponent = math.frexp(value)
    return math.ldexp(1.0, exponent - 1)


def scale_ratio(t: float) -> tuple[int, int]:
    """Return t rounded up to numerator / denominator with a numerator of about 32 bits.

    Rounding up only adds noise, at most a relative 2**-31 of it, so every privacy bound
    computed from t still holds. The short numerator keeps each of the sampler's
    uniform draws within one 64-bit word of random bits.
    """
    _check_scale(t)
    _, exponent = math.frexp(t)  # t = mantissa * 2**exponent, mantissa in [0.5, 1)
    shift = _SCALE_RATIO_BITS - exponent
    if shift <= 0:
        return math.ceil(t), 1
    # ldexp by a power of two is exact, so the ceiling is taken of the exact t * 2**shift.
    return math.ceil(math.ldexp(t, shift)), 1 << shift


def snap_to_grid(values, granularity) -> np.ndarray:
    """Return the grid indices floor(value / granularity + 1/2) as a float64 array.

    Rounding half up is monotone and commutes with integer shifts, so two values that
    differ by at most d grid steps (d an integer) snap to indices that differ by at most
    d: a sensitivity that is a multiple of the granularity is not increased.
    """
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("values must be finite; got NaN or infinity")
    # Division by a power of two is exact, and + 0.5 is exact below 2**52.
    indices = np.floor(values / granularity + 0.5)
    if np.any(np.abs(indices) >= _MAX_GRID_INDEX):
        raise ValueError(
            "values are too large for the noise grid (|value| / granularity must stay "
            f"below 2**52); got max |value| {float(np.max(np.abs(values)))}"
        )
    return indices


class _SecureBits:
    """Cryptographically secure random bits from ``secrets``, read in blocks.

    One ``secrets.token_bytes`` call per 4096 bits replaces one system call per draw.
    The block is dropped after a fork, because a child must never reuse its parent's
    bits. An instance is not thread-safe: ``NoiseSampler`` keeps one per thread.
    """

    def __init__(self):
        self._word = 0
        self._word_bits = 0
        self._words: list[int] = []
        self._pid = os.getpid()

    def check_fork(self) -> None:
        if os.getpid() != self._pid:
            self._word = 0
            self._word_bits = 0
            self._words = []
            self._pid = os.getpid()

    def getrandbits(self, k: int) -> int:
        if k <= self._word_bits:
            value = self._word & ((1 << k) - 1)
            self._word >>= k
            self._word_bits -= k
            return value
        # Spend the rest of the current word, then whole 64-bit words.
        value = self._word
        have = self._word_bits
        while True:
            if not self._words:
                block = secrets.token_bytes(_REFILL_BYTES)
                self._words = np.frombuffer(block, dtype=np.uint64).tolist()
            word = self._words.pop()
            need = k - have
            if need <= 64:
                value |= (word & ((1 << need) - 1)) << have
                self._word = word >> need
                self._word_bits = 64 - need
                return value
            value |= word << have
            have += 64


def _draw_discrete_laplace(getrandbits, t: int, s: int) -> int:
    """Draw Z with P(Z = z) ∝ exp(-|z| * s / t) from the random bits of ``getrandbits``.

    Implements CKS20 Algorithm 2 for the discrete Laplace with scale t / s, with its
    Bernoulli(exp(-gamma)) steps done by CKS20 Algorithm 1 on rationals, so no step
    rounds. Uniform draws on {0, ..., n - 1} are inlined as rejection from
    ``n.bit_length()`` random bits because this loop is the serving path's hot spot.
    """
    t_bits = t.bit_length()
    while True:
        u = getrandbits(t_bits)
        while u >= t:
            u = getrandbits(t_bits)

        # D ~ Bernoulli(exp(-u / t)) by Algorithm 1: count the successes of
        # Bernoulli(gamma / K) = [uniform(t * K) < u]; D = 1 iff K ends odd.
        k = 1
        n = t
        n_bits = t_bits
        while True:
            r = getrandbits(n_bits)
            while r >= n:
                r = getrandbits(n_bits)
            if r >= u:
                break
            k += 1
            n = t * k
            n_bits = n.bit_length()
        if not k & 1:
            continue

        # V ~ Geometric(1 - 1/e): the number of Bernoulli(exp(-1)) successes before
        # the first failure. Each Bernoulli(exp(-1)) is Algorithm 1 with gamma = 1,
        # whose first Bernoulli(1/1) has probability 1, so K starts at 2. A draw
        # uniform(K) == 0 is Bernoulli(1/K).
        v = 0
        while True:
            k = 2
            while True:
                k_bits = k.bit_length()
                r = getrandbits(k_bits)
                while r >= k:
                    r = getrandbits(k_bits)
                if r != 0:
                    break
                k += 1
            if not k & 1:
                break
            v += 1

        x = u + t * v  # X ~ P(X = x) ∝ exp(-x / t) on {0, 1, ...}
        y = x // s  # Y ~ P(Y = y) ∝ exp(-y * s / t)
        negative = getrandbits(1)
        if negative and y == 0:
            continue  # rejected so that Z = 0 is not produced by both signs
        return -y if negative else y


class NoiseSampler:
    """A source of exact discrete Laplace noise; construct with ``secure()`` or ``seeded()``."""

    def __init__(self, source_factory, *, is_secure: bool):
        self._source_factory = source_factory
        self._local = threading.local()
        self.is_secure = is_secure

    @classmethod
    def secure(cls) -> "NoiseSampler":
        """Return a sampler that draws from ``secrets``, safe to share between threads."""
        return cls(_SecureBits, is_secure=True)

    @classmethod
    def seeded(cls, seed: int) -> "NoiseSampler":
        """Return a reproducible sampler for tests and evaluation; never for serving.

        Its draws are reproducible only when one thread uses it.
        """
        source = random.Random(seed)
        return cls(lambda: source, is_secure=False)

    def _getrandbits(self):
        source = getattr(self._local, "source", None)
        if source is None:
            source = self._local.source = self._source_factory()
        if isinstance(source, _SecureBits):
            source.check_fork()
        return source.getrandbits

    def discrete_laplace(self, numerator: int, denominator: int = 1) -> int:
        """Draw Z with P(Z = z) ∝ exp(-|z| * denominator / numerator), exactly.

        ``numerator`` and ``denominator`` are positive integers whose ratio is the
        scale t of the discrete Laplace distribution.
        """
        if numerator < 1 or denominator < 1:
            raise ValueError(f"numerator and denominator must be at least 1; got {numerator} and {denominator}")
        return _draw_discrete_laplace(self._getrandbits(), numerator, denominator)

    def _sample_grid_indices(self, scales: np.ndarray, granularities: np.ndarray) -> np.ndarray:
        getrandbits = self._getrandbits()
        # t = scale / granularity is exact in float64 (division by a power of two).
        ratios = scales / granularities
        if ratios.shape[0] and np.all(ratios == ratios[0]):
            numerator, denominator = scale_ratio(float(ratios[0]))
            draws = [_draw_discrete_laplace(getrandbits, numerator, denominator) for _ in range(ratios.shape[0])]
        else:
            draws = [_draw_discrete_laplace(getrandbits, *scale_ratio(float(t))) for t in ratios]
        return np.array(draws, dtype=np.float64)

    def laplace(
        self, scale, size: int | None = None, *, granularity=None
    ) -> np.ndarray:
        """Draw discrete Laplace noise on the grid, as float64 multiples of the granularity.

        ``scale`` is one positive finite float or an array of per-coordinate scales;
        ``size`` is the number of draws when ``scale`` is one number. ``granularity``
        (a power of two, one or per coordinate) defaults to ``default_granularity(scale)``.
        """
        scales, granularities = self._broadcast(scale, size, granularity)
        return self._sample_grid_indices(scales, granularities) * granularities

    def add_laplace(self, values, scale, *, granularity=None) -> np.ndarray:
        """Snap ``values`` to the grid and add discrete Laplace noise of ``scale``.

        Returns ``(n + Z) * granularity`` for each coordinate, where ``n`` is the snapped
        value (see ``snap_to_grid``). Per-coordinate scales and granularities are allowed.
        """
        values = np.asarray(values, dtype=np.float64)
        flat = values.reshape(-1)
        scales, granularities = self._broadcast(scale, flat.shape[0], granularity)
        indices = snap_to_grid(flat, granularities)
        noisy = (indices + self._sample_grid_indices(scales, granularities)) * granularities
        return noisy.reshape(values.shape)

    @staticmethod
    def _broadcast(scale, size, granularity) -> tuple[np.ndarray, np.ndarray]:
        if np.ndim(scale) == 0:
            scale = float(scale)
            _check_scale(scale)
            if size is None:
                size = 1
            scales = np.full(int(size), scale, dtype=np.float64)
        else:
            scales = np.asarray(scale, dtype=np.float64).reshape(-1)
            if size is not None and int(size) != scales.shape[0]:
                raise ValueError(
                    f"size must match the number of scales; got size {size} and {scales.shape[0]} scales"
                )
            for value in scales:
                _check_scale(float(value))

        if granularity is None:
            granularities = np.array([default_granularity(float(b)) for b in scales], dtype=np.float64)
        else:
            granularities = np.broadcast_to(np.asarray(granularity, dtype=np.float64), scales.shape).copy()
            for value in np.unique(granularities):
                _check_granularity(float(value))
        return scales, granularities


def _check_scale(scale: float) -> None:
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be finite and greater than 0; got {scale}")


def _check_granularity(granularity: float) -> None:
    if not (math.isfinite(granularity) and granularity > 0):
        raise ValueError(f"granularity must be a finite power of two; got {granularity}")
    mantissa, _ = math.frexp(granularity)
    if mantissa != 0.5:
        raise ValueError(f"granularity must be a power of two; got {granularity}")


def discrete_laplace_pmf(z: Sequence[int] | np.ndarray, t: float) -> np.ndarray:
    """Return P(Z = z) for the discrete Laplace with scale t: tanh(1/(2t)) * exp(-|z|/t)."""
    z = np.asarray(z, dtype=np.float64)
    return math.tanh(1.0 / (2.0 * t)) * np.exp(-np.abs(z) / t)
