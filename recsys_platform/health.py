"""Liveness, readiness and Prometheus endpoints."""

import logging

from django.db import connection
from django.http import HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

logger = logging.getLogger(__name__)


def live(request):
    """Report that the process is running; checks no dependency."""
    return JsonResponse({"status": "ok"})


def ready(request):
    """Report whether the database and the broker answer; 503 when either does not."""
    checks = {"database": _check_database(), "broker": _check_broker()}
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if healthy else "unavailable", "checks": checks}, status=200 if healthy else 503)


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as error:  # noqa: BLE001 - any failure means not ready
        logger.warning("Readiness: database check failed: %s", error.__class__.__name__)
        return "unavailable"


def _check_broker() -> str:
    from recsys_platform.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception as error:  # noqa: BLE001 - any failure means not ready
        logger.warning("Readiness: broker check failed: %s", error.__class__.__name__)
        return "unavailable"


def metrics_view(request):
    """Expose Prometheus metrics, aggregated across processes when multiprocess mode is on."""
    import os

    from prometheus_client import CollectorRegistry, multiprocess

    from recsys_platform.metrics import QUEUE_DEPTH, read_queue_depths

    for queue, depth in read_queue_depths().items():
        QUEUE_DEPTH.labels(queue=queue).set(depth)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
