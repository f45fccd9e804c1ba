"""Fixtures of the privacy tests: a tenant, its users, its policy and a staff user."""

import numpy as np
import pytest


@pytest.fixture
def privacy_tenant(db):
    from users.services import create_tenant

    return create_tenant("privacy-tests")


@pytest.fixture
def make_app_user(privacy_tenant):
    from users.models import AppUser

    def _make(external_id: str = "alice", tenant=None):
        return AppUser.objects.create(tenant=tenant or privacy_tenant, external_id=external_id)

    return _make


@pytest.fixture
def app_user(make_app_user):
    return make_app_user("alice")


@pytest.fixture
def set_policy(privacy_tenant):
    """Give the tenant a policy with the given values, saved without an audit row."""
    from privacy.services import get_privacy_policy

    def _set(**values):
        policy = get_privacy_policy(privacy_tenant)
        for name, value in values.items():
            setattr(policy, name, value)
        policy.full_clean()
        policy.save()
        return policy

    return _set


@pytest.fixture
def staff_user(db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser("officer", "officer@example.com", "a-long-test-password")


@pytest.fixture
def officer_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def make_videos_with_embeddings(privacy_tenant):
    """Create ready videos with random unit fused embeddings, as the audit reads them."""
    from videos.models import FUSED_DIM, Video, VideoStatus

    def _make(count: int, *, seed: int = 0):
        rng = np.random.default_rng(seed)
        vectors = rng.standard_normal((count, FUSED_DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return Video.objects.bulk_create(
            [
                Video(
                    tenant=privacy_tenant,
                    external_id=f"audit-{i}",
                    status=VideoStatus.READY,
                    fused_embedding=vectors[i],
                    fusion_version="test",
                )
                for i in range(count)
            ]
        )

    return _make
