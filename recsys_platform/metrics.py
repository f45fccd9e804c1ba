"""Prometheus metrics shared by the web app and the workers.

With several gunicorn or Celery processes, set ``PROMETHEUS_MULTIPROC_DIR`` to an
empty folder of the host (or container) before the processes start: every process
then writes its samples there and a scrape sums them. The variable must be set
before ``prometheus_client`` is first imported, so it belongs in the environment,
not in Django settings. Each web or worker container needs a folder of its own,
emptied at start (a tmpfs in ``docker-compose.yml``).
"""

import logging
import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily

logger = logging.getLogger(__name__)

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
    "Duration of Celery tasks in seconds, by task name and final state "
    "(success, failure, retry), observed for every task by the Celery signals.",
    ["task", "outcome"],
    buckets=(0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600),
)
TASK_FAILURES = Counter(
    "recsys_task_failures_total",
    "Celery tasks that ended in failure, by task name, counted by the task_failure signal.",
    ["task"],
)

# Seconds a broker check may take while serving /metrics; a scrape must stay fast
# when the broker is down.
BROKER_CHECK_TIMEOUT_S = 2.0


def multiprocess_mode() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def read_queue_depths(broker_url: str | None = None) -> dict[str, int]:
    """Return the number of waiting messages per queue, or {} if the broker is unreachable.

    Messages already prefetched by a worker (at most its concurrency times the
    prefetch multiplier) are not counted, because the broker no longer lists them as waiting.
    """
    from recsys_platform.celery import app

    depths = {}
    try:
        with app.connection_for_read(url=broker_url) as conn:
            # default_channel retries forever with the app's options; one bounded
            # attempt first keeps a scrape from hanging on a dead broker.
            conn.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0.2, timeout=BROKER_CHECK_TIMEOUT_S
            )
            channel = conn.default_channel
            for queue in app.conf.task_queues or []:
                depths[queue.name] = _queue_depth(channel, queue.name)
    except Exception as error:  # noqa: BLE001 - metrics must not fail because the broker does
        logger.warning("Could not read queue depths from the broker: %s", error.__class__.__name__)
        return {}
    return depths


def _queue_depth(channel, name: str) -> int:
    from kombu.exceptions import ChannelError

    try:
        _, count, _ = channel.queue_declare(queue=name, passive=True)
    except ChannelError:
        # The queue has not been declared yet (no worker consumed it and no task was
        # sent to it), so nothing is waiting in it.
        return 0
    return count


class QueueDepthCollector:
    """Report ``recsys_queue_depth`` by asking the broker at scrape time.

    A gauge set by whichever process served the last scrape would leave stale values
    behind in multiprocess mode, so the depth is read fresh on every scrape.
    """

    def collect(self):
        family = GaugeMetricFamily(
            "recsys_queue_depth",
            "Messages waiting in each Celery queue, read from the broker at scrape time.",
            labels=["queue"],
        )
        for queue, depth in sorted(read_queue_depths().items()):
            family.add_metric([queue], depth)
        yield family


class _ProcessRegistry:
    """Expose the collectors registered in this process's default registry."""

    def collect(self):
        yield from REGISTRY.collect()


def build_scrape_registry(*, include_queue_depth: bool) -> CollectorRegistry:
    """Build the registry one scrape reads: every process in multiprocess mode, else this one."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_mode():
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ProcessRegistry())
    if include_queue_depth:
        registry.register(QueueDepthCollector())
    return registry
