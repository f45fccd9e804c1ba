"""Shared pieces of the benchmarks: environment, machine facts, load average, percentiles.

Every benchmark process runs against its own embedded PostgreSQL data folder
(``var/bench-pgdata`` by default, another with ``--db-dir``), never the development
database, and uses Redis database 12 when it needs a Celery broker.
"""

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DB_DIR = REPO_ROOT / "var" / "bench-pgdata"
BENCH_MILLION_DB_DIR = REPO_ROOT / "var" / "bench-pgdata-1m"
RESULTS_DIR = REPO_ROOT / "var" / "bench-results"
CACHE_DIR = REPO_ROOT / "var" / "bench-cache"
BENCH_BROKER_URL = "redis://127.0.0.1:6379/12"
BENCH_TENANT = "bench-serving"


def bench_environment(db_dir: Path = BENCH_DB_DIR, **extra: str) -> dict[str, str]:
    """Return the environment of a benchmark process: its own database folder and broker.

    ``DATABASE_URL`` is removed so that settings start the embedded server in
    ``db_dir``. The benchmark processes log warnings and errors only; a server under
    test sets its own ``LOG_LEVEL``.
    """
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    env.update(
        RECSYS_EMBEDDED_DB_DIR=str(db_dir),
        DJANGO_SETTINGS_MODULE="recsys_platform.settings",
        CELERY_BROKER_URL=BENCH_BROKER_URL,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(REPO_ROOT),
    )
    env.update(extra)
    return env


def setup_django(db_dir: Path = BENCH_DB_DIR) -> None:
    """Point this process at the benchmark database and set Django up."""
    os.environ.update(bench_environment(db_dir))
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    import django

    django.setup()


def migrate(db_dir: Path = BENCH_DB_DIR) -> None:
    """Run ``manage.py migrate`` against a benchmark database folder (starts its server)."""
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "manage.py"), "migrate", "--noinput", "-v", "0"],
        env=bench_environment(db_dir),
        cwd=REPO_ROOT,
        check=True,
    )


def machine_facts() -> dict:
    """Return the CPU model, core count, memory and software versions of this machine."""
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    return {
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class LoadAverageSampler:
    """Sample the 1-minute load average in a background thread while a benchmark runs.

    Use as a context manager; ``summary()`` returns the first, mean and largest sample.
    Other jobs on a shared machine raise it, so every result carries it.
    """

    def __init__(self, interval_s: float = 5.0):
        self.interval_s = interval_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> "LoadAverageSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict:
        samples = self.samples or [os.getloadavg()[0]]
        return {
            "first": round(samples[0], 2),
            "mean": round(statistics.fmean(samples), 2),
            "max": round(max(samples), 2),
        }


def percentile(values, fraction: float) -> float:
    """Return the nearest-rank percentile (fraction in (0, 1]) of a non-empty sequence."""
    ordered = sorted(values)
    rank = min(max(math.ceil(fraction * len(ordered)), 1), len(ordered))
    return ordered[rank - 1]


def latency_summary(seconds: list[float]) -> dict:
    """Return count, p50, p95, p99, max and mean of latencies, in milliseconds."""
    if not seconds:
        return {"count": 0}
    return {
        "count": len(seconds),
        "p50_ms": round(1000 * percentile(seconds, 0.50), 3),
        "p95_ms": round(1000 * percentile(seconds, 0.95), 3),
        "p99_ms": round(1000 * percentile(seconds, 0.99), 3),
        "max_ms": round(1000 * max(seconds), 3),
        "mean_ms": round(1000 * statistics.fmean(seconds), 3),
    }


def process_memory_kib(pid: int) -> dict:
    """Return the RSS and, where the kernel reports it, the PSS of a process, in KiB."""
    memory = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                memory["rss_kib"] = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                memory["peak_rss_kib"] = int(line.split()[1])
    except OSError:
        return memory
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                memory["pss_kib"] = int(line.split()[1])
    except OSError:
        pass
    return memory


def child_pids(pid: int) -> list[int]:
    """Return the ids of the direct children of a process."""
    children = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            for line in status.read_text().splitlines():
                if line.startswith("PPid:"):
                    if int(line.split()[1]) == pid:
                        children.append(int(status.parent.name))
                    break
        except OSError:
            continue
    return sorted(children)


def process_cpu_seconds(pids) -> float:
    """Return the user plus system CPU seconds used so far by the given processes (all their threads)."""
    ticks = 0
    for pid in pids:
        try:
            # Fields after the parenthesised command name; utime and stime are fields 14 and 15.
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """Return a process and all its descendants."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(child_pids(current))
    return found


def postgres_pids(db_dir: Path) -> list[int]:
    """Return the embedded PostgreSQL server's postmaster and its children (backends, WAL writer, ...)."""
    try:
        postmaster = int((db_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    return descendants(postmaster)


def write_result(name: str, data: dict) -> Path:
    """Write one benchmark's results as JSON under var/bench-results and return the path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def read_result(name: str) -> dict | None:
    path = RESULTS_DIR / f"{name}.json"
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
