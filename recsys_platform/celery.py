"""The Celery application: queues, time limits and request-id propagation."""

import os

from celery import Celery, signals
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "recsys_platform.settings")

app = Celery("recsys_platform")
app.config_from_object("django.conf:settings", namespace="CELERY")

QUEUE_INGESTION = "ingestion"
QUEUE_TRAINING = "training"
QUEUE_DEFAULT = "default"


@signals.before_task_publish.connect
def _attach_request_id(headers=None, **kwargs):
    from recsys_platform.observability import TASK_HEADER, current_request_id

    if headers is not None and TASK_HEADER not in headers:
        headers[TASK_HEADER] = current_request_id()


@signals.task_prerun.connect
def _restore_request_id(task=None, **kwargs):
    from recsys_platform.observability import TASK_HEADER, request_id_var

    request = task.request
    headers = getattr(request, "headers", None) or {}
    request_id = getattr(request, TASK_HEADER, None) or headers.get(TASK_HEADER) or "-"
    task.request._recsys_token = request_id_var.set(request_id)


@signals.task_postrun.connect
def _clear_request_id(task=None, **kwargs):
    from recsys_platform.observability import request_id_var

    token = getattr(task.request, "_recsys_token", None)
    if token is not None:
        request_id_var.reset(token)


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


app.autodiscover_tasks(["workers"])
