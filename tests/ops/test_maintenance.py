"""Beat's maintenance tasks against the real database, and a real beat process."""

import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.apps import apps
from django.conf import settings
from django.utils import timezone

from recsys_platform.celery import app
from recsys_platform.schedules import heartbeat_path
from tests import media_factory as mf
from tests.conftest import REPO_ROOT, wait_for
from tests.ops.conftest import process_environment
from users.models import AppUser, Interaction, Tenant
from videos.models import Video, VideoStatus
from workers import maintenance


def add_interactions(tenant, videos, count: int, *, created_at=None) -> None:
    user, _ = AppUser.objects.get_or_create(tenant=tenant, external_id="u1")
    created_at = created_at or timezone.now()
    Interaction.objects.bulk_create([
        Interaction(tenant=tenant, user=user, video=videos[i % len(videos)], event_type="view",
                    occurred_at=created_at, created_at=created_at)
        for i in range(count)
    ])


def add_model_version(tenant, created_at) -> None:
    ModelVersion = apps.get_model("recommend", "ModelVersion")
    ModelVersion.objects.create(tenant=tenant, kind="ranker", version=1, artifact=b"", created_at=created_at)


# --- schedule --------------------------------------------------------------------


def test_beat_schedule_names_registered_tasks_with_limits():
    app.loader.import_default_modules()

    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        task = app.tasks[entry["task"]]
        assert task.name.endswith("_task")
        assert task.queue == entry["options"]["queue"] == "default"
        assert 0 < task.soft_time_limit < task.time_limit
        assert entry["options"]["expires"] == entry["schedule"].total_seconds()


# --- retraining ------------------------------------------------------------------


@pytest.mark.django_db
def test_retraining_selects_tenants_with_enough_new_interactions(make_tenant, make_ready_videos):
    # given
    now = timezone.now()
    never_trained = make_tenant("never-trained")
    add_interactions(never_trained, make_ready_videos(never_trained, 2), 3)
    trained_since = make_tenant("trained-since")
    videos = make_ready_videos(trained_since, 2)
    add_interactions(trained_since, videos, 5, created_at=now - timedelta(days=2))
    add_model_version(trained_since, now - timedelta(days=1))
    add_interactions(trained_since, videos, 3)
    trained_recently = make_tenant("trained-recently")
    videos = make_ready_videos(trained_recently, 2)
    add_interactions(trained_recently, videos, 5, created_at=now - timedelta(days=2))
    add_model_version(trained_recently, now - timedelta(days=1))
    add_interactions(trained_recently, videos, 2)
    inactive = make_tenant("inactive")
    add_interactions(inactive, make_ready_videos(inactive, 2), 9)
    Tenant.objects.filter(pk=inactive.pk).update(is_active=False)

    # when
    due = maintenance.tenants_due_for_retraining(3)

    # then
    assert due == [never_trained.pk, trained_since.pk]


@pytest.mark.django_db
def test_retraining_task_enqueues_one_training_per_due_tenant(make_tenant, make_ready_videos, settings, monkeypatch):
    from workers.tasks import train_tenant_models_task

    # given
    settings.RETRAIN_MIN_NEW_INTERACTIONS = 2
    busy = make_tenant("busy")
    add_interactions(busy, make_ready_videos(busy, 2), 2)
    make_tenant("quiet")
    sent = []
    monkeypatch.setattr(train_tenant_models_task, "apply_async", lambda args, **options: sent.append((args, options)))

    # when
    result = maintenance.schedule_tenant_retraining_task.apply().get()

    # then
    assert result == [busy.pk]
    assert sent == [((busy.pk,), {"expires": settings.RETRAIN_INTERVAL_S})]


# --- budget window roll-over -----------------------------------------------------


@pytest.mark.django_db
def test_rollover_deletes_old_windows_and_keeps_ledger(tenant, make_ready_videos):
    from privacy.services import spend_privacy_budget, store_privatised_user_vector

    BudgetAccount = apps.get_model("privacy", "BudgetAccount")
    PrivatisedUserVector = apps.get_model("privacy", "PrivatisedUserVector")
    LedgerEntry = apps.get_model("privacy", "LedgerEntry")

    # given: charges 40 days ago and today, each with a stored privatised vector
    user = AppUser.objects.create(tenant=tenant, external_id="u1")
    now = timezone.now()
    for index, when in enumerate([now - timedelta(days=40), now]):
        spend = spend_privacy_budget(
            tenant=tenant, user=user, request_id=f"r{index}", epsilon=0.5, mechanism="user_vector",
            parameters={}, released=["v0"], now=when,
        )
        assert spend.status == "charged"
        store_privatised_user_vector(user, spend.window_start, index, [0.1] * 128, 0.5, spend.entry)

    # when
    deleted = maintenance.roll_over_budget_windows(timedelta(days=30), now=now)
    deleted_again = maintenance.roll_over_budget_windows(timedelta(days=30), now=now)

    # then
    assert deleted == {"budget_accounts": 1, "privatised_user_vectors": 1}
    assert deleted_again == {"budget_accounts": 0, "privatised_user_vectors": 0}
    assert BudgetAccount.objects.filter(user=user).count() == 1
    assert BudgetAccount.objects.get(user=user).window_start > now - timedelta(days=2)
    assert PrivatisedUserVector.objects.filter(user=user).count() == 1
    assert LedgerEntry.objects.filter(user=user).count() == 2


# --- re-extraction ---------------------------------------------------------------


@pytest.mark.django_db
def test_reextract_resets_only_outdated_uploaded_videos(tenant, settings, django_capture_on_commit_callbacks):
    current = maintenance.current_extractor_versions()

    def video(external_id, *, media="videos/clip.mp4", status=VideoStatus.READY, **extractors):
        fields = {f"{m}_extractor": extractors.get(m, current[m]) for m in current}
        return Video.objects.create(tenant=tenant, external_id=external_id, media=media, status=status, **fields)

    # given
    outdated = video("old-visual", visual="efficientnet-lite0-imagenet/0")
    outdated_partial = video("old-text-no-audio", status=VideoStatus.PARTIAL, text="all-minilm-l6-v2/0", audio="")
    up_to_date = video("current")
    no_audio = video("no-audio", audio="")
    imported = video("imported", media="", visual="youtube8m-inception/1")
    in_flight = video("in-flight", status=VideoStatus.PROCESSING, visual="efficientnet-lite0-imagenet/0")

    # when
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        count = maintenance.reextract_outdated_videos_task.apply().get()

    # then
    assert count == 2
    assert len(callbacks) == 2
    statuses = dict(Video.objects.values_list("external_id", "status"))
    assert statuses[outdated.external_id] == VideoStatus.PENDING
    assert statuses[outdated_partial.external_id] == VideoStatus.PENDING
    assert statuses[up_to_date.external_id] == VideoStatus.READY
    assert statuses[no_audio.external_id] == VideoStatus.READY
    assert statuses[imported.external_id] == VideoStatus.READY
    assert statuses[in_flight.external_id] == VideoStatus.PROCESSING


@pytest.mark.django_db
def test_reextract_sends_at_most_one_batch(tenant, settings, django_capture_on_commit_callbacks):
    settings.REEXTRACT_BATCH_SIZE = 2
    for index in range(3):
        Video.objects.create(tenant=tenant, external_id=f"v{index}", media="videos/clip.mp4",
                             status=VideoStatus.READY, visual_extractor="efficientnet-lite0-imagenet/0")

    with django_capture_on_commit_callbacks(execute=False):
        count = maintenance.reextract_outdated_videos_task.apply().get()

    assert count == 2
    assert Video.objects.filter(status=VideoStatus.READY).count() == 1


# --- stale pending uploads ---------------------------------------------------------


@pytest.mark.django_db
def test_requeue_sends_only_stale_pending_uploads(tenant, settings, django_capture_on_commit_callbacks):
    settings.PENDING_REQUEUE_AFTER_S = 3600
    long_ago = timezone.now() - timedelta(hours=2)

    def video(external_id, *, status=VideoStatus.PENDING, media="videos/clip.mp4", changed=long_ago):
        created = Video.objects.create(tenant=tenant, external_id=external_id, media=media, status=status)
        # updated_at is set on every save, so the age is written afterwards.
        Video.objects.filter(pk=created.pk).update(updated_at=changed)
        return created

    # given
    stale = video("stale")
    recent = video("recent", changed=timezone.now() - timedelta(minutes=5))
    processing = video("processing", status=VideoStatus.PROCESSING)
    failed = video("failed", status=VideoStatus.FAILED)
    imported = video("imported", media="")

    # when
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        count = maintenance.requeue_stale_pending_videos_task.apply().get()
    with django_capture_on_commit_callbacks(execute=False) as callbacks_again:
        count_again = maintenance.requeue_stale_pending_videos_task.apply().get()

    # then
    assert count == 1
    assert len(callbacks) == 1
    assert count_again == 0
    assert len(callbacks_again) == 0
    changed = dict(Video.objects.values_list("external_id", "updated_at"))
    assert changed[stale.external_id] > long_ago
    assert changed[recent.external_id] < timezone.now() - timedelta(minutes=4)
    assert Video.objects.get(pk=processing.pk).status == VideoStatus.PROCESSING
    assert Video.objects.get(pk=failed.pk).status == VideoStatus.FAILED
    assert Video.objects.get(pk=imported.pk).status == VideoStatus.PENDING


@pytest.mark.django_db(transaction=True)
def test_requeued_upload_is_extracted_by_worker(api, tmp_path, settings, live_worker):
    # given: an upload extracted once, then back to pending with its message lost, as
    # after a web crash between commit and enqueue
    settings.PENDING_REQUEUE_AFTER_S = 300
    with open(mf.make_normal_mp4(tmp_path), "rb") as handle:
        assert api.post("/api/v1/videos/", {"file": handle, "external_id": "lost", "title": "Lost message"},
                        format="multipart").status_code == 202
    wait_for(lambda: Video.objects.filter(external_id="lost", status=VideoStatus.READY).exists(), timeout=120,
             message="the first extraction")
    Video.objects.filter(external_id="lost").update(status=VideoStatus.PENDING, visual_embedding=None,
                                                    updated_at=timezone.now() - timedelta(hours=1))

    # when
    count = maintenance.requeue_stale_pending_videos_task.apply().get()

    # then
    assert count == 1
    video = wait_for(lambda: Video.objects.filter(external_id="lost", status=VideoStatus.READY).first(),
                     timeout=120, message="the extraction after the requeue")
    assert video.visual_embedding is not None


# --- beat ------------------------------------------------------------------------


def healthcheck(path, max_age_s) -> subprocess.CompletedProcess:
    # The beat health check of docker-compose.yml.
    return subprocess.run(
        [sys.executable, "-m", "recsys_platform.schedules", str(path), str(max_age_s)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )


def test_beat_heartbeat_tracks_a_real_beat_process(tmp_path, isolated_broker):
    # given: beat on the private broker, ticking at least every second
    schedule = tmp_path / "beat-schedule"
    heartbeat = heartbeat_path(schedule)
    log = open(tmp_path / "beat.log", "wb")
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "recsys_platform", "beat", f"--schedule={schedule}",
         "--max-interval=1", "--loglevel=INFO"],
        cwd=REPO_ROOT, env=process_environment(CELERY_BROKER_URL=isolated_broker),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        # when
        wait_for(heartbeat.exists, timeout=60, message="the beat heartbeat file")
        first = heartbeat.stat().st_mtime
        wait_for(lambda: heartbeat.stat().st_mtime > first, timeout=10, message="a second tick")
        alive = healthcheck(heartbeat, 180)
    finally:
        beat.send_signal(signal.SIGTERM)
        beat.wait(timeout=30)
        log.close()
    time.sleep(1.5)
    stopped = healthcheck(heartbeat, 1)

    # then
    assert alive.returncode == 0, alive.stderr
    assert stopped.returncode == 1
    assert "old" in stopped.stderr
    assert healthcheck(tmp_path / "missing.heartbeat", 180).returncode == 1
