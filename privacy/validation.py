"""Checks of privacy parameters, shared by the models, forms, mechanisms and API.

Each check returns an error message (or None) so that callers can raise the exception
their layer expects: ``ValueError`` in mechanisms, ``ValidationError`` in models and
forms, an ``APIException`` at the API.
"""

import math
import numbers

from django.conf import settings

# Largest epsilon per response that any configuration may allow. The database check
# constraint on PrivacyPolicy.epsilon uses this constant, so the setting
# PRIVACY_MAX_EPSILON can only lower the limit, never raise it.
MAX_EPSILON_HARD_CAP = 10.0


def max_epsilon() -> float:
    """Return the largest epsilon per response allowed: PRIVACY_MAX_EPSILON, capped at 10."""
    configured = float(getattr(settings, "PRIVACY_MAX_EPSILON", MAX_EPSILON_HARD_CAP))
    return min(configured, MAX_EPSILON_HARD_CAP)


def format_number(value) -> str:
    """Format a number for an error message: 10.0 as 10, 0.25 as 0.25, NaN as nan."""
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return repr(value)


def epsilon_error(epsilon) -> str | None:
    """Return why ``epsilon`` is not a valid epsilon per response, or None if it is."""
    limit = max_epsilon()
    message = f"epsilon must be greater than 0 and at most {format_number(limit)}; got {format_number(epsilon)}"
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real):
        return message
    if not (math.isfinite(epsilon) and 0 < epsilon <= limit):
        return message
    return None


def check_epsilon(epsilon) -> float:
    """Return ``epsilon`` as a float, or raise ValueError naming the allowed range."""
    message = epsilon_error(epsilon)
    if message is not None:
        raise ValueError(message)
    return float(epsilon)


def budget_error(budget) -> str | None:
    """Return why ``budget`` is not a valid budget per user and window, or None."""
    message = f"budget must be a finite number greater than 0; got {format_number(budget)}"
    if isinstance(budget, bool) or not isinstance(budget, numbers.Real):
        return message
    if not (math.isfinite(budget) and budget > 0):
        return message
    return None


def retrieval_fraction_error(fraction) -> str | None:
    """Return why ``fraction`` is not a valid share of epsilon for the user vector, or None."""
    message = f"retrieval_fraction must be greater than 0 and less than 1; got {format_number(fraction)}"
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real):
        return message
    if not (math.isfinite(fraction) and 0 < fraction < 1):
        return message
    return None


def positive_integer_error(name: str, value) -> str | None:
    """Return why ``value`` is not an integer >= 1 for the parameter ``name``, or None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        return f"{name} must be an integer of at least 1; got {value!r}"
    return None
