"""Restarts of Redis and PostgreSQL under load, against a stack of the test's own.

The test starts its own Redis (append-only file on, as in docker-compose.yml), its
own embedded PostgreSQL, gunicorn with 2 worker processes and a Celery worker. A
client thread uploads small videos and requests recommendations, each request
bounded in time, while the test kills Redis and later stops PostgreSQL, and brings
each back on the same address.

Outcomes required:

- while Redis is down, uploads get a 503 ``service_unavailable`` and store nothing,
  and recommendations, which need no broker, still succeed;
- while PostgreSQL is down, every request gets a 503 ``service_unavailable``;
- no request hangs, and the API responds again without a manual step;
- every upload that got a 202 ends ready, partial or failed with a reason, so none
  is lost or left pending;
- no upload that got a 503 was stored;
- the privacy budget spent equals the sum of the epsilon that successful responses
  reported.
"""

import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import pytest

from tests import media_factory as mf
from tests.conftest import REPO_ROOT
from tests.reliability.processes import (
    REQUEST_TIMEOUT_S,
    EmbeddedPostgres,
    RedisServer,
    WebServer,
    Worker,
    base_environment,
    multipart,
    request,
)

pytestmark = [pytest.mark.slow, pytest.mark.worker]

# Bounds of the client loop: it stops at whichever comes first.
MAX_CLIENT_REQUESTS = 400
MAX_CLIENT_SECONDS = 150
CLIENT_PAUSE_S = 0.25
# Seconds each service stays down, and seconds the API may take to respond again.
DOWN_S = 6
RECOVERY_S = 5
FINAL_STATUSES = {"ready", "partial", "failed"}


@dataclass
class Exchange:
    """One request of the client loop, with the times (time.monotonic()) it started and ended."""

    kind: str
    external_id: str
    status: int
    error_code: str | None
    seconds: float
    started: float
    ended: float
    body: dict | str = field(repr=False, default="")


class FaultClock:
    """Record, per service, when it was down for sure and when it was back (time.monotonic()).

    ``down`` is called once the kill or stop has returned and ``restarting`` just
    before the start, so the outage window contains no time in which the service was
    still stopping or already starting.
    """

    def __init__(self):
        self.outages: dict[str, list[float]] = {}
        self.back: dict[str, float] = {}

    def down(self, service: str) -> None:
        self.outages[service] = [time.monotonic()]

    def restarting(self, service: str) -> None:
        self.outages[service].append(time.monotonic())

    def up(self, service: str) -> None:
        self.back[service] = time.monotonic()

    def within_outage(self, service: str, exchange: Exchange) -> bool:
        went_down, restarted = self.outages.get(service, [float("inf"), float("inf")])
        return went_down <= exchange.started and exchange.ended <= restarted

    def between(self, exchange: Exchange, start: float, end: float) -> bool:
        return start <= exchange.started and exchange.ended <= end


def create_tenant_key(database_url: str, broker_url: str) -> str:
    script = (
        "from users.services import create_api_key, create_tenant\n"
        "tenant = create_tenant('restarts')\n"
        "print(create_api_key(tenant, label='restart test')[1])\n"
    )
    output = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
        env=base_environment(DATABASE_URL=database_url, CELERY_BROKER_URL=broker_url), check=True, timeout=120,
    ).stdout
    return [line for line in output.splitlines() if line.startswith("rk_")][-1]


class Client:
    """The product app: uploads and recommendation requests, each with a timeout."""

    def __init__(self, base_url: str, api_key: str, clip_path):
        self.base_url = base_url
        self.headers = {"Authorization": f"Api-Key {api_key}"}
        self.clip_path = clip_path

    def upload(self, external_id: str) -> Exchange:
        body, content_type = multipart({"external_id": external_id, "title": "a moving pattern"}, "file",
                                       self.clip_path)
        return self._exchange("upload", external_id, "POST", "/api/v1/videos/", body, content_type)

    def recommend(self, request_id: str) -> Exchange:
        return self._exchange("recommend", request_id, "GET",
                              f"/api/v1/users/alice/recommendations/?k=3&request_id={request_id}")

    def get(self, path: str):
        return request("GET", self.base_url + path, headers=self.headers)

    def video_status(self, external_id: str) -> str | None:
        reply = self.get(f"/api/v1/videos/{external_id}/")
        return reply.body.get("status") if reply.status == 200 else None

    def _exchange(self, kind, external_id, method, path, data=None, content_type=None) -> Exchange:
        headers = dict(self.headers)
        if content_type:
            headers["Content-Type"] = content_type
        started = time.monotonic()
        reply = request(method, self.base_url + path, headers=headers, data=data)
        return Exchange(kind, external_id, reply.status, reply.error_code, reply.seconds, started,
                        time.monotonic(), reply.body)


def run_client(client: Client, exchanges: list, stop: threading.Event) -> None:
    deadline = time.monotonic() + MAX_CLIENT_SECONDS
    index = 0
    while not stop.is_set() and len(exchanges) < MAX_CLIENT_REQUESTS and time.monotonic() < deadline:
        exchanges.append(client.upload(f"load-{index}"))
        exchanges.append(client.recommend(f"req-{index}"))
        index += 1
        stop.wait(CLIENT_PAUSE_S)


def wait_for_api(predicate, timeout: float, message: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


@pytest.fixture
def stack(tmp_path):
    """Start Redis, PostgreSQL, gunicorn (2 workers) and a Celery worker of this test's own."""
    redis = RedisServer(tmp_path / "redis", appendonly=True)
    postgres = EmbeddedPostgres(tmp_path / "pg")
    web = worker = None
    try:
        redis.start()
        postgres.start()
        postgres.migrate(redis.url(0), tmp_path / "migrate.log")
        media_root = tmp_path / "media"
        env = {"DATABASE_URL": postgres.url, "CELERY_BROKER_URL": redis.url(0), "RECSYS_MEDIA_ROOT": media_root}
        web = WebServer(tmp_path / "gunicorn.log", workers=2, env=env)
        web.start()
        worker = Worker(
            "default,ingestion,training", f"restarts-{uuid.uuid4().hex[:6]}", str(media_root),
            tmp_path / "worker.log", broker_url=redis.url(0), database_url=postgres.url,
        )
        worker.start()
        api_key = create_tenant_key(postgres.url, redis.url(0))
        yield {"redis": redis, "postgres": postgres, "web": web, "worker": worker, "api_key": api_key}
    finally:
        for process in (worker, web):
            if process is not None and process.process is not None:
                process.stop()
        postgres.stop()
        redis.stop()


def seed_history(client: Client) -> None:
    """Upload three clips, wait until they are servable, and give user alice a history."""
    for index in range(3):
        assert client.upload(f"seed-{index}").status == 202
    wait_for_api(
        lambda: all(client.video_status(f"seed-{i}") in ("ready", "partial") for i in range(3)),
        timeout=180, message="the seed videos to be processed",
    )
    body = json.dumps({"interactions": [{"user": "alice", "video": f"seed-{i}", "event_type": "like"}
                                        for i in range(3)]}).encode()
    reply = request("POST", client.base_url + "/api/v1/interactions/", data=body,
                    headers={**client.headers, "Content-Type": "application/json"})
    assert reply.status == 201, reply.body


def test_restarts_lose_and_duplicate_nothing(stack, tmp_path):
    # given: a seeded stack and a client loop running in the background
    clip = mf.make_normal_mp4(tmp_path)
    client = Client(stack["web"].base_url, stack["api_key"], clip)
    seed_history(client)
    exchanges: list[Exchange] = []
    stop = threading.Event()
    loop = threading.Thread(target=run_client, args=(client, exchanges, stop), daemon=True)
    clock = FaultClock()
    loop.start()

    # when: Redis is killed and restarted, then PostgreSQL is stopped and started
    try:
        time.sleep(5)
        stack["redis"].kill()
        clock.down("redis")
        time.sleep(DOWN_S)
        clock.restarting("redis")
        stack["redis"].start()
        clock.up("redis")
        time.sleep(RECOVERY_S + 6)

        postgres_stopping = time.monotonic()
        stack["postgres"].stop()
        clock.down("postgres")
        time.sleep(DOWN_S)
        clock.restarting("postgres")
        stack["postgres"].start()
        clock.up("postgres")
        time.sleep(RECOVERY_S + 6)
    finally:
        stop.set()
        loop.join(timeout=REQUEST_TIMEOUT_S * 2 + 5)
    assert not loop.is_alive(), "the client loop did not stop"

    # then: every accepted upload reaches a final status, read through the API
    uploads = [e for e in exchanges if e.kind == "upload"]
    recommendations = [e for e in exchanges if e.kind == "recommend"]
    accepted = [e.external_id for e in uploads if e.status == 202]
    final = {}

    def all_final():
        for external_id in accepted:
            if external_id in final:
                continue
            reply = client.get(f"/api/v1/videos/{external_id}/")
            if reply.status == 200 and reply.body["status"] in FINAL_STATUSES:
                final[external_id] = reply.body
        return len(final) == len(accepted)

    try:
        wait_for_api(all_final, timeout=300, message="every accepted upload to be processed")
    except AssertionError:
        # Counted as lost below, next to the other counts.
        pass
    rejected = [e.external_id for e in uploads if e.status != 202]
    phantoms = [external_id for external_id in rejected
                if client.get(f"/api/v1/videos/{external_id}/").status != 404]
    lost = [external_id for external_id in accepted
            if external_id not in final or (final[external_id]["status"] == "failed"
                                            and not final[external_id]["failure_reason"])]
    budget = client.get("/api/v1/users/alice/privacy-budget/").body
    reported_spend = sum(e.body["epsilon_spent"] for e in recommendations if e.status == 200)

    statuses = Counter((e.kind, e.status, e.error_code) for e in exchanges)
    redis_outage = [e for e in exchanges if clock.within_outage("redis", e)]
    postgres_outage = [e for e in exchanges if clock.within_outage("postgres", e)]
    summary = {
        "requests": len(exchanges),
        "uploads": len(uploads),
        "uploads_accepted": len(accepted),
        "uploads_503": sum(1 for e in uploads if e.status == 503),
        "recommendations": len(recommendations),
        "recommendations_503": sum(1 for e in recommendations if e.status == 503),
        "lost": len(lost),
        "duplicated": len(phantoms),
        "slowest_request_s": round(max(e.seconds for e in exchanges), 2),
        "during_redis_outage": dict(Counter(f"{e.kind} {e.status}" for e in redis_outage)),
        "during_postgres_outage": dict(Counter(f"{e.kind} {e.status}" for e in postgres_outage)),
        "final_statuses": dict(Counter(body["status"] for body in final.values())),
        "by_status": {f"{kind} {status} {code or ''}".strip(): count
                      for (kind, status, code), count in sorted(statuses.items(), key=str)},
    }
    print(f"\nservice restarts: {summary}")

    assert lost == []
    assert phantoms == []
    assert budget["spent"] == pytest.approx(reported_spend)
    assert summary["slowest_request_s"] < REQUEST_TIMEOUT_S
    assert all(e.status != 0 for e in exchanges), "a request got no response"

    # then: during each outage the API returned 503 service_unavailable, not a hang
    assert any(e.kind == "upload" for e in redis_outage)
    for exchange in redis_outage:
        if exchange.kind == "upload":
            assert (exchange.status, exchange.error_code) == (503, "service_unavailable"), exchange
        else:
            assert exchange.status == 200, exchange
    assert postgres_outage
    for exchange in postgres_outage:
        assert (exchange.status, exchange.error_code) == (503, "service_unavailable"), exchange

    # then: once each service is back, the API responds again by itself
    calm_periods = {
        "redis": (clock.back["redis"] + RECOVERY_S, postgres_stopping),
        "postgres": (clock.back["postgres"] + RECOVERY_S, float("inf")),
    }
    for service, (start, end) in calm_periods.items():
        recovered = [e for e in exchanges if clock.between(e, start, end)]
        assert recovered, service
        assert all(e.status in (200, 202) for e in recovered), (service, [e for e in recovered if e.status >= 300])
