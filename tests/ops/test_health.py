"""Liveness and readiness, with the real database and broker up or down."""

import json

import pytest
from django.test import Client

from tests.ops.conftest import ServerProcess, free_port


@pytest.fixture
def client():
    return Client()


@pytest.mark.django_db
def test_live_responds_without_dependencies(client):
    response = client.get("/health/live")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_ready_when_database_and_broker_respond(client):
    response = client.get("/health/ready")

    assert response.status_code == 200, response.content
    assert response.json()["checks"] == {"database": "ok", "broker": "ok"}


@pytest.mark.django_db
def test_ready_is_503_when_broker_port_is_closed(client, settings):
    # given: a broker URL on a port of 127.0.0.1 where nothing listens
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/15"

    # when
    response = client.get("/health/ready")

    # then
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert response.json()["checks"] == {"database": "ok", "broker": "unavailable"}


def test_ready_is_503_when_database_is_down(tmp_path):
    # given: gunicorn whose DATABASE_URL points at a closed port of 127.0.0.1
    closed = free_port()
    server = ServerProcess(tmp_path / "gunicorn.log", DATABASE_URL=f"postgresql://recsys@127.0.0.1:{closed}/recsys").start()
    try:
        # when
        live_status, _ = server.get("/health/live")
        ready_status, body = server.get("/health/ready")
    finally:
        server.stop()

    # then
    assert live_status == 200
    assert ready_status == 503
    assert json.loads(body)["checks"] == {"database": "unavailable", "broker": "ok"}


@pytest.mark.django_db
def test_health_and_metrics_skip_https_redirect(settings):
    # given: production's redirect of plain HTTP to HTTPS
    settings.SECURE_SSL_REDIRECT = True
    client = Client()

    # when
    live = client.get("/health/live")
    metrics = client.get("/metrics")
    api = client.get("/api/v1/videos/")

    # then: probes and scrapers inside the network keep plain HTTP
    assert live.status_code == 200
    assert metrics.status_code == 200
    assert api.status_code == 301
