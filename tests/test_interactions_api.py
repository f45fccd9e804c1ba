"""Interactions over REST: single events, batches, idempotency and bad input."""

import pytest

from users.models import AppUser, Interaction
from videos.models import Video, VideoStatus

pytestmark = pytest.mark.django_db


def test_single_interaction_is_recorded(api, tenant, make_ready_videos):
    make_ready_videos(tenant, 3)

    response = api.post("/api/v1/interactions/", {"user": "u1", "video": "v1", "event_type": "like"}, format="json")

    assert response.status_code == 201
    assert Interaction.objects.filter(user__external_id="u1", video__external_id="v1").count() == 1


def test_batch_with_same_idempotency_key_is_stored_once(api, tenant, make_ready_videos):
    make_ready_videos(tenant, 3)
    batch = {"idempotency_key": "batch-1", "interactions": [
        {"user": "u1", "video": "v0", "event_type": "view", "watch_seconds": 3.5},
        {"user": "u2", "video": "v1", "event_type": "complete"},
    ]}

    first = api.post("/api/v1/interactions/", batch, format="json")
    second = api.post("/api/v1/interactions/", batch, format="json")

    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["replayed"] is True
    assert Interaction.objects.count() == 2


def test_interaction_changes_history_version(api, tenant, make_ready_videos):
    make_ready_videos(tenant, 2)
    api.post("/api/v1/interactions/", {"user": "u1", "video": "v0", "event_type": "view"}, format="json")
    before = AppUser.objects.get(external_id="u1").history_version

    api.post("/api/v1/interactions/", {"user": "u1", "video": "v1", "event_type": "view"}, format="json")

    assert AppUser.objects.get(external_id="u1").history_version == before + 1


def test_unknown_video_stores_nothing(api, tenant, make_ready_videos):
    make_ready_videos(tenant, 1)
    batch = {"interactions": [
        {"user": "u1", "video": "v0", "event_type": "view"},
        {"user": "u1", "video": "missing", "event_type": "view"},
    ]}

    response = api.post("/api/v1/interactions/", batch, format="json")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "video_not_found"
    assert "'missing'" in response.json()["error"]["message"]
    assert Interaction.objects.count() == 0


def test_video_still_processing_is_rejected(api, tenant):
    Video.objects.create(tenant=tenant, external_id="busy", status=VideoStatus.PROCESSING)

    response = api.post("/api/v1/interactions/", {"user": "u1", "video": "busy", "event_type": "view"}, format="json")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "video_not_ready"
    assert Interaction.objects.count() == 0


@pytest.mark.parametrize("payload, field", [
    ({"user": "u1", "video": "v0", "event_type": "dance"}, "event_type"),
    ({"user": "u1", "video": "v0", "event_type": "view", "watch_seconds": -1}, "watch_seconds"),
    ({"user": "u1", "video": "v0", "event_type": "view", "watch_seconds": "NaN"}, "watch_seconds"),
    ({"video": "v0", "event_type": "view"}, "user"),
])
def test_invalid_interaction_names_the_field(api, tenant, make_ready_videos, payload, field):
    make_ready_videos(tenant, 1)

    response = api.post("/api/v1/interactions/", payload, format="json")

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert Interaction.objects.count() == 0


def test_batch_over_the_limit_is_rejected(api, tenant, make_ready_videos, settings):
    settings.INTERACTIONS_MAX_BATCH = 2
    make_ready_videos(tenant, 1)
    batch = {"interactions": [{"user": "u1", "video": "v0", "event_type": "view"}] * 3}

    response = api.post("/api/v1/interactions/", batch, format="json")

    assert response.status_code == 400
    assert "at most 2" in response.json()["error"]["message"]


def test_other_tenants_video_is_not_found(api, other_tenant, make_ready_videos):
    make_ready_videos(other_tenant, 1)

    response = api.post("/api/v1/interactions/", {"user": "u1", "video": "v0", "event_type": "view"}, format="json")

    assert response.status_code == 404
    assert Interaction.objects.count() == 0
