"""The evaluate command end to end on a small synthetic tenant, and its building blocks."""

import json
import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from privacy.mechanisms import compute_user_vector, privatise_user_vector
from privacy.models import LedgerEntry, PrivacyPolicy
from privacy.sampling import NoiseSampler
from privacy.services import get_privacy_policy
from recommend.evaluation.pipeline import (
    EvaluationUsers,
    PlatformModel,
    mechanism_plans,
    noise_seed,
    rank_non_private,
    rank_private,
)
from recommend.evaluation.runner import random_ranking_metrics
from recommend.evaluation.youtube8m_users import LabelUserSimulation, simulate_label_users
from recommend.fusion import fuse_embeddings
from recommend.models import ModelVersion
from recommend.training import TrainingConfig, train_tenant_models
from users.models import AppUser, Interaction
from videos.models import FUSED_DIM, Video, VideoStatus
from videos.youtube8m import MEAN_AUDIO_DIM, MEAN_RGB_DIM, build_example, write_tfrecord

TEXT_EXTRACTOR = "synthetic-text/1"
TEXT_DIM = 24
EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)


def _make_catalogue(tenant, *, videos: int = 48, users: int = 36, clusters: int = 4, seed: int = 0) -> None:
    """Create text-embedded videos in clusters and users who mostly watch one cluster."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, TEXT_DIM))
    rows = []
    for index in range(videos):
        cluster = index % clusters
        vector = (centres[cluster] + 0.3 * rng.standard_normal(TEXT_DIM)).astype(np.float32)
        fused = fuse_embeddings({"text": vector}, {"text": TEXT_EXTRACTOR})
        rows.append(Video(
            tenant=tenant, external_id=f"v{index}", title=f"video {index}", status=VideoStatus.PARTIAL,
            text_embedding=vector, text_extractor=TEXT_EXTRACTOR, fused_embedding=fused,
            fusion_version="default-random-projection/1", modality_reasons={"visual": "no_media", "audio": "no_media"},
        ))
    stored = Video.objects.bulk_create(rows)
    by_cluster = [[v for i, v in enumerate(stored) if i % clusters == c] for c in range(clusters)]

    interactions = []
    for user_index in range(users):
        user = AppUser.objects.create(tenant=tenant, external_id=f"u{user_index}")
        favourite = by_cluster[user_index % clusters]
        count = int(rng.integers(6, 11))
        for position in range(count):
            pool = favourite if rng.random() < 0.85 else stored
            video = pool[int(rng.integers(len(pool)))]
            interactions.append(Interaction(tenant=tenant, user=user, video=video, event_type="view",
                                            occurred_at=EPOCH + timedelta(minutes=position)))
    Interaction.objects.bulk_create(interactions)


def _write_youtube8m(folder, *, videos: int = 90, seed: int = 0) -> None:
    """Write TFRecords whose three labels (30 videos each) shift the features' means."""
    rng = np.random.default_rng(seed)
    label_means = {label: rng.standard_normal(MEAN_RGB_DIM + MEAN_AUDIO_DIM) for label in (1, 2, 3)}
    records = []
    for index in range(videos):
        label = 1 + index % 3
        features = label_means[label] + 0.5 * rng.standard_normal(MEAN_RGB_DIM + MEAN_AUDIO_DIM)
        records.append(build_example({
            "id": f"y{index}".encode(), "labels": [label],
            "mean_rgb": features[:MEAN_RGB_DIM].astype(np.float32),
            "mean_audio": features[MEAN_RGB_DIM:].astype(np.float32),
        }))
    folder.mkdir()
    write_tfrecord(folder / "part0000.tfrecord", records)


def _evaluate(tenant_name, out, youtube8m_dir, *extra):
    call_command(
        "evaluate", "--tenant", tenant_name, "--epsilons", "1,5,inf", "--out", str(out),
        "--youtube8m-dir", str(youtube8m_dir), "--users", "30", "--youtube8m-users", "15",
        "--youtube8m-train-users", "30", "--repetitions", "2", "--fusion-epochs", "1", "--ranker-epochs", "1",
        "--sasrec-epochs", "1", "--latency-users", "2", "--candidates", "20", "--history-length", "10",
        *extra, verbosity=0,
    )


@pytest.fixture
def synthetic_tenant(make_tenant):
    tenant = make_tenant("eval-synthetic")
    _make_catalogue(tenant)
    return tenant


@pytest.fixture
def youtube8m_dir(tmp_path):
    folder = tmp_path / "youtube8m"
    _write_youtube8m(folder)
    return folder


@pytest.mark.django_db
def test_evaluate_writes_report_plots_and_results(synthetic_tenant, youtube8m_dir, tmp_path):
    # given
    out = tmp_path / "report"

    # when
    _evaluate("eval-synthetic", out, youtube8m_dir)

    # then
    for name in ("report.md", "results.json", "microlens_privacy.png", "youtube8m_privacy.png",
                 "modality_ablation.png"):
        assert (out / name).is_file(), name
    for name in ("microlens_privacy.png", "youtube8m_privacy.png", "modality_ablation.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "charged ε" in report
    assert "paper's nominal ε per score" in report
    assert "Not measured: tenant eval-synthetic has no active fusion or ranker model" in report


@pytest.mark.django_db
def test_evaluate_results_hold_charged_epsilons(synthetic_tenant, youtube8m_dir, tmp_path):
    # when
    _evaluate("eval-synthetic", tmp_path / "report", youtube8m_dir)

    # then
    results = json.loads((tmp_path / "report" / "results.json").read_text(encoding="utf-8"))
    rows = results["microlens"]["privacy"]
    finite = [r for r in rows if not r["non_private"]]
    assert {(r["mechanism"], r["epsilon"]) for r in finite} == {
        (m, e) for m in ("laplace", "importance_weighted", "user_vector") for e in (1.0, 5.0)
    }
    for row in finite:
        assert row["epsilon"] == row["epsilon_requested"]
        assert row["epsilon_user_vector"] + row["epsilon_scores"] == pytest.approx(row["epsilon"])
        assert len(row["metrics"]["ndcg@10"]["values"]) == 2
    laplace = next(r for r in finite if r["mechanism"] == "laplace" and r["epsilon"] == 1.0)
    # b = min(k (2 + 2**-20), C) / epsilon_s with k = 20, C = 20, epsilon_s = 0.5: the whole-vector bound.
    assert laplace["nominal_epsilon_per_score"] == pytest.approx(0.5 / 20, rel=1e-9)
    assert {r["mechanism"] for r in rows if r["non_private"]} == {"laplace", "importance_weighted", "user_vector"}


@pytest.mark.django_db
def test_evaluate_results_cover_every_model_and_part(synthetic_tenant, youtube8m_dir, tmp_path):
    # when
    _evaluate("eval-synthetic", tmp_path / "report", youtube8m_dir)

    # then
    results = json.loads((tmp_path / "report" / "results.json").read_text(encoding="utf-8"))
    models = results["microlens"]["non_private"]
    assert set(models) == {"platform_ranker", "platform_user_vector", "popularity", "itemknn", "sasrec", "random"}
    for metrics in models.values():
        assert 0.0 <= metrics["ndcg@10"] <= 1.0
    assert results["microlens"]["data"]["sample_users"] == 30
    assert results["youtube8m"]["tenant"] == "eval-synthetic-yt8m"
    assert [r["variant"].split(" ")[0] for r in results["youtube8m"]["ablation"]] == [
        "visual", "audio", "fused,", "fused,"]
    assert results["latency"]["skipped"].startswith("tenant eval-synthetic has no active")
    assert results["machine"]["cores"] >= 1
    assert results["wall_seconds"] > 0


@pytest.mark.django_db
def test_evaluate_does_not_touch_active_models(synthetic_tenant, youtube8m_dir, tmp_path):
    # given
    fused_before = dict(Video.objects.filter(tenant=synthetic_tenant).values_list("pk", "fusion_version"))

    # when
    _evaluate("eval-synthetic", tmp_path / "report", youtube8m_dir, "--skip-latency")

    # then
    assert not ModelVersion.objects.filter(tenant=synthetic_tenant).exists()
    assert dict(Video.objects.filter(tenant=synthetic_tenant).values_list("pk", "fusion_version")) == fused_before


@pytest.mark.django_db
def test_evaluate_measures_latency_and_restores_policy(synthetic_tenant, youtube8m_dir, tmp_path):
    # given
    train_tenant_models(synthetic_tenant.pk, TrainingConfig(fusion_epochs=1, ranker_epochs=1, threads=1))
    policy_before = get_privacy_policy(synthetic_tenant)

    # when
    _evaluate("eval-synthetic", tmp_path / "report", youtube8m_dir, "--skip-youtube8m")

    # then
    results = json.loads((tmp_path / "report" / "results.json").read_text(encoding="utf-8"))
    latency_rows = results["latency"]["rows"]
    assert {(r["mechanism"], r["epsilon"]) for r in latency_rows} == {
        (m, e) for m in ("laplace", "importance_weighted", "user_vector") for e in (1.0, 5.0)
    }
    assert all(r["personalised"] == r["calls"] == 2 for r in latency_rows)
    assert all(r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] for r in latency_rows)
    policy_after = PrivacyPolicy.objects.get(tenant=synthetic_tenant)
    assert (policy_after.mechanism, policy_after.epsilon, policy_after.budget) == (
        policy_before.mechanism, policy_before.epsilon, policy_before.budget)
    entries = LedgerEntry.objects.filter(tenant=synthetic_tenant)
    assert entries.count() == 3 * 2 * 2 + 3
    assert all(entry.request_id.startswith("eval-") for entry in entries)


@pytest.mark.django_db
def test_evaluate_rejects_tenant_with_pending_videos(synthetic_tenant, youtube8m_dir, tmp_path):
    # given
    Video.objects.create(tenant=synthetic_tenant, external_id="late", title="late", status=VideoStatus.PENDING)

    # when / then
    with pytest.raises(CommandError, match="1 of 49 videos of tenant eval-synthetic are not embedded yet"):
        _evaluate("eval-synthetic", tmp_path / "report", youtube8m_dir)


@pytest.mark.django_db
def test_evaluate_rejects_unknown_tenant(tmp_path):
    with pytest.raises(CommandError, match="no tenant named 'nobody'; run import_microlens"):
        call_command("evaluate", "--tenant", "nobody", "--epsilons", "1", "--out", str(tmp_path), verbosity=0)


@pytest.mark.django_db
def test_evaluate_rejects_epsilon_above_the_limit(tmp_path):
    with pytest.raises(CommandError, match="epsilon must be greater than 0 and at most 10; got 20"):
        call_command("evaluate", "--tenant", "nobody", "--epsilons", "1,20", "--out", str(tmp_path), verbosity=0)


# ---------------------------------------------------------------------------
# Building blocks, without the database
# ---------------------------------------------------------------------------


def _toy_model_and_users(users: int = 12, items: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    fused = rng.standard_normal((items, FUSED_DIM)).astype(np.float32)
    fused /= np.linalg.norm(fused, axis=1, keepdims=True)
    model = PlatformModel(fused=fused, ranker=None, history_length=8, n_candidates=20, retrieval_fraction=0.5)
    histories = [rng.choice(items, size=6, replace=False) for _ in range(users)]
    evaluation_users = EvaluationUsers(
        histories=histories, history_weights=[np.full(6, 0.6) for _ in histories], excluded=histories,
        relevant=[{int(rng.integers(items))} for _ in histories],
    )
    return model, evaluation_users


def test_score_mechanisms_release_the_same_user_vector():
    # given
    model, users = _toy_model_and_users()
    plans = mechanism_plans(model, ["laplace", "importance_weighted"], 2.0, 10)
    embeddings, weights = model.recent(users, 0)
    seed = noise_seed(3, 0, 2.0, 0)

    # when
    released = [privatise_user_vector(embeddings, weights, plan, NoiseSampler.seeded(seed)) for plan in plans.values()]

    # then
    np.testing.assert_array_equal(released[0], released[1])


def test_rank_private_is_reproducible_with_a_seed():
    # given
    model, users = _toy_model_and_users()
    plans = mechanism_plans(model, ["laplace", "importance_weighted", "user_vector"], 2.0, 10)

    # when
    first = rank_private(model, users, plans, 10, seed=3, repetition=0)
    again = rank_private(model, users, plans, 10, seed=3, repetition=0)
    other = rank_private(model, users, plans, 10, seed=3, repetition=1)

    # then
    for name in plans:
        np.testing.assert_array_equal(first[name], again[name])
        assert first[name].shape == (len(users), 10)
    assert any(not np.array_equal(first[name], other[name]) for name in plans)


def test_rank_private_never_releases_seen_items():
    model, users = _toy_model_and_users()
    plans = mechanism_plans(model, ["laplace", "importance_weighted", "user_vector"], 1.0, 10)

    ranked = rank_private(model, users, plans, 10, seed=0, repetition=1)

    for name, lists in ranked.items():
        for row, seen in zip(lists, users.excluded):
            assert not set(row.tolist()) & set(seen.tolist()), name


def test_rank_non_private_user_vector_orders_by_similarity():
    # given
    model, users = _toy_model_and_users(users=1)

    # when
    ranked = rank_non_private(model, users, 5, scorer="user_vector")

    # then
    u = compute_user_vector(model.fused[users.histories[0]], users.history_weights[0], model.history_length)
    scores = model.fused @ u
    scores[users.excluded[0]] = -math.inf
    np.testing.assert_array_equal(ranked[0], np.argsort(-scores, kind="stable")[:5])


def test_random_ranking_metrics_are_exact_expectations():
    # given: 20 unseen items of 30, one of them relevant
    users = EvaluationUsers(histories=[np.arange(10)], history_weights=[np.ones(10)], excluded=[np.arange(10)],
                            relevant=[{15}])

    # when
    expected = random_ranking_metrics(users, 30)

    # then
    assert expected["precision@10"] == pytest.approx(1 / 20)
    assert expected["recall@10"] == pytest.approx(0.5)
    assert expected["hit_rate@10"] == pytest.approx(0.5)
    assert expected["hit_rate@20"] == pytest.approx(1.0)
    discounts = 1 / np.log2(np.arange(2, 12))
    assert expected["ndcg@10"] == pytest.approx(discounts.sum() / 20)


def test_noise_seed_differs_by_repetition_and_user():
    seeds = {noise_seed(0, repetition, 1.0, user) for repetition in range(3) for user in range(50)}

    assert len(seeds) == 150


def test_simulated_users_hold_out_label_videos():
    # given
    item_labels = [[1 + row % 3, 10] for row in range(120)]  # labels 1-3: 40 videos; label 10: all 120
    simulation = LabelUserSimulation(min_label_videos=30, max_label_videos=60, history_per_label=5)

    # when
    simulated = simulate_label_users(item_labels, 40, simulation, np.random.default_rng(0))

    # then
    for history, relevant, labels in zip(simulated.histories, simulated.relevant, simulated.interest_labels):
        assert set(labels) <= {1, 2, 3}
        assert len(history) == 5 * len(labels)
        pool = {row for row in range(120) if 1 + row % 3 in labels}
        assert relevant == pool - set(history.tolist())
    assert simulated.eligible_labels == [1, 2, 3]


def test_simulation_rejects_catalogue_without_eligible_labels():
    with pytest.raises(ValueError, match="no label is carried by 30 to 300 videos"):
        simulate_label_users([[1]] * 10, 5, LabelUserSimulation(), np.random.default_rng(0))
