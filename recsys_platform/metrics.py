"""Prometheus metrics shared by the web app and the workers.

With several gunicorn or Celery processes, set ``PROMETHEUS_MULTIPROC_DIR`` to a
shared empty folder so the ``/metrics`` endpoint aggregates every process.
"""

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUEST_SECONDS = Histogram(
    "recsys_http_request_seconds",
    "Latency of HTTP requests in seconds, by method, route and status.",
    ["method", "route", "status"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
)
RECOMMENDATIONS = Counter(
    "recsys_recommendations_total",
    "Recommendation responses, by tenant, mechanism and whether personalised.",
    ["tenant", "mechanism", "personalised"],
)
EPSILON_SPENT = Counter(
    "recsys_epsilon_spent_total",
    "Sum of epsilon charged to the privacy ledger, by tenant and mechanism.",
    ["tenant", "mechanism"],
)
BUDGET_EXHAUSTIONS = Counter(
    "recsys_budget_exhaustions_total",
    "Requests that could not be paid from the user's budget, by tenant.",
    ["tenant"],
)
FALLBACKS = Counter(
    "recsys_fallback_responses_total",
    "Non-personalised responses served, by tenant and reason.",
    ["tenant", "reason"],
)
TASK_SECONDS = Histogram(
    "recsys_task_seconds",
    "Duration of Celery tasks in seconds, by task name and outcome.",
    ["task", "outcome"],
    buckets=(0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900),
)
TASK_FAILURES = Counter(
    "recsys_task_failures_total",
    "Celery tasks that ended in failure, by task name.",
    ["task"],
)
QUEUE_DEPTH = Gauge(
    "recsys_queue_depth",
    "Messages waiting in each Celery queue, read when /metrics is scraped.",
    ["queue"],
    multiprocess_mode="max",
)


def read_queue_depths() -> dict[str, int]:
    """Return the number of waiting messages per queue, or {} if the broker is unreachable."""
    from recsys_platform.celery import app

    depths = {}
    try:
        with app.connection_for_read() as conn:
            channel = conn.default_channel
            for queue in app.conf.task_queues or []:
                _, count, _ = channel.queue_declare(queue=queue.name, passive=True)
                depths[queue.name] = count
    except Exception:  # noqa: BLE001 - metrics must not fail because the broker does
        return {}
    return depths
