"""Scale-out: two real workers on different queues of one Redis broker.

Each worker is a separate ``celery worker`` process, as it would be on its own host.
The tests show that each queue's tasks run only on the worker that consumes it. They
also show that the compose health check command gets a reply from each worker, and
that each worker serves the metrics of the tasks it ran.
"""

import subprocess
import sys
import urllib.request
import uuid

import pytest

from recsys_platform.celery import app
from tests.conftest import REPO_ROOT, wait_for
from tests.ops.conftest import (
    IsolatedWorker,
    free_port,
    json_lines,
    metric_value,
    process_environment,
)
from workers.maintenance import ping_task

pytestmark = pytest.mark.worker


@pytest.fixture(scope="module")
def isolated_broker(private_redis):
    """Return the private Redis, emptied before and after this module's workers."""
    import redis

    client = redis.Redis.from_url(private_redis)
    client.flushdb()
    yield private_redis
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def queue_workers(isolated_broker, tmp_path_factory, worker_media_root, django_db_setup):
    """Start one worker on ``ingestion`` and one on ``training``, both on the private broker."""
    tmp_path = tmp_path_factory.mktemp("queue-workers")
    suffix = uuid.uuid4().hex[:8]
    workers = {}
    try:
        for queue in ("ingestion", "training"):
            multiproc_dir = tmp_path / f"prometheus-{queue}"
            multiproc_dir.mkdir()
            worker = IsolatedWorker(
                queue, f"ops-{queue}-{suffix}", worker_media_root, tmp_path / f"{queue}.log",
                broker_url=isolated_broker,
                extra_env={
                    "PROMETHEUS_MULTIPROC_DIR": multiproc_dir,
                    "WORKER_METRICS_PORT": free_port(),
                    "WORKER_METRICS_ADDR": "127.0.0.1",
                },
            )
            workers[queue] = worker
            worker.start()
        yield workers
    finally:
        for worker in workers.values():
            worker.stop()


def ping_records(worker, token: str) -> list[dict]:
    return [r for r in json_lines(worker.log_path) if r.get("ping_token") == token]


def test_each_queue_runs_on_its_own_worker(queue_workers, isolated_broker):
    # given: several pings per queue, sent through the shared broker
    tokens = {queue: [f"{queue}-{i}-{uuid.uuid4().hex[:6]}" for i in range(3)] for queue in queue_workers}

    # when
    with app.connection_for_write(url=isolated_broker) as connection:
        for queue, queue_tokens in tokens.items():
            for token in queue_tokens:
                ping_task.apply_async((token,), queue=queue, connection=connection)

    # then: every ping is logged by the worker of its queue, and only there
    for queue, worker in queue_workers.items():
        other = next(w for q, w in queue_workers.items() if q != queue)
        for token in tokens[queue]:
            records = wait_for(lambda: ping_records(worker, token), timeout=60, message=f"ping {token} on {queue}")
            assert records[0]["worker"] == worker.node_name
            assert records[0]["queue"] == queue
            assert ping_records(other, token) == []


def test_compose_worker_healthcheck_pings_each_worker(queue_workers, isolated_broker):
    # The same command as the worker healthcheck in docker-compose.yml.
    env = process_environment(CELERY_BROKER_URL=isolated_broker)

    for worker in queue_workers.values():
        result = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "recsys_platform", "inspect", "ping",
             "-d", worker.node_name, "--timeout", "10"],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "pong" in result.stdout

    unknown = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "recsys_platform", "inspect", "ping",
         "-d", "nobody@nowhere", "--timeout", "2"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert unknown.returncode != 0


def test_worker_metrics_time_every_task_and_count_failures(queue_workers, isolated_broker):
    # given: the exporter of the training worker, fed by its pool process
    worker = queue_workers["training"]
    token = f"metrics-{uuid.uuid4().hex[:6]}"
    port = worker.extra_env["WORKER_METRICS_PORT"]
    task = {"task": "workers.maintenance.ping_task"}
    success = {**task, "outcome": "success"}
    failure = {**task, "outcome": "failure"}

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            return response.read().decode()

    def sample(text: str, name: str, labels: dict) -> float:
        return metric_value(text, name, labels) or 0.0

    before = scrape()

    # when: one ping that succeeds and one that raises
    with app.connection_for_write(url=isolated_broker) as connection:
        ping_task.apply_async((token,), queue="training", connection=connection)
        ping_task.apply_async((token + "-fail",), {"fail": True}, queue="training", connection=connection)

    # then: the exporter reports one more success, one more failure and its duration
    def scrape_after_failure() -> str | None:
        text = scrape()
        counted = sample(text, "recsys_task_failures_total", task) > sample(before, "recsys_task_failures_total", task)
        return text if counted else None

    after = wait_for(scrape_after_failure, timeout=60, message="the failure counter")
    assert sample(after, "recsys_task_seconds_count", success) - sample(before, "recsys_task_seconds_count", success) == 1
    assert sample(after, "recsys_task_seconds_count", failure) - sample(before, "recsys_task_seconds_count", failure) == 1
    assert sample(after, "recsys_task_failures_total", task) - sample(before, "recsys_task_failures_total", task) == 1
