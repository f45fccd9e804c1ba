"""A small HTTP load generator for a server on 127.0.0.1, bounded in requests and time.

Two modes:

- closed loop (``run_closed``): ``concurrency`` threads each send a request as soon as
  the response to their previous one arrives, which finds the throughput the server sustains.
- open loop (``run_open``): requests are due at a fixed rate, and each latency is
  counted from the moment the request was due, not from when a thread got to send it.
  A stalled server is then not hidden by the client waiting for it ("coordinated
  omission"). This gives the latency at a chosen throughput.

Each thread keeps one HTTP/1.1 connection and reconnects when the server closes it
(gunicorn's sync workers close after every response). Every run stops at
``max_requests`` or ``max_seconds``, whichever comes first.
"""

import http.client
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

ALLOWED_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class LoadResult:
    """Latencies (seconds) of the completed requests, their status codes and errors."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    personalised: int = 0
    zero_epsilon: int = 0
    elapsed_s: float = 0.0
    sent: int = 0

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def merge(self, other: "LoadResult") -> None:
        self.latencies.extend(other.latencies)
        self.statuses.update(other.statuses)
        self.errors.update(other.errors)
        self.personalised += other.personalised
        self.zero_epsilon += other.zero_epsilon
        self.sent += other.sent


class _Client:
    def __init__(self, host: str, port: int, headers: dict[str, str], timeout_s: float):
        if host not in ALLOWED_HOSTS:
            raise ValueError(f"host must be a loopback address; got {host!r}")
        self.connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
        self.headers = headers

    def get(self, path: str, result: LoadResult, started: float) -> None:
        """Send one GET and record its latency counted from ``started``."""
        result.sent += 1
        try:
            self.connection.request("GET", path, headers=self.headers)
            response = self.connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as error:
            result.errors[type(error).__name__] += 1
            self.connection.close()
            return
        result.latencies.append(time.perf_counter() - started)
        result.statuses[response.status] += 1
        if response.status == 200:
            payload = json.loads(body)
            result.personalised += bool(payload.get("personalised"))
            result.zero_epsilon += payload.get("epsilon_spent") == 0
        if response.will_close:
            self.connection.close()

    def close(self) -> None:
        self.connection.close()


def run_closed(host: str, port: int, paths, headers: dict[str, str], *, concurrency: int,
               max_requests: int, max_seconds: float, timeout_s: float = 10.0) -> LoadResult:
    """Send up to ``max_requests`` GETs from ``concurrency`` threads, back to back.

    ``paths`` is a callable taking the request number and returning its path.
    """
    lock = threading.Lock()
    counter = iter(range(max_requests))
    results = [LoadResult() for _ in range(concurrency)]
    deadline = time.perf_counter() + max_seconds

    def worker(result: LoadResult) -> None:
        client = _Client(host, port, headers, timeout_s)
        try:
            while time.perf_counter() < deadline:
                with lock:
                    number = next(counter, None)
                if number is None:
                    return
                client.get(paths(number), result, time.perf_counter())
        finally:
            client.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(r,), daemon=True) for r in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max_seconds + timeout_s + 5)
    total = LoadResult(elapsed_s=time.perf_counter() - started)
    for result in results:
        total.merge(result)
    return total


def run_open(host: str, port: int, paths, headers: dict[str, str], *, rate: float, max_requests: int,
             max_seconds: float, threads: int = 16, timeout_s: float = 10.0) -> LoadResult:
    """Send GETs due at ``rate`` per second, up to ``max_requests`` or ``max_seconds``.

    Request i is due at start + i / rate. A thread that picks it up late (all threads
    busy) still counts its latency from the due time.
    """
    count = min(max_requests, int(rate * max_seconds))
    lock = threading.Lock()
    counter = iter(range(count))
    results = [LoadResult() for _ in range(threads)]
    start = time.perf_counter() + 0.05

    def worker(result: LoadResult) -> None:
        client = _Client(host, port, headers, timeout_s)
        try:
            while True:
                with lock:
                    number = next(counter, None)
                if number is None:
                    return
                due = start + number / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                if time.perf_counter() > start + max_seconds + timeout_s:
                    return
                client.get(paths(number), result, due)
        finally:
            client.close()

    pool = [threading.Thread(target=worker, args=(r,), daemon=True) for r in results]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(max_seconds + 2 * timeout_s + 5)
    total = LoadResult(elapsed_s=time.perf_counter() - start)
    for result in results:
        total.merge(result)
    return total
