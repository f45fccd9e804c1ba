"""Liveness, readiness and Prometheus endpoints.

None of them needs an API key: load balancers and orchestrators call the health
checks, and ``/metrics`` has its own optional bearer token (``METRICS_TOKEN``).
"""

import hmac
import logging

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

logger = logging.getLogger(__name__)

# Seconds one broker connection attempt may take before readiness reports it down.
BROKER_CHECK_TIMEOUT_S = 2.0


def live(request):
    """Report that the process is running; checks no dependency."""
    return JsonResponse({"status": "ok"})


def ready(request):
    """Report whether the database and the broker respond, with status 503 when either does not."""
    checks = {"database": _check_database(), "broker": _check_broker()}
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", "checks": checks},
        status=200 if healthy else 503,
    )


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as error:  # noqa: BLE001 - any failure means not ready
        logger.warning("Readiness: database check failed: %s", error.__class__.__name__)
        # A broken persistent connection would fail every later check too.
        connection.close_if_unusable_or_obsolete()
        return "unavailable"


def _check_broker() -> str:
    from recsys_platform.celery import app

    try:
        with app.connection_for_write(url=settings.CELERY_BROKER_URL) as conn:
            conn.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0.2, timeout=BROKER_CHECK_TIMEOUT_S
            )
        return "ok"
    except Exception as error:  # noqa: BLE001 - any failure means not ready
        logger.warning("Readiness: broker check failed: %s", error.__class__.__name__)
        return "unavailable"


def metrics_view(request):
    """Expose Prometheus metrics of every web process, and the depth of each queue.

    With ``METRICS_TOKEN`` set, the scraper must send ``Authorization: Bearer <token>``,
    because the labels name tenants and the web port is usually reachable by clients.
    """
    token = settings.METRICS_TOKEN
    if token and not _bearer_matches(request, token):
        response = JsonResponse(
            {"error": {"code": "not_authenticated",
                       "message": "Send the metrics token as 'Authorization: Bearer <token>'."}},
            status=401,
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response

    from recsys_platform.metrics import build_scrape_registry

    registry = build_scrape_registry(include_queue_depth=True)
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def _bearer_matches(request, token: str) -> bool:
    scheme, _, supplied = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(supplied.strip().encode(), token.encode())
