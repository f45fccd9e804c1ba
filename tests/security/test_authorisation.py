"""Authorisation and limits of every API endpoint.

tests/test_tenant_isolation.py covers requests without a key, with a revoked key,
with a malformed key, and reads of another tenant's objects. This module covers the
rest: other ways of presenting a key, writes that name another tenant's objects,
fields that clients may not set, and the limits on batch, upload, text and k sizes.
"""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from privacy.models import LedgerEntry, PrivacyPolicy
from privacy.services import get_privacy_policy, update_privacy_policy
from tests import media_factory as mf
from users.models import AppUser, Interaction
from users.services import InteractionInput, record_interactions
from videos.models import Video, VideoStatus

pytestmark = pytest.mark.django_db

ALL_ENDPOINTS = [
    ("post", "/api/v1/videos/"),
    ("get", "/api/v1/videos/v0/"),
    ("get", "/api/v1/videos/v0/similar/?k=2"),
    ("post", "/api/v1/interactions/"),
    ("get", "/api/v1/users/u0/recommendations/?k=2"),
    ("get", "/api/v1/users/u0/privacy-budget/"),
    ("delete", "/api/v1/users/u0/"),
    # Not an operation of the API, but it must still ask for a key first.
    ("get", "/api/v1/videos/"),
]


@pytest.fixture
def catalogues(tenant, other_tenant, make_ready_videos):
    """Give both tenants videos v0..v9 and a user u0 with a history."""
    make_ready_videos(tenant, 10, seed=1)
    make_ready_videos(other_tenant, 10, seed=2, prefix="v")
    for owner in (tenant, other_tenant):
        record_interactions(owner, [InteractionInput("u0", f"v{i}", "like", None, None) for i in range(3)])
    return tenant, other_tenant


def client_with(header: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    return client


def call(client, method: str, url: str):
    return getattr(client, method)(url)


def assert_unchanged(tenant):
    """Assert that u0 of `tenant` still has its 3 interactions and nothing was charged."""
    assert AppUser.objects.filter(tenant=tenant, external_id="u0").exists()
    assert Interaction.objects.filter(tenant=tenant).count() == 3
    assert LedgerEntry.objects.filter(tenant=tenant).count() == 0


# Ways of presenting a key that must not authenticate.


@pytest.mark.parametrize("method, url", ALL_ENDPOINTS)
def test_wrong_secret_with_valid_prefix_is_rejected(method, url, tenant, catalogues):
    prefix = tenant.raw_api_key.split("_")[1]
    forged = f"rk_{prefix}_{'A' * 43}"

    response = call(client_with(f"Api-Key {forged}"), method, url)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"
    assert_unchanged(tenant)


@pytest.mark.parametrize("keyword", ["Bearer", "Token", "api-key", "Basic"])
@pytest.mark.parametrize("method, url", ALL_ENDPOINTS)
def test_other_authorization_schemes_are_unauthenticated(method, url, keyword, tenant, catalogues):
    response = call(client_with(f"{keyword} {tenant.raw_api_key}"), method, url)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert response["WWW-Authenticate"] == "Api-Key"


@pytest.mark.parametrize("method, url", ALL_ENDPOINTS)
def test_key_in_query_string_is_ignored(method, url, tenant, catalogues):
    separator = "&" if "?" in url else "?"

    response = call(APIClient(), method, f"{url}{separator}api_key={tenant.raw_api_key}")

    assert response.status_code == 401


@pytest.mark.parametrize("method, url", ALL_ENDPOINTS)
def test_key_of_deactivated_tenant_is_rejected(method, url, tenant, api, catalogues):
    tenant.is_active = False
    tenant.save(update_fields=["is_active"])

    response = call(api, method, url)

    assert response.status_code == 401
    assert "deactivated" in response.json()["error"]["message"]
    assert_unchanged(tenant)


def test_list_of_videos_is_not_an_operation(api, catalogues):
    response = api.get("/api/v1/videos/?limit=100000")

    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


# Writes that name another tenant's objects.


def test_interaction_with_other_tenants_video_is_not_found(api, other_tenant, make_ready_videos):
    # given: only the other tenant has a video "theirs"
    make_ready_videos(other_tenant, 1, prefix="theirs")

    # when
    response = api.post("/api/v1/interactions/", {"user": "u9", "video": "theirs0", "event_type": "like"},
                        format="json")

    # then
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "video_not_found"
    assert Interaction.objects.count() == 0
    assert not AppUser.objects.filter(external_id="u9").exists()
    assert Video.objects.get(external_id="theirs0").popularity == 0


def test_upload_with_other_tenants_external_id_is_separate(api, tenant, other_tenant, make_ready_videos, tmp_path):
    # given: the other tenant owns a ready video "shared-id"
    (theirs,) = make_ready_videos(other_tenant, 1, prefix="shared-id-")

    # when
    with open(mf.make_normal_mp4(tmp_path), "rb") as handle:
        response = api.post("/api/v1/videos/", {"file": handle, "external_id": theirs.external_id},
                            format="multipart")

    # then: no conflict reveals the other tenant's id, and its row is untouched
    assert response.status_code == 202, response.content
    assert Video.objects.filter(external_id=theirs.external_id).count() == 2
    theirs.refresh_from_db()
    assert theirs.tenant_id == other_tenant.pk
    assert theirs.status == VideoStatus.READY
    assert Video.objects.get(tenant=tenant, external_id=theirs.external_id).status == VideoStatus.PENDING


def test_delete_erases_only_own_user_of_same_id(api, tenant, other_tenant, catalogues):
    response = api.delete("/api/v1/users/u0/")

    assert response.status_code == 204
    assert not AppUser.objects.filter(tenant=tenant, external_id="u0").exists()
    assert AppUser.objects.filter(tenant=other_tenant, external_id="u0").exists()
    assert Interaction.objects.filter(tenant=other_tenant).count() == 3


def test_recommendations_contain_only_own_videos(api, tenant, other_tenant, make_ready_videos):
    # given: distinct id prefixes, so a video of the other tenant would be visible
    make_ready_videos(tenant, 30, seed=1, prefix="mine-")
    make_ready_videos(other_tenant, 30, seed=1, prefix="theirs-")
    record_interactions(tenant, [InteractionInput("u0", f"mine-{i}", "like", None, None) for i in range(3)])

    body = api.get("/api/v1/users/u0/recommendations/?k=20").json()
    similar = api.get("/api/v1/videos/mine-0/similar/?k=20").json()["similar"]

    assert body["personalised"] is True
    assert all(video_id.startswith("mine-") for video_id in body["videos"])
    assert all(item["id"].startswith("mine-") for item in similar)


# Fields that clients may not set.


def test_upload_ignores_server_fields(api, tenant, other_tenant, tmp_path):
    # given: an upload body that also names status, counters, embeddings and privacy settings
    forged = {
        "status": "ready", "status_reason": "", "popularity": "1000000", "attempts": "9",
        "fused_embedding": "[" + ",".join(["1"] * 128) + "]", "visual_embedding": "[1,2,3]",
        "tenant": str(other_tenant.pk), "tenant_id": str(other_tenant.pk), "epsilon": "10", "budget": "1000",
        "fusion_version": "forged", "processed_at": "2020-01-01T00:00:00Z",
    }

    # when
    with open(mf.make_normal_mp4(tmp_path), "rb") as handle:
        response = api.post("/api/v1/videos/", {"file": handle, "external_id": "forged", "title": "t", **forged},
                            format="multipart")

    # then
    assert response.status_code == 202, response.content
    video = Video.objects.get(external_id="forged")
    assert video.tenant_id == tenant.pk
    assert video.status == VideoStatus.PENDING
    assert video.popularity == 0
    assert video.attempts == 0
    assert video.fused_embedding is None
    assert video.visual_embedding is None
    assert video.fusion_version == ""
    assert video.processed_at is None
    assert response.json()["status"] == "pending"
    assert not PrivacyPolicy.objects.filter(tenant=tenant, budget=1000).exists()


def test_interaction_ignores_server_fields(api, tenant, other_tenant, catalogues):
    # given
    policy_before = get_privacy_policy(tenant).editable_values()
    popularity_before = Video.objects.get(tenant=tenant, external_id="v5").popularity
    forged = {"tenant": other_tenant.pk, "epsilon": 10, "budget": 1000, "popularity": 10**9,
              "history_version": 0, "created_at": "2020-01-01T00:00:00Z", "mechanism": "none"}

    # when
    response = api.post("/api/v1/interactions/", {"user": "u0", "video": "v5", "event_type": "like", **forged},
                        format="json")
    batch = api.post("/api/v1/interactions/", {
        "tenant": other_tenant.pk, "epsilon": 10,
        "interactions": [{"user": "u0", "video": "v6", "event_type": "view", "tenant": other_tenant.pk,
                          "popularity": 10**9}],
    }, format="json")

    # then: both are stored for the caller's tenant, with only the server's counting
    assert response.status_code == 201, response.content
    assert batch.status_code == 201, batch.content
    assert Interaction.objects.filter(tenant=tenant).count() == 5
    assert Interaction.objects.filter(tenant=other_tenant).count() == 3
    assert Video.objects.get(tenant=tenant, external_id="v5").popularity == popularity_before + 1
    assert Video.objects.get(tenant=tenant, external_id="v6").popularity == 1
    assert get_privacy_policy(tenant).editable_values() == policy_before


def test_recommendation_query_cannot_raise_epsilon_or_budget(api, tenant, catalogues):
    # given
    update_privacy_policy(get_privacy_policy(tenant), changes={"epsilon": 0.5, "budget": 1.0}, actor=None)
    policy_before = get_privacy_policy(tenant).editable_values()

    # when
    raised = api.get("/api/v1/users/u0/recommendations/?k=5&epsilon=5")
    ignored = api.get("/api/v1/users/u0/recommendations/?k=5&budget=1000&mechanism=none&max_k=1000")

    # then
    assert raised.status_code == 400
    assert raised.json()["error"]["code"] == "invalid_epsilon"
    assert ignored.status_code == 200
    assert ignored.json()["epsilon_spent"] == pytest.approx(0.5)
    assert ignored.json()["budget"]["budget"] == pytest.approx(1.0)
    assert ignored.json()["mechanism"] == policy_before["mechanism"]
    assert get_privacy_policy(tenant).editable_values() == policy_before
    assert LedgerEntry.objects.filter(tenant=tenant).count() == 1


# Resource limits.


@pytest.mark.parametrize("size_offset, status", [(0, 201), (1, 400)])
def test_interaction_batch_limit(api, tenant, catalogues, settings, size_offset, status):
    settings.INTERACTIONS_MAX_BATCH = 5
    items = [{"user": "u1", "video": f"v{i % 10}", "event_type": "view"} for i in range(5 + size_offset)]

    response = api.post("/api/v1/interactions/", {"interactions": items}, format="json")

    assert response.status_code == status, response.content
    stored = Interaction.objects.filter(tenant=tenant, user__external_id="u1").count()
    assert stored == (5 if status == 201 else 0)
    if status == 400:
        assert "at most 5" in response.json()["error"]["message"]


def test_request_body_over_memory_limit_is_rejected(api, tenant, catalogues, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    items = [{"user": "u1", "video": "v1", "event_type": "view"}] * 100

    response = api.post("/api/v1/interactions/", {"interactions": items}, format="json")

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert "1000 bytes" in response.json()["error"]["message"]
    assert Interaction.objects.filter(tenant=tenant, user__external_id="u1").count() == 0


def test_too_many_form_fields_get_json_error(api, tenant, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 2
    fields = {"external_id": "v1", "title": "t", "description": "d", "extra": "x"}

    response = api.post("/api/v1/videos/", fields, format="multipart")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "too_many_fields"
    assert "DATA_UPLOAD_MAX_NUMBER_FIELDS" in response.json()["error"]["message"]


@pytest.mark.parametrize("limit_offset, status", [(0, 202), (-1, 413)])
def test_upload_size_limit_is_exact(api, tenant, tmp_path, settings, limit_offset, status):
    path = mf.make_normal_mp4(tmp_path)
    settings.UPLOAD_MAX_BYTES = path.stat().st_size + limit_offset

    upload = SimpleUploadedFile("clip.mp4", path.read_bytes(), content_type="video/mp4")
    response = api.post("/api/v1/videos/", {"file": upload, "external_id": "sized"}, format="multipart")

    assert response.status_code == status, response.content
    assert Video.objects.filter(external_id="sized").exists() == (status == 202)
    if status == 413:
        assert str(settings.UPLOAD_MAX_BYTES) in response.json()["error"]["message"]


@pytest.mark.parametrize("field, value", [
    ("title", "x" * 100_001),
    ("description", "x" * 100_001),
    ("tags", ",".join(f"t{i}" for i in range(101))),
    ("tags", "x" * 201),
    ("external_id", "x" * 256),
    ("external_id", "../../etc/passwd"),
])
def test_upload_text_limits(api, tmp_path, field, value):
    with open(mf.make_normal_mp4(tmp_path), "rb") as handle:
        response = api.post("/api/v1/videos/", {"file": handle, field: value}, format="multipart")

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert Video.objects.count() == 0


def test_k_is_limited_by_policy_max_k(api, tenant, catalogues):
    update_privacy_policy(get_privacy_policy(tenant), changes={"max_k": 5}, actor=None)

    at_limit = api.get("/api/v1/users/u0/recommendations/?k=5")
    over_limit = api.get("/api/v1/users/u0/recommendations/?k=6")

    assert at_limit.status_code == 200
    assert len(at_limit.json()["videos"]) == 5
    assert over_limit.status_code == 400
    assert over_limit.json()["error"]["code"] == "invalid_parameter"
    assert "from 1 to 5" in over_limit.json()["error"]["message"]
    assert LedgerEntry.objects.filter(tenant=tenant).count() == 1


def test_k_is_limited_by_recommend_max_k(api, tenant, make_ready_videos, settings):
    # given: a policy allowing 50 videos, and a server limit of 8
    settings.RECOMMEND_MAX_K = 8
    make_ready_videos(tenant, 60, seed=4)
    record_interactions(tenant, [InteractionInput("u0", "v1", "like", None, None)])

    recommendations = api.get("/api/v1/users/u0/recommendations/?k=9")
    similar = api.get("/api/v1/videos/v1/similar/?k=9")
    similar_at_limit = api.get("/api/v1/videos/v1/similar/?k=8")

    assert get_privacy_policy(tenant).max_k > 8
    assert recommendations.status_code == 400
    assert "from 1 to 8" in recommendations.json()["error"]["message"]
    assert similar.status_code == 400
    assert len(similar_at_limit.json()["similar"]) == 8


def test_request_id_over_128_characters_is_rejected(api, tenant, catalogues):
    response = api.get(f"/api/v1/users/u0/recommendations/?request_id={'r' * 129}")

    assert response.status_code == 400
    assert LedgerEntry.objects.filter(tenant=tenant).count() == 0


# Endpoints outside the tenant API.


def test_admin_requires_staff_login(client):
    response = client.get("/admin/privacy/ledgerentry/")

    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_admin_ignores_api_keys(client, tenant):
    response = client.get("/admin/privacy/ledgerentry/", HTTP_AUTHORIZATION=f"Api-Key {tenant.raw_api_key}")

    assert response.status_code == 302
