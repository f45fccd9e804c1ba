"""MicroLens import, training, versioned models and activation without a restart."""

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from recommend import artifacts
from recommend.models import ModelKind, ModelVersion
from recommend.services import active_fusion
from recommend.training import TrainingConfig, activate_version, train_tenant_models
from users.models import AppUser, Interaction, Tenant
from users.services import InteractionInput, record_interactions
from videos.models import Video

pytestmark = pytest.mark.django_db


@pytest.fixture
def microlens_dir(tmp_path):
    # Three users in the MicroLens-50k layout: user<TAB>items oldest first, and titles.
    (tmp_path / "MicroLens-50k_pairs.tsv").write_text("u1\t10 11 12 13\nu2\t11 12 13\nu3\t12 10 11 13 12\n")
    (tmp_path / "MicroLens-50k_titles.csv").write_text(
        "item,title\n10,cute dog runs\n11,cat sleeps # pets\n12,\"funny, dance\"\n13,🐶\n"
    )
    return tmp_path


def test_import_microlens_keeps_order_and_is_idempotent(microlens_dir):
    call_command("import_microlens", str(microlens_dir), "--tenant", "ml", "--no-embed")
    call_command("import_microlens", str(microlens_dir), "--tenant", "ml", "--no-embed")

    tenant = Tenant.objects.get(name="ml")
    assert Video.objects.filter(tenant=tenant).count() == 4
    assert AppUser.objects.filter(tenant=tenant).count() == 3
    assert Interaction.objects.filter(tenant=tenant).count() == 12
    order = list(Interaction.objects.filter(user__external_id="u3").order_by("occurred_at")
                 .values_list("video__external_id", flat=True))
    assert order == ["12", "10", "11", "13", "12"]
    assert Video.objects.get(tenant=tenant, external_id="12").title == "funny, dance"


def test_import_microlens_rejects_missing_folder(tmp_path):
    with pytest.raises(CommandError, match="not found"):
        call_command("import_microlens", str(tmp_path / "absent"), "--tenant", "ml")


def test_train_rejects_unknown_tenant():
    with pytest.raises(CommandError, match="No tenant named 'ghost'"):
        call_command("train", "--tenant", "ghost")


@pytest.fixture
def trained_tenant(tenant, make_ready_videos):
    videos = make_ready_videos(tenant, 120, seed=11)
    rng = np.random.default_rng(0)
    for video in videos:
        video.text_embedding = rng.standard_normal(384).astype(np.float32)
        video.text_extractor = "test-text/1"
        video.save(update_fields=["text_embedding", "text_extractor"])
    items = []
    for user in range(30):
        for position in rng.choice(120, size=8, replace=False):
            items.append(InteractionInput(f"user{user}", f"v{position}", "view", None, None))
    record_interactions(tenant, items)
    return tenant


def test_training_stores_versions_with_metrics_and_activates_them(trained_tenant):
    result = train_tenant_models(trained_tenant.pk, TrainingConfig(fusion_epochs=1, ranker_epochs=1, batch_size=64))

    fusion = ModelVersion.objects.get(tenant=trained_tenant, kind=ModelKind.FUSION, is_active=True)
    ranker = ModelVersion.objects.get(tenant=trained_tenant, kind=ModelKind.RANKER, is_active=True)
    assert result["fusion"] == fusion.label
    assert ranker.metrics["videos"] == 120
    assert set(fusion.metrics["modality_weights"]) == {"visual", "text", "audio"}
    assert Video.objects.filter(tenant=trained_tenant, fusion_version=fusion.label).count() == 120


def test_activated_version_is_served_without_restart(trained_tenant, monkeypatch):
    monkeypatch.setattr(artifacts, "RECHECK_S", 0.0)
    config = TrainingConfig(fusion_epochs=1, ranker_epochs=1, batch_size=64)
    train_tenant_models(trained_tenant.pk, config)
    first = active_fusion(trained_tenant.pk).version

    second_result = train_tenant_models(trained_tenant.pk, config, activate=False)
    unchanged = active_fusion(trained_tenant.pk).version
    activate_version(ModelVersion.objects.get(tenant=trained_tenant, kind=ModelKind.FUSION, version=2))
    switched = active_fusion(trained_tenant.pk).version

    assert first == "fusion/v1"
    assert second_result["fusion"] == "fusion/v2"
    assert unchanged == "fusion/v1"
    assert switched == "fusion/v2"
