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

Step 2 runs on numpy arrays in uint64 and int64 arithmetic, with checks that raise
OverflowError rather than let an integer wrap. When all coordinates have the same t,
they share one batch of Algorithm 2 passes. Otherwise each coordinate runs its own
passes, all in the same arrays. A coordinate whose t has a numerator of 2**52 or more
(or a denominator of 2**63 or more) is drawn on its own with Python integers instead.

Randomness comes from ``secrets`` in production (``NoiseSampler.secure()``) and from a
seeded ``random.Random`` only in tests and evaluation (``NoiseSampler.seeded(seed)``).
A secure sampler keeps no random bits between calls, because every batch of uniform
draws reads fresh bytes from ``secrets.token_bytes``. So it may be shared by threads,
and a forked child never repeats its parent's bits.
"""

import math
import operator
import random
import secrets
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

# Significant bits kept of each discrete Laplace scale t (see scale_ratio).
_SCALE_RATIO_BITS = 32

# Numerators t below this bound are drawn with uint64 arithmetic. Then t * k in
# Algorithm 1 stays below 2**64 unless k >= 2**12, and U + t * V in Algorithm 2 stays
# below 2**63 unless V >= 2**11 - 1. Either has probability below exp(-2000), and the
# draws check both and raise OverflowError rather than wrap. Larger numerators are
# drawn with Python integers.
_VECTOR_NUMERATOR_LIMIT = 2**52
_WORD_MAX = np.uint64(2**64 - 1)

# A Bernoulli(exp(-1)) trial decides its first m = 8 steps from one digit below 8!, and
# passes all of them with probability 1/8!. Three digits and a sign bit fit one word:
# 2 * (8!)**3 < 2**48, so the word is redrawn with probability below 2**-16.
_TRIAL_STEPS = 8
_TRIAL_RANGE = math.factorial(_TRIAL_STEPS)
_TRIALS_PER_WORD = 3
_TRIAL_WORD_RANGE = _TRIAL_RANGE**_TRIALS_PER_WORD
_TRIAL_DIGIT_WEIGHTS = np.array([_TRIAL_RANGE**j for j in range(_TRIALS_PER_WORD + 1)], dtype=np.int64)


# Each Algorithm 2 pass draws this many Algorithm 1 steps and trial words (three
# Bernoulli(exp(-1)) trials each) up front. It needs more steps with probability 1/6!
# on average over U, and more trials with probability exp(-6). A continuation costs
# about as much as a hundred more passes (tens of numpy calls), so most calls of a
# few hundred passes need none.
_ALGORITHM_1_FIRST_STEPS = 5
_FIRST_TRIAL_WORDS = 2
# Continuations run on few passes, so they draw wide blocks: 6 more Algorithm 1 steps
# or 9 more trials per pass.
_ALGORITHM_1_BLOCK = 6
_GEOMETRIC_BLOCK_WORDS = 3


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


def _scale_ratios(ratios: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``scale_ratio(t)`` for each t as uint64 numerators and denominators.

    The third array marks the lanes whose ratio fits the vectorised sampler: t finite and
    above 0, numerator below ``_VECTOR_NUMERATOR_LIMIT`` and denominator below 2**63.
    The other lanes contain 0 in both arrays and must go through ``scale_ratio``.
    """
    valid = np.isfinite(ratios) & (ratios > 0)
    _, exponents = np.frexp(ratios)
    shifts = np.where(valid, _SCALE_RATIO_BITS - exponents, 0)
    # As in scale_ratio, ldexp by a power of two is exact, so the ceiling is exact.
    numerators = np.ceil(np.ldexp(ratios, np.maximum(shifts, 0)))
    fits = valid & (numerators < _VECTOR_NUMERATOR_LIMIT) & (shifts < 63)
    numerators = np.where(fits, numerators, 0.0).astype(np.uint64)
    denominators = np.left_shift(np.uint64(1), np.where(fits, np.maximum(shifts, 0), 0).astype(np.uint64))
    return numerators, np.where(fits, denominators, np.uint64(0)), fits


def _uniform_below(draw_words, bounds: np.ndarray) -> np.ndarray:
    """Draw one integer uniformly from {0, ..., n - 1} for each n in ``bounds`` (uint64, n >= 1).

    A random 64-bit word w is kept when w < 2**64 - (2**64 mod n). The kept words cover a
    whole number of periods of w mod n, so w mod n is exactly uniform. Each word is
    redrawn with probability (2**64 mod n) / 2**64 < n / 2**64.
    """
    words = draw_words(bounds.size).reshape(bounds.shape)
    # Words below 2**64 - n are always kept, so the exact limit is computed only for the
    # few words at or above it.
    suspects = (words > _WORD_MAX - bounds).ravel().nonzero()[0]
    if suspects.size:
        words = words.copy()
        flat_words = words.reshape(-1)
        suspect_bounds = bounds.reshape(-1)[suspects]
        # 2**64 mod n, computed without 2**64: ((2**64 - 1) mod n + 1) mod n.
        limits = _WORD_MAX - (_WORD_MAX % suspect_bounds + 1) % suspect_bounds
        rejected = flat_words[suspects] > limits
        suspects, limits = suspects[rejected], limits[rejected]
        while suspects.size:
            flat_words[suspects] = draw_words(suspects.size)
            rejected = flat_words[suspects] > limits
            suspects, limits = suspects[rejected], limits[rejected]
    return words % bounds


def _check_algorithm_1_bound(largest_t: int, last_step: int) -> None:
    # Python integers, so the check itself cannot wrap.
    largest = largest_t * last_step
    if largest >= 2**64:
        raise OverflowError(
            f"discrete Laplace draw failed because Algorithm 1 needs t * k = {largest}, which "
            "overflows uint64. Numerators drawn in uint64 must stay below _VECTOR_NUMERATOR_LIMIT."
        )


def _first_false(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the column of each row's first False, and a mask of the rows whose only False is the last.

    The last column of ``rows`` must be all False, so that every row has a False. This
    costs less than ``rows.all(axis=1)``.
    """
    # argmin of a boolean row is the column of its first False.
    columns = rows.argmin(axis=1)
    return columns, columns == rows.shape[1] - 1


def _less_than_rows(draws: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Return draws < u[:, None] with an all-False last column appended, for ``_first_false``."""
    below = np.zeros((draws.shape[0], draws.shape[1] + 1), dtype=bool)
    np.less(draws, u[:, None], out=below[:, :-1])
    return below


def _bernoulli_exp_ratio(draw_words, u: np.ndarray, t: np.ndarray, first_step: int) -> np.ndarray:
    """Finish CKS20 Algorithm 1 for D ~ Bernoulli(exp(-u / t)), from step ``first_step`` on.

    Every lane must have passed steps 1 to first_step - 1, and ``u`` and ``t`` are uint64
    with 0 <= u < t. Algorithm 1 draws A_k ~ Bernoulli(u / (t * k))
    for k = 1, 2, ... up to the first A_k = 0, and D = 1 iff that k is odd. A_k = 1 iff
    a uniform draw below t * k is below u. Steps come in blocks of ``_ALGORITHM_1_BLOCK``,
    and the draws after a lane's stopping step are discarded unread, which leaves the
    distribution unchanged.

    Raises OverflowError if some t * k reaches 2**64. For t < 2**52 that needs k >= 2**12,
    which has probability below 1 / 4095!.
    """
    keep = np.empty(u.size, dtype=bool)
    lanes = np.arange(u.size)
    while lanes.size:
        last_step = first_step + _ALGORITHM_1_BLOCK - 1
        _check_algorithm_1_bound(int(np.maximum.reduce(t)), last_step)
        steps = np.arange(first_step, last_step + 1, dtype=np.uint64)
        below = _less_than_rows(_uniform_below(draw_words, t[:, None] * steps), u)
        stop_columns, running = _first_false(below)
        # Lanes still running get their value in a later block.
        keep[lanes] = ((first_step + stop_columns) & 1) == 1
        lanes, t, u = lanes[running], t[running], u[running]
        first_step = last_step + 1
    return keep


def _trial_outcome_table() -> np.ndarray:
    # Entry d is the outcome of a Bernoulli(exp(-1)) trial whose digit is d, as
    # _exp_minus_one_trials explains. Entry 0 is a placeholder for the trials that continue.
    digits = np.arange(_TRIAL_RANGE)
    thresholds = np.array([_TRIAL_RANGE // math.factorial(k) for k in range(2, _TRIAL_STEPS + 1)])
    passed_steps = (digits[:, None] < thresholds).sum(axis=1)  # steps 2..m passed
    return (passed_steps & 1) == 1  # the stopping step passed_steps + 2 is odd


_TRIAL_OUTCOMES = _trial_outcome_table()


def _base_trial_digits(words: np.ndarray) -> np.ndarray:
    """Split words of shape (lanes, n) into base-m! digits of shape (lanes, n, 4), least significant first.

    The words must be below 2 * (m!)**3, so the fourth digit is 0 or 1.
    """
    quotients = words.view(np.int64)[:, :, None] // _TRIAL_DIGIT_WEIGHTS
    return quotients - (quotients // _TRIAL_RANGE) * _TRIAL_RANGE


def _exp_minus_one_trials(draw_words, digits: np.ndarray) -> np.ndarray:
    """Draw one Bernoulli(exp(-1)) value per digit by CKS20 Algorithm 1 with gamma = 1.

    ``digits`` is an int64 array of shape (lanes, n) with independent values uniform below
    m!. The result is a boolean array of shape (lanes, n + 1) whose last column is False,
    for ``_first_false``. With gamma = 1, step k passes with probability 1 / k (step 1
    always), so the stopping step K has P(K > k) = 1 / k!, and the value is 1 iff K is
    odd. For a digit W uniform below m!, the nested events {W < m! / k!} have exactly
    these probabilities for k <= m, so K = 2 + #{k in 2..m : W < m! / k!} (the table
    ``_TRIAL_OUTCOMES``) unless W = 0. A trial with W = 0 has passed step m, and its
    steps m + 1, m + 2, ... are drawn one at a time.
    """
    outcomes = np.zeros((digits.shape[0], digits.shape[1] + 1), dtype=bool)
    np.take(_TRIAL_OUTCOMES, digits, out=outcomes[:, :-1], mode="clip")  # digits < m!
    if digits.min() == 0:
        rows, columns = np.nonzero(digits == 0)
        outcomes[rows, columns] = _finish_exp_minus_one_trials(draw_words, rows.size)
    return outcomes


def _finish_exp_minus_one_trials(draw_words, count: int) -> np.ndarray:
    """Continue ``count`` Algorithm 1 trials with gamma = 1 that passed steps 1 to m."""
    stops = np.empty(count, dtype=np.int64)
    lanes = np.arange(count)
    step = _TRIAL_STEPS + 1
    while lanes.size:
        # Step k passes with probability 1 / k: a uniform draw below k equals 0.
        passed = _uniform_below(draw_words, np.full(lanes.size, step, dtype=np.uint64)) == 0
        stops[lanes[~passed]] = step
        lanes = lanes[passed]
        step += 1
    return (stops & 1) == 1


def _geometric_exp_minus_one(draw_words, count: int) -> np.ndarray:
    """Draw V with P(V = v) = (1 - 1/e) * exp(-v) for ``count`` lanes, as uint64.

    V counts the Bernoulli(exp(-1)) successes before the first failure. Trials come in
    blocks of ``3 * _GEOMETRIC_BLOCK_WORDS`` per lane, and the trials after a lane's first
    failure are discarded unread.
    """
    counts = np.zeros(count, dtype=np.uint64)
    lanes = np.arange(count)
    bounds = np.full((count, _GEOMETRIC_BLOCK_WORDS), _TRIAL_WORD_RANGE, dtype=np.uint64)
    while lanes.size:
        words = _uniform_below(draw_words, bounds[: lanes.size])
        digits = _base_trial_digits(words)[:, :, :_TRIALS_PER_WORD].reshape(lanes.size, -1)
        successes, unfailed = _first_false(_exp_minus_one_trials(draw_words, digits))
        counts[lanes] += successes.astype(np.uint64)
        lanes = lanes[unfailed]
    return counts


def _pass_bounds(t: np.ndarray) -> np.ndarray:
    """Return the bounds of the uniform draws that start one Algorithm 2 pass per lane.

    Columns: U below t, Algorithm 1 steps k = 1, 2, ... below t * k, then the trial
    words. The first trial word is drawn below 2 * (m!)**3, and its top base-m! digit is
    the sign, independent of the three trial digits below it.
    """
    steps = _ALGORITHM_1_FIRST_STEPS
    bounds = np.empty((t.size, 1 + steps + _FIRST_TRIAL_WORDS), dtype=np.uint64)
    bounds[:, 0] = t
    bounds[:, 1 : 1 + steps] = t[:, None] * np.arange(1, steps + 1, dtype=np.uint64)
    bounds[:, 1 + steps] = 2 * _TRIAL_WORD_RANGE
    bounds[:, 2 + steps :] = _TRIAL_WORD_RANGE
    return bounds


def _discrete_laplace_passes(draw_words, bounds: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run one pass of CKS20 Algorithm 2 per lane, and return the int64 draws and an accepted mask.

    ``bounds`` comes from ``_pass_bounds`` for uint64 t with 1 <= t < ``_VECTOR_NUMERATOR_LIMIT``,
    and ``s`` is a uint64 array with 1 <= s < 2**63, for a scale t / s per lane. An
    accepted lane's draw follows P(Z = z) ∝ exp(-|z| * s / t); a rejected lane must be
    drawn again.

    Raises OverflowError if U + t * V could reach 2**63. For t < 2**52 that needs
    V >= 2**11 - 1, which has probability below exp(-2047).
    """
    steps = _ALGORITHM_1_FIRST_STEPS
    draws = _uniform_below(draw_words, bounds)
    t = bounds[:, 0]
    u = draws[:, 0]

    # D ~ Bernoulli(exp(-U / t)) by Algorithm 1: D = 1 iff its stopping step is odd.
    stop_columns, running = _first_false(_less_than_rows(draws[:, 1 : 1 + steps], u))
    keep = (stop_columns & 1) == 0  # the stopping step is stop_column + 1
    continuing = running.nonzero()[0]
    if continuing.size:
        keep[continuing] = _bernoulli_exp_ratio(draw_words, u[continuing], t[continuing], steps + 1)

    # V ~ Geometric(1 - 1/e), the Bernoulli(exp(-1)) successes before the first failure.
    digits = _base_trial_digits(draws[:, 1 + steps :])
    positive = digits[:, 0, _TRIALS_PER_WORD] == 0
    trial_digits = digits[:, :, :_TRIALS_PER_WORD].reshape(t.size, -1)
    v, unfailed = _first_false(_exp_minus_one_trials(draw_words, trial_digits))
    v = v.astype(np.uint64)
    continuing = unfailed.nonzero()[0]
    if continuing.size:
        v[continuing] += _geometric_exp_minus_one(draw_words, continuing.size)

    # U + t * V <= t * (V + 1) - 1, checked with Python integers so the check cannot wrap.
    largest = int(np.maximum.reduce(t)) * (int(np.maximum.reduce(v)) + 1) - 1
    if largest >= 2**63:
        raise OverflowError(
            f"discrete Laplace draw failed because U + t * V may reach {largest}, which "
            "overflows int64. Numerators drawn in uint64 must stay below _VECTOR_NUMERATOR_LIMIT."
        )
    x = u + t * v  # P(X = x) ∝ exp(-x / t) on {0, 1, ...} among kept lanes
    y = (x // s).view(np.int64)  # P(Y = y) ∝ exp(-y * s / t), and y < 2**63 by the check above

    # Z = 0 is rejected for the negative sign, so that both signs do not produce it.
    accepted = keep & (positive | (y != 0))
    return np.where(positive, y, -y), accepted


def _acceptance_bound(s_over_t: float) -> float:
    """Return a lower bound on the probability that an Algorithm 2 pass is accepted.

    D = 1 with probability E[exp(-U / t)] >= 1 - 1/e, and then the pass is rejected only
    for a negative sign with Y = 0, which has probability (1 - exp(-s / t)) / 2. This
    bound only sizes batches of passes. It decides no draw, so floating point is
    harmless here.
    """
    return (1 - math.exp(-1)) * (1 + math.exp(-s_over_t)) / 2


def _draw_discrete_laplace_pool(draw_words, t: int, s: int, count: int) -> np.ndarray:
    """Draw ``count`` values of Z with P(Z = z) ∝ exp(-|z| * s / t), as int64.

    ``t`` and ``s`` are integers with 1 <= t < ``_VECTOR_NUMERATOR_LIMIT`` and
    1 <= s < 2**63. Each round runs a batch of independent Algorithm 2 passes and keeps
    the accepted ones in pass order, up to the number still needed. Which passes are
    kept depends only on the accept flags, so the kept draws are independent and each
    has the distribution of an accepted pass. A batch of (need + 1.5 * sqrt(need)) / p
    passes, with p from ``_acceptance_bound``, falls short with probability below about 1%.
    """
    _check_algorithm_1_bound(t, _ALGORITHM_1_FIRST_STEPS)
    accept_rate = _acceptance_bound(s / t)
    bounds = _pass_bounds(np.array([t], dtype=np.uint64))
    draws = np.empty(count, dtype=np.int64)
    filled = 0
    while filled < count:
        need = count - filled
        passes = math.ceil((need + 1.5 * math.sqrt(need)) / accept_rate)
        z, accepted = _discrete_laplace_passes(
            draw_words, np.repeat(bounds, passes, axis=0), np.full(passes, s, dtype=np.uint64)
        )
        new_draws = z[accepted][:need]
        draws[filled : filled + new_draws.size] = new_draws
        filled += new_draws.size
    return draws


def _draw_discrete_laplace_lanes(draw_words, t: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Draw Z_i with P(Z_i = z) ∝ exp(-|z| * s_i / t_i) for each lane i, as int64.

    ``t`` and ``s`` are uint64 arrays with 1 <= t_i < ``_VECTOR_NUMERATOR_LIMIT`` and
    1 <= s_i < 2**63. Each round runs the same number of independent Algorithm 2 passes
    for every pending lane, about 2.5 / p of them, so a lane stays pending with
    probability below 9%. A lane keeps its first accepted pass. Which pass is kept
    depends only on the accept flags, so the kept draw has the distribution of an
    accepted pass.
    """
    if t.size == 0:
        return np.empty(0, dtype=np.int64)
    _check_algorithm_1_bound(int(np.maximum.reduce(t)), _ALGORITHM_1_FIRST_STEPS)
    draws = np.empty(t.size, dtype=np.int64)
    pending = np.arange(t.size)
    while pending.size:
        lane_t, lane_s = t[pending], s[pending]
        lowest_rate = _acceptance_bound(float(np.maximum.reduce(lane_s / lane_t)))
        copies = math.ceil(2.5 / lowest_rate)
        z, accepted = _discrete_laplace_passes(
            draw_words, np.repeat(_pass_bounds(lane_t), copies, axis=0), np.repeat(lane_s, copies)
        )
        # A last column of True makes argmax find a True in every row.
        accepted_rows = np.ones((pending.size, copies + 1), dtype=bool)
        accepted_rows[:, :copies] = accepted.reshape(-1, copies)
        first_accepted = accepted_rows.argmax(axis=1)
        filled = first_accepted < copies
        draws[pending[filled]] = z.reshape(-1, copies)[filled, first_accepted[filled]]
        pending = pending[~filled]
    return draws


def _draw_discrete_laplace(getrandbits, t: int, s: int) -> int:
    """Draw Z with P(Z = z) ∝ exp(-|z| * s / t) from the random bits of ``getrandbits``.

    Implements CKS20 Algorithm 2 for the discrete Laplace with scale t / s, with its
    Bernoulli(exp(-gamma)) steps done by CKS20 Algorithm 1 on rationals, so no step
    rounds. This one-draw version works on Python integers of any size. The sampler uses
    it only where t >= ``_VECTOR_NUMERATOR_LIMIT`` or s >= 2**63, beyond the uint64
    arrays of ``_draw_discrete_laplace_pool`` and ``_draw_discrete_laplace_lanes``.
    Uniform draws on {0, ..., n - 1} are inlined as rejection from ``n.bit_length()``
    random bits.
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

    def __init__(self, random_bytes, getrandbits, *, is_secure: bool):
        # random_bytes(n) returns n random bytes, and getrandbits(k) a random k-bit integer.
        self._random_bytes = random_bytes
        self._getrandbits = getrandbits
        self.is_secure = is_secure

    @classmethod
    def secure(cls) -> "NoiseSampler":
        """Return a sampler that draws from ``secrets``, safe to share between threads and forks.

        It keeps no random bits between draws, so threads and forked processes never share
        or repeat them.
        """
        return cls(secrets.token_bytes, secrets.randbits, is_secure=True)

    @classmethod
    def seeded(cls, seed: int) -> "NoiseSampler":
        """Return a reproducible sampler for tests and evaluation; never for serving.

        Its draws are reproducible only when one thread uses it.
        """
        source = random.Random(seed)
        return cls(source.randbytes, source.getrandbits, is_secure=False)

    def _draw_words(self, count: int) -> np.ndarray:
        # Fresh bytes on every call, so no bits are kept for the next one.
        return np.frombuffer(self._random_bytes(8 * count), dtype=np.uint64)

    def discrete_laplace(self, numerator: int, denominator: int = 1) -> int:
        """Draw Z with P(Z = z) ∝ exp(-|z| * denominator / numerator), exactly.

        ``numerator`` and ``denominator`` are positive integers whose ratio is the
        scale t of the discrete Laplace distribution.
        """
        numerator = operator.index(numerator)
        denominator = operator.index(denominator)
        if numerator < 1 or denominator < 1:
            raise ValueError(f"numerator and denominator must be at least 1; got {numerator} and {denominator}")
        if numerator >= _VECTOR_NUMERATOR_LIMIT or denominator >= 2**63:
            return _draw_discrete_laplace(self._getrandbits, numerator, denominator)
        return int(_draw_discrete_laplace_pool(self._draw_words, numerator, denominator, 1)[0])

    def _sample_grid_indices(self, scales: np.ndarray, granularities: np.ndarray) -> np.ndarray:
        # t = scale / granularity is exact in float64 (division by a power of two).
        ratios = scales / granularities
        if ratios.size and np.all(ratios == ratios[0]):
            # One scale for all lanes, the common case, needs one scale_ratio call.
            numerator, denominator = scale_ratio(float(ratios[0]))
            if numerator < _VECTOR_NUMERATOR_LIMIT and denominator < 2**63:
                return _draw_discrete_laplace_pool(
                    self._draw_words, numerator, denominator, ratios.size
                ).astype(np.float64)
        numerators, denominators, vectorised = _scale_ratios(ratios)
        if vectorised.all():
            return _draw_discrete_laplace_lanes(self._draw_words, numerators, denominators).astype(np.float64)

        # Lanes beyond the 64-bit bounds use Python integers. scale_ratio runs on all of
        # them before any draw, so an invalid ratio raises before randomness is spent.
        large = np.flatnonzero(~vectorised)
        large_ratios = [scale_ratio(float(ratios[i])) for i in large]
        draws = np.empty(ratios.shape[0], dtype=np.float64)
        draws[vectorised] = _draw_discrete_laplace_lanes(
            self._draw_words, numerators[vectorised], denominators[vectorised]
        )
        for i, (numerator, denominator) in zip(large, large_ratios):
            # float() rounds draws beyond 2**53 to the nearest float64: post-processing.
            draws[i] = float(_draw_discrete_laplace(self._getrandbits, numerator, denominator))
        return draws

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
            invalid = np.flatnonzero(~(np.isfinite(scales) & (scales > 0)))
            if invalid.size:
                _check_scale(float(scales[invalid[0]]))

        if granularity is None:
            # default_granularity of each scale; frexp and ldexp are exact.
            _, exponents = np.frexp(scales)
            granularities = np.ldexp(1.0, exponents - 1 - DEFAULT_GRID_BITS)
        else:
            granularities = np.broadcast_to(np.asarray(granularity, dtype=np.float64), scales.shape).copy()
            mantissas, _ = np.frexp(granularities)
            invalid = np.flatnonzero(~(np.isfinite(granularities) & (granularities > 0) & (mantissas == 0.5)))
            if invalid.size:
                _check_granularity(float(granularities[invalid[0]]))
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
