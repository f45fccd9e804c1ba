"""The Celery application: queues, request-id propagation, task metrics and logging."""

import logging
import os
import time

from celery import Celery, signals
from celery.app import trace as celery_trace

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "recsys_platform.settings")

app = Celery("recsys_platform")
app.config_from_object("django.conf:settings", namespace="CELERY")

# Celery's success line ends with the task's return value. Tasks return ids and
# statuses today, and dropping the value keeps a future return out of the logs.
celery_trace.LOG_SUCCESS = "Task %(name)s[%(id)s] succeeded in %(runtime)ss"

QUEUE_INGESTION = "ingestion"
QUEUE_TRAINING = "training"
QUEUE_DEFAULT = "default"

logger = logging.getLogger(__name__)


@signals.before_task_publish.connect
def _attach_request_id(headers=None, **kwargs):
    from recsys_platform.observability import TASK_HEADER, current_request_id

    if headers is not None and TASK_HEADER not in headers:
        headers[TASK_HEADER] = current_request_id()


@signals.task_prerun.connect
def _before_task(task=None, **kwargs):
    from recsys_platform.observability import TASK_HEADER, current_request_id, request_id_var

    request = task.request
    # Celery 5.7 exposes a custom message header both as a request attribute and in
    # request.headers (both checked with a real worker). An eager task is never
    # published and keeps the caller's request id.
    headers = getattr(request, "headers", None) or {}
    request_id = getattr(request, TASK_HEADER, None) or headers.get(TASK_HEADER) or current_request_id()
    request._recsys_token = request_id_var.set(request_id)
    request._recsys_started = time.perf_counter()


@signals.task_postrun.connect
def _after_task(task=None, state=None, **kwargs):
    from recsys_platform import metrics
    from recsys_platform.observability import request_id_var

    request = task.request
    started = getattr(request, "_recsys_started", None)
    if started is not None:
        outcome = (state or "unknown").lower()
        metrics.TASK_SECONDS.labels(task=task.name, outcome=outcome).observe(time.perf_counter() - started)
    token = getattr(request, "_recsys_token", None)
    if token is not None:
        request_id_var.reset(token)


@signals.task_failure.connect
def _count_task_failure(sender=None, exception=None, **kwargs):
    from recsys_platform import metrics

    metrics.TASK_FAILURES.labels(task=sender.name).inc()


@signals.setup_logging.connect
def _use_django_logging(**kwargs):
    # Connecting this signal stops Celery from replacing the logging configuration,
    # so workers write the same JSON lines as the web app.
    import logging.config

    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)


@signals.worker_process_init.connect
def _limit_torch_threads(**kwargs):
    from django.conf import settings

    import torch

    torch.set_num_threads(settings.TORCH_THREADS)


@signals.worker_ready.connect
def _serve_worker_metrics(**kwargs):
    """Serve the worker's metrics over HTTP when ``WORKER_METRICS_PORT`` is set.

    Runs in the worker's main process. Tasks run in pool children, so their samples
    are visible here only through ``PROMETHEUS_MULTIPROC_DIR``.
    """
    from django.conf import settings
    from prometheus_client import start_http_server

    from recsys_platform.metrics import build_scrape_registry, multiprocess_mode

    port = settings.WORKER_METRICS_PORT
    if not port:
        return
    if not multiprocess_mode():
        logger.warning(
            "WORKER_METRICS_PORT is set but PROMETHEUS_MULTIPROC_DIR is not; "
            "metrics of tasks run in pool processes will be missing"
        )
    start_http_server(port, addr=settings.WORKER_METRICS_ADDR, registry=build_scrape_registry(include_queue_depth=False))
    logger.info("Serving worker metrics on %s:%s", settings.WORKER_METRICS_ADDR, port)


app.autodiscover_tasks(["workers"])
# Beat's maintenance tasks live in their own module, which autodiscovery (it looks
# for ``tasks``) would not import.
app.autodiscover_tasks(["workers"], related_name="maintenance")
