"""API errors of the privacy app, each with a stable code."""

from rest_framework import exceptions, status

from privacy.validation import epsilon_error, max_epsilon


class InvalidEpsilon(exceptions.APIException):
    """An epsilon outside (0, PRIVACY_MAX_EPSILON], or not a finite number."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid_epsilon"

    def __init__(self, epsilon):
        message = epsilon_error(epsilon) or (
            f"epsilon must be greater than 0 and at most {max_epsilon():g}; got {epsilon!r}"
        )
        super().__init__(message)


class InvalidPrivacyParameter(exceptions.APIException):
    """A privacy parameter (k, budget, mechanism option) with an invalid value."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid_privacy_parameter"


class UnknownMechanism(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "unknown_mechanism"

    def __init__(self, name, known: list[str]):
        super().__init__(f"mechanism must be one of {', '.join(known)}; got {name!r}")


class PrivacyBudgetExhausted(exceptions.APIException):
    """For endpoints that must not fall back: the user's budget cannot pay for the request."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_code = "privacy_budget_exhausted"

    def __init__(self, remaining: float, epsilon: float, window_end):
        super().__init__(
            f"The user's privacy budget has {remaining:g} epsilon left in this window and the "
            f"request needs {epsilon:g}; retry after {window_end.isoformat()}."
        )
