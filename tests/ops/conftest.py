"""Helpers of the operations tests: real servers and workers on 127.0.0.1.

Tests that start their own workers use a Redis server of their own, started on a free
port of 127.0.0.1 for the session. The session's shared worker, and workers of other
test runs on this machine, consume the same queue names on the shared Redis and could
otherwise take their messages.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from celery import Celery
from django.conf import settings

from tests.conftest import REPO_ROOT, WORKER_START_TIMEOUT_S, WorkerProcess, _test_database_url

SERVER_START_TIMEOUT_S = 90


def free_port() -> int:
    """Return a TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def private_redis(tmp_path_factory):
    """Start a Redis server on a free port of 127.0.0.1 and yield its URL."""
    import redis

    server_binary = shutil.which("redis-server")
    if server_binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    log = open(folder / "redis.log", "ab")
    process = subprocess.Popen(
        [server_binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(folder)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on port {port}; see {folder / 'redis.log'}")
                time.sleep(0.1)
        yield url
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=20)
        log.close()


@pytest.fixture
def isolated_broker(private_redis):
    """Yield the private Redis URL, emptied before and after the test."""
    import redis

    client = redis.Redis.from_url(private_redis)
    client.flushdb()
    yield private_redis
    client.flushdb()
    client.close()


def process_environment(**overrides) -> dict:
    """Return the environment of a subprocess bound to the test database and broker."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=_test_database_url(),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        HF_HUB_OFFLINE="1",
        LOG_FORMAT="json",
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update({key: str(value) for key, value in overrides.items()})
    return env


class IsolatedWorker(WorkerProcess):
    """A real worker on the private Redis broker, with extra environment variables."""

    def __init__(self, *args, broker_url: str, extra_env: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.broker_url = broker_url
        self.extra_env = extra_env or {}

    @property
    def node_name(self) -> str:
        return f"{self.name}@{os.uname().nodename}"

    def environment(self) -> dict:
        env = super().environment()
        env["CELERY_BROKER_URL"] = self.broker_url
        env.update({key: str(value) for key, value in self.extra_env.items()})
        return env

    def _wait_ready(self) -> None:
        # The project app's control commands publish through its own producer pool,
        # on the test broker, even when given another connection. A bare app reaches
        # the private broker only through the read and write URLs, because Celery
        # prefers the CELERY_BROKER_URL environment variable to its broker argument.
        control_app = Celery("ops-tests", set_as_current=False)
        control_app.conf.update(broker_read_url=self.broker_url, broker_write_url=self.broker_url)
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"worker {self.name} exited with {self.process.returncode}; see {self.log_path}")
                if control_app.control.ping(destination=[self.node_name], timeout=1.0):
                    return
        finally:
            control_app.close()
        raise RuntimeError(f"worker {self.name} did not answer a ping in {WORKER_START_TIMEOUT_S} s; see {self.log_path}")


class ServerProcess:
    """A gunicorn subprocess serving the project on 127.0.0.1."""

    def __init__(self, log_path: Path, *, workers: int = 1, **env):
        self.port = free_port()
        self.log_path = log_path
        self.workers = workers
        self.env = env
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ServerProcess":
        self.log_file = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn", "recsys_platform.wsgi:application",
                "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers),
                "--timeout", "60", "--graceful-timeout", "5",
            ],
            cwd=REPO_ROOT, env=process_environment(**self.env),
            stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}; see {self.log_path}")
            try:
                if self.get("/health/live")[0] == 200:
                    return self
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"gunicorn did not answer /health/live in {SERVER_START_TIMEOUT_S} s")

    def get(self, path: str, headers: dict | None = None) -> tuple[int, str]:
        request = urllib.request.Request(self.base_url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.log_file.close()


def json_lines(path: Path) -> list[dict]:
    """Parse the JSON log lines of a file, skipping lines that are not JSON objects."""
    records = []
    for line in Path(path).read_text(errors="replace").splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def metric_value(exposition: str, name: str, labels: dict[str, str]) -> float | None:
    """Return the value of one sample of a Prometheus text exposition, or None if absent."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None
