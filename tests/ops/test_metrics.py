"""The /metrics endpoint after real requests: latency, recommendations, privacy counters, queues."""

import subprocess
import sys

import pytest
from django.test import Client

from recsys_platform.metrics import read_queue_depths
from tests.conftest import REPO_ROOT
from tests.ops.conftest import ServerProcess, metric_value, process_environment

VIDEO_ROUTE = "api/v1/videos/<str:video_id>/"


@pytest.fixture
def scrape():
    client = Client()

    def _scrape() -> str:
        response = client.get("/metrics")
        assert response.status_code == 200, response.content
        assert response["Content-Type"].startswith("text/plain")
        return response.content.decode()

    return _scrape


def value(exposition: str, name: str, **labels) -> float:
    return metric_value(exposition, name, labels) or 0.0


@pytest.mark.django_db
def test_metrics_count_http_requests_by_route(api, tenant, make_ready_videos, scrape):
    # given
    make_ready_videos(tenant, 1)
    before = scrape()

    # when
    assert Client().get("/health/live").status_code == 200
    assert api.get("/api/v1/videos/v0/").status_code == 200
    assert api.get("/api/v1/videos/missing/").status_code == 404
    after = scrape()

    # then
    count = "recsys_http_request_seconds_count"
    live = {"method": "GET", "route": "health/live", "status": "200"}
    found = {"method": "GET", "route": VIDEO_ROUTE, "status": "200"}
    missing = {"method": "GET", "route": VIDEO_ROUTE, "status": "404"}
    assert value(after, count, **live) - value(before, count, **live) == 1
    assert value(after, count, **found) - value(before, count, **found) == 1
    assert value(after, count, **missing) - value(before, count, **missing) == 1
    assert value(after, "recsys_http_request_seconds_sum", **found) > value(before, "recsys_http_request_seconds_sum", **found)


@pytest.mark.django_db
def test_metrics_count_recommendations_epsilon_and_exhaustion(api, tenant, make_ready_videos, scrape):
    from privacy.services import create_privacy_policy

    # given: a budget that pays for exactly one personalised response per window
    create_privacy_policy(tenant, values={"epsilon": 1.0, "budget": 1.0})
    make_ready_videos(tenant, 20)
    before = scrape()

    # when: one paid response, then a new interaction and a request the budget cannot pay
    liked = {"user": "u1", "video": "v1", "event_type": "like"}
    assert api.post("/api/v1/interactions/", liked, format="json").status_code in (200, 201)
    first = api.get("/api/v1/users/u1/recommendations/?k=5").json()
    viewed = {"user": "u1", "video": "v2", "event_type": "view"}
    assert api.post("/api/v1/interactions/", viewed, format="json").status_code in (200, 201)
    second = api.get("/api/v1/users/u1/recommendations/?k=5").json()
    after = scrape()

    # then
    assert first["personalised"] is True, first
    assert second["personalised"] is False, second
    assert second["fallback_reason"] == "budget_exhausted"
    mechanism = first["mechanism"]

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("recsys_recommendations_total", tenant="acme", mechanism=mechanism, personalised="true") == 1
    assert delta("recsys_recommendations_total", tenant="acme", mechanism=mechanism, personalised="false") == 1
    assert delta("recsys_epsilon_spent_total", tenant="acme", mechanism=mechanism) == pytest.approx(first["epsilon_spent"])
    assert delta("recsys_budget_exhaustions_total", tenant="acme") == 1
    assert delta("recsys_fallback_responses_total", tenant="acme", reason="budget_exhausted") == 1


@pytest.mark.django_db
def test_metrics_report_queue_depth(scrape):
    exposition = scrape()

    for queue in ("default", "ingestion", "training"):
        assert metric_value(exposition, "recsys_queue_depth", {"queue": queue}) is not None, queue


def test_queue_depth_counts_waiting_messages(isolated_broker):
    from recsys_platform.celery import app
    from workers.maintenance import ping_task

    # given: three messages on a queue that no worker of this broker consumes
    with app.connection_for_write(url=isolated_broker) as connection:
        for index in range(3):
            ping_task.apply_async((f"depth-{index}",), queue="training", connection=connection)

    # when
    depths = read_queue_depths(broker_url=isolated_broker)

    # then
    assert depths["training"] == 3
    assert depths["ingestion"] == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    "header, status",
    [(None, 401), ("Bearer wrong-token-value", 401), ("Basic s3cret-metrics-token", 401),
     ("Bearer s3cret-metrics-token", 200)],
    ids=["no-header", "wrong-token", "wrong-scheme", "right-token"],
)
def test_metrics_token_is_required_when_set(settings, header, status):
    settings.METRICS_TOKEN = "s3cret-metrics-token"
    headers = {"HTTP_AUTHORIZATION": header} if header else {}

    response = Client().get("/metrics", **headers)

    assert response.status_code == status
    if status == 401:
        assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.django_db(transaction=True)
def test_gunicorn_workers_share_metrics_in_multiprocess_mode(tmp_path):
    # given: two gunicorn worker processes writing to one PROMETHEUS_MULTIPROC_DIR
    multiproc_dir = tmp_path / "prometheus"
    multiproc_dir.mkdir()
    server = ServerProcess(tmp_path / "gunicorn.log", workers=2, PROMETHEUS_MULTIPROC_DIR=multiproc_dir).start()
    try:
        # when: twenty requests, spread by the kernel over both workers
        for _ in range(20):
            assert server.get("/health/ready")[0] == 200
        scrapes = [server.get("/metrics") for _ in range(4)]
    finally:
        server.stop()

    # then: every scrape, whichever worker serves it, counts all twenty
    labels = {"method": "GET", "route": "health/ready", "status": "200"}
    for status, exposition in scrapes:
        assert status == 200
        assert metric_value(exposition, "recsys_http_request_seconds_count", labels) == 20
    assert len(list(multiproc_dir.glob("histogram_*.db"))) >= 1


def test_production_refuses_to_start_without_metrics_token():
    # given: production settings with a secret key but no metrics token
    env = process_environment(RECSYS_PRODUCTION="true", DJANGO_SECRET_KEY="x" * 50, METRICS_TOKEN="")
    code = "import django; django.setup()"

    # when
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=120)

    # then
    assert result.returncode != 0
    assert "METRICS_TOKEN must be set when RECSYS_PRODUCTION is on" in result.stderr
