"""Every endpoint rejects missing or revoked keys and hides other tenants' objects."""

import pytest
from rest_framework.test import APIClient

from users.models import AppUser
from users.services import revoke_api_key

pytestmark = pytest.mark.django_db

OWNED_ENDPOINTS = [
    ("get", "/api/v1/videos/v0/"),
    ("get", "/api/v1/videos/v0/similar/?k=2"),
    ("get", "/api/v1/users/u0/recommendations/?k=2"),
    ("get", "/api/v1/users/u0/privacy-budget/"),
    ("delete", "/api/v1/users/u0/"),
]
ALL_ENDPOINTS = OWNED_ENDPOINTS + [("post", "/api/v1/videos/"), ("post", "/api/v1/interactions/")]


@pytest.fixture
def owned_objects(tenant, make_ready_videos):
    from users.services import InteractionInput, record_interactions

    make_ready_videos(tenant, 5)
    record_interactions(tenant, [InteractionInput("u0", "v1", "like", None, None)])


@pytest.mark.parametrize("method, url", ALL_ENDPOINTS)
def test_request_without_key_is_unauthorised(method, url, owned_objects):
    response = getattr(APIClient(), method)(url)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


@pytest.mark.parametrize("method, url", ALL_ENDPOINTS)
def test_revoked_key_is_rejected(method, url, tenant, api, owned_objects):
    revoke_api_key(tenant.api_keys.get())

    response = getattr(api, method)(url)

    assert response.status_code == 401
    assert "revoked" in response.json()["error"]["message"]


@pytest.mark.parametrize("method, url", ALL_ENDPOINTS)
def test_malformed_key_is_rejected(method, url, owned_objects):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Api-Key not-a-key")

    response = getattr(client, method)(url)

    assert response.status_code == 401


@pytest.mark.parametrize("method, url", OWNED_ENDPOINTS)
def test_other_tenant_gets_not_found(method, url, other_api, owned_objects):
    response = getattr(other_api, method)(url)

    assert response.status_code == 404


def test_other_tenant_cannot_erase_user(other_api, owned_objects):
    other_api.delete("/api/v1/users/u0/")

    assert AppUser.objects.filter(external_id="u0").exists()
