"""Units of the privacy ledger and the budget windows.

The ledger counts epsilon in integer micro-epsilon so that sums are exact under any
concurrency. Every mechanism calibrates its noise to epsilon * (1 - CALIBRATION_MARGIN),
so its proven privacy loss is at most epsilon * (1 - 2**-40). Splitting epsilon between
the user vector and the scores adds float rounding of a relative 2**-52 at most. The
ledger charges ceil(epsilon * 10**6 * (1 - 2**-41)) micro-epsilon, which is still above
that loss. So it never under-charges, and a policy value such as 0.1 charges exactly
100000 micro-epsilon instead of 100001 (the float 0.1 is 0.1000000000000000055...).
"""

import math
from datetime import datetime, timedelta, timezone
from fractions import Fraction

MICRO = 1_000_000

# Relative amount by which every mechanism's proven privacy loss stays below the
# epsilon it is charged for; see the module docstring.
CALIBRATION_MARGIN = 2.0**-40
_ROUNDING_TOLERANCE = Fraction(1, 2**41)


def epsilon_to_micro(epsilon: float) -> int:
    """Convert a charged epsilon to integer micro-epsilon, rounding up.

    Returns ceil(epsilon * 10**6 * (1 - 2**-41)), computed exactly; 0 for epsilon 0.
    """
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise ValueError(f"epsilon to charge must be finite and at least 0; got {epsilon}")
    exact = Fraction(epsilon) * MICRO * (1 - _ROUNDING_TOLERANCE)
    return math.ceil(exact)


def budget_to_micro(budget: float) -> int:
    """Convert a budget to integer micro-epsilon, rounding down.

    Returns floor(budget * 10**6 * (1 + 2**-41)), so a budget typed as 0.3 allows
    300000 micro-epsilon, not 299999 (the float 0.3 is 0.29999999999999998...).
    """
    if not (math.isfinite(budget) and budget >= 0):
        raise ValueError(f"budget must be finite and at least 0; got {budget}")
    exact = Fraction(budget) * MICRO * (1 + _ROUNDING_TOLERANCE)
    return math.floor(exact)


def micro_to_epsilon(micro: int) -> float:
    """Convert integer micro-epsilon to epsilon."""
    return micro / MICRO


def window_bounds(now: datetime, window_seconds: int) -> tuple[datetime, datetime]:
    """Return the budget window [start, end) that contains ``now``.

    Windows are fixed intervals aligned to the Unix epoch:
    start = floor(now / window_seconds) * window_seconds.
    """
    if window_seconds < 1:
        raise ValueError(f"window_seconds must be at least 1; got {window_seconds}")
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    # Integer microseconds avoid float rounding at window boundaries.
    elapsed = (now - epoch) // timedelta(microseconds=1)
    window_micro = window_seconds * 1_000_000
    start = epoch + timedelta(microseconds=(elapsed // window_micro) * window_micro)
    return start, start + timedelta(seconds=window_seconds)
