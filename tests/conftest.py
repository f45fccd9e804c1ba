"""Shared fixtures: tenants with API keys, API clients and a real Celery worker.

Tests run against the embedded PostgreSQL with pgvector (or DATABASE_URL) and the
broker named by CELERY_BROKER_URL; ``make test`` points that at the local Redis.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from rest_framework.test import APIClient

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKER_START_TIMEOUT_S = 60


def data_dir() -> Path:
    return Path(settings.RECSYS_DATA_DIR)


@pytest.fixture
def make_tenant(db):
    from users.services import create_api_key, create_tenant

    def _make(name: str):
        tenant = create_tenant(name)
        _, raw_key = create_api_key(tenant, label="tests")
        tenant.raw_api_key = raw_key
        return tenant

    return _make


@pytest.fixture
def tenant(make_tenant):
    return make_tenant("acme")


@pytest.fixture
def other_tenant(make_tenant):
    return make_tenant("globex")


def client_for(tenant) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {tenant.raw_api_key}")
    return client


@pytest.fixture
def api(tenant):
    return client_for(tenant)


@pytest.fixture
def other_api(other_tenant):
    return client_for(other_tenant)


@pytest.fixture(autouse=True)
def _media_root(tmp_path, settings):
    settings.MEDIA_ROOT = str(tmp_path / "media")


def _test_database_url() -> str:
    db = settings.DATABASES["default"]
    credentials = quote(db["USER"]) + (":" + quote(db["PASSWORD"]) if db["PASSWORD"] else "")
    if db["HOST"].startswith("/") or not db["HOST"]:
        return f"postgresql://{credentials}@/{db['NAME']}?host={quote(db['HOST'], safe='/')}"
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgresql://{credentials}@{db['HOST']}{port}/{db['NAME']}"


class WorkerProcess:
    """A real ``celery worker`` subprocess bound to the test database and broker."""

    def __init__(self, queues: str, name: str, media_root: str, log_path: Path, concurrency: int = 1):
        self.queues = queues
        self.name = name
        self.media_root = media_root
        self.log_path = log_path
        self.concurrency = concurrency
        self.process: subprocess.Popen | None = None

    def environment(self) -> dict:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=_test_database_url(),
            CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
            RECSYS_MEDIA_ROOT=self.media_root,
            HF_HUB_OFFLINE="1",
            LOG_FORMAT="json",
        )
        return env

    def start(self) -> "WorkerProcess":
        self.log_file = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "recsys_platform", "worker",
                "-Q", self.queues, "-n", f"{self.name}@%h", "--concurrency", str(self.concurrency),
                "--pool", "prefork", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
            ],
            cwd=REPO_ROOT, env=self.environment(), stdout=self.log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        from recsys_platform.celery import app

        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited with {self.process.returncode}; see {self.log_path}")
            replies = app.control.ping(destination=[f"{self.name}@{os.uname().nodename}"], timeout=1.0)
            if replies:
                return
        raise RuntimeError(f"worker {self.name} did not answer a ping in {WORKER_START_TIMEOUT_S} s")

    def child_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.log_file.close()


def purge_broker() -> None:
    from recsys_platform.celery import app

    with app.connection_for_write() as conn:
        for queue in app.conf.task_queues:
            try:
                conn.default_channel.queue_purge(queue.name)
            except Exception:  # noqa: BLE001 - a queue that does not exist yet has nothing to purge
                pass


@pytest.fixture(scope="session")
def worker_media_root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("worker-media"))


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker, worker_media_root, tmp_path_factory):
    """Start one worker consuming every queue for the whole session."""
    purge_broker()
    log_path = tmp_path_factory.mktemp("logs") / "worker.log"
    worker = WorkerProcess("default,ingestion,training", "tests", worker_media_root, log_path).start()
    yield worker
    worker.stop()


@pytest.fixture
def live_worker(celery_worker_process, worker_media_root, settings):
    """Use the session's worker; uploads are written where the worker reads them."""
    settings.MEDIA_ROOT = worker_media_root
    return celery_worker_process


def wait_for(predicate, *, timeout: float, interval: float = 0.5, message: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


@pytest.fixture
def make_ready_videos(db):
    """Create servable videos with random unit fused embeddings (no media)."""
    import numpy as np

    from videos.models import FUSED_DIM, Video, VideoStatus

    def _make(tenant, count: int, *, seed: int = 0, prefix: str = "v"):
        rng = np.random.default_rng(seed)
        vectors = rng.standard_normal((count, FUSED_DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return Video.objects.bulk_create([
            Video(tenant=tenant, external_id=f"{prefix}{i}", title=f"video {i}", status=VideoStatus.READY,
                  fused_embedding=vectors[i], fusion_version="test")
            for i in range(count)
        ])

    return _make
