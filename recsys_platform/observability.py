"""Request ids and JSON logs, carried from a web request into the tasks it enqueues.

The request id comes from the ``X-Request-ID`` header when a client sends a valid one,
otherwise it is generated. It is stored in a context variable, added to every log
record by ``RequestIdFilter``, sent with each Celery task in a message header and
restored in the worker before the task runs.
"""

import contextvars
import json
import logging
import re
import time
import uuid

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

REQUEST_ID_HEADER = "X-Request-ID"
TASK_HEADER = "recsys_request_id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

# Credentials that must never reach a log line even if some code formats them into a
# message: tenant API keys (``rk_<prefix>_<secret>``, the prefix is kept because it
# identifies the key without revealing it) and the value of Authorization headers.
_API_KEY = re.compile(r"\b(rk_[0-9a-f]{12})_[A-Za-z0-9_-]{8,}")
_AUTHORIZATION = re.compile(r"\b(Api-Key|Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
REDACTED = "[redacted]"


def current_request_id() -> str:
    return request_id_var.get()


class RequestIdMiddleware:
    """Assign a request id to each request and return it in the response header."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        supplied = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = supplied if _VALID_REQUEST_ID.match(supplied) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        request.request_id = request_id
        started = time.perf_counter()
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response[REQUEST_ID_HEADER] = request_id
        _observe_request(request, response, time.perf_counter() - started)
        return response


def _observe_request(request, response, seconds: float) -> None:
    from recsys_platform import metrics

    match = getattr(request, "resolver_match", None)
    route = match.route if match is not None else "unmatched"
    metrics.HTTP_REQUEST_SECONDS.labels(
        method=request.method, route=route, status=str(response.status_code)
    ).observe(seconds)


class RequestIdFilter(logging.Filter):
    """Add ``request_id`` to every log record and redact credentials from its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        message = record.getMessage()
        redacted = redact_credentials(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_STANDARD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "request_id",
}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object per line, with its ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", request_id_var.get()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                payload[key] = _loggable(_without_task_payload(value) if key == "data" else value)
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        for key in ("message", "exception"):
            if key in payload:
                payload[key] = redact_credentials(payload[key])
        return json.dumps(payload, ensure_ascii=False)


def redact_credentials(text: str) -> str:
    """Replace API keys and Authorization header values in ``text`` with a marker."""
    text = _API_KEY.sub(rf"\1_{REDACTED}", text)
    return _AUTHORIZATION.sub(rf"\1 {REDACTED}", text)


# Celery's worker and trace lines pass the task's arguments and return value in
# ``extra={"data": ...}``; the id, name and runtime are all a log line needs.
# The traceback is dropped too: the formatter writes it once, as "exception".
_TASK_PAYLOAD_KEYS = {"args", "kwargs", "return_value", "traceback"}


def _without_task_payload(value):
    if isinstance(value, dict):
        return {key: item for key, item in value.items() if key not in _TASK_PAYLOAD_KEYS}
    return value


def _loggable(value):
    """Return an ``extra=`` value as JSON: scalars as they are, arrays by shape only."""
    if isinstance(value, str):
        return redact_credentials(value)
    if isinstance(value, (int, float, bool, type(None))):
        return value
    # An embedding passed in extra= would put user-derived vectors in the log.
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"<array shape={tuple(shape)}>"
    if isinstance(value, dict):
        return {str(key): _loggable(item) for key, item in value.items()}
    return redact_credentials(repr(value))
