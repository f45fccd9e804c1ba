"""API error handling shared by every app.

Each failure is an ``APIException`` subclass with a stable snake_case ``default_code``;
responses carry ``{"error": {"code", "message", "fields"?}}`` and never a stack trace.
"""

import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "A backing service (database or broker) is unavailable; retry shortly."
    default_code = "service_unavailable"


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"


class NotFound(exceptions.NotFound):
    default_code = "not_found"


class InvalidParameter(exceptions.ValidationError):
    """A query or body parameter with an invalid value; the message names it and the fix."""

    default_code = "invalid_parameter"


def exception_handler(exc, context):
    if isinstance(exc, Http404):
        exc = NotFound(str(exc) or "Not found.")
    # Django raises these while reading the body. Without this mapping the client would
    # get Django's HTML 400 page instead of the API's JSON error.
    if isinstance(exc, RequestDataTooBig):
        exc = RequestTooLarge(
            f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes "
            "(DATA_UPLOAD_MAX_MEMORY_SIZE); send it in smaller requests, for example at most "
            f"{settings.INTERACTIONS_MAX_BATCH} interactions per batch."
        )
    elif isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        exc = exceptions.ValidationError(
            f"The request has too many form fields or files ({exc}); send fewer per request.",
            code="too_many_fields",
        )
    if isinstance(exc, (OperationalError, InterfaceError)):
        logger.warning("Database unavailable while serving a request: %s", exc.__class__.__name__)
        exc = ServiceUnavailable()
    elif isinstance(exc, DatabaseError):
        logger.exception("Database error while serving a request")
        exc = ServiceUnavailable("The request could not be completed because of a database error; retry shortly.")
    elif _is_broker_error(exc):
        logger.warning("Broker unavailable while serving a request: %s", exc.__class__.__name__)
        exc = ServiceUnavailable("The task queue is unavailable; retry shortly.")

    response = drf_exception_handler(exc, context)
    if response is None:
        return None

    detail = response.data
    code = _code_of(exc)
    if isinstance(exc, exceptions.ValidationError) and isinstance(detail, dict):
        body = {"code": code, "message": _first_message(detail), "fields": detail}
    elif isinstance(detail, dict) and "detail" in detail:
        body = {"code": code, "message": str(detail["detail"])}
    else:
        body = {"code": code, "message": _first_message(detail)}
    response.data = {"error": body}
    if isinstance(exc, ServiceUnavailable):
        response["Retry-After"] = "5"
    return response


def _is_broker_error(exc) -> bool:
    try:
        from kombu.exceptions import OperationalError as KombuOperationalError
    except ImportError:  # pragma: no cover - kombu is a dependency
        return False
    return isinstance(exc, KombuOperationalError)


def _code_of(exc) -> str:
    if isinstance(exc, exceptions.ValidationError):
        codes = exc.get_codes()
        if isinstance(codes, str):
            return codes
        if isinstance(codes, list) and codes and isinstance(codes[0], str):
            return codes[0]
        return getattr(exc, "default_code", "invalid")
    return getattr(exc, "default_code", "error") if not isinstance(getattr(exc, "detail", None), exceptions.ErrorDetail) else exc.detail.code


def _first_message(detail) -> str:
    if isinstance(detail, dict):
        for field, value in detail.items():
            message = _first_message(value)
            return message if field in ("non_field_errors", "detail") else f"{field}: {message}"
        return "Invalid request."
    if isinstance(detail, list):
        return _first_message(detail[0]) if detail else "Invalid request."
    return str(detail)
