"""Worker faults: killed pool processes and workers, failing tasks and duplicate messages.

Every test runs real ``celery worker`` processes on a private Redis and the test
database. Tasks are sent to that Redis directly, so no other worker can take them.
Settings relied on: ``task_acks_late`` with ``task_reject_on_worker_lost`` (a task
whose process dies goes back to the queue), and Redis's visibility timeout (a
message delivered to a worker that died is delivered again after that many seconds).
"""

import os
import signal
import time
import uuid

import numpy as np
import psycopg
import pytest

from tests import media_factory as mf
from tests.conftest import _test_database_url, wait_for
from tests.reliability.processes import Worker, control_app
from videos.models import MODALITIES, Video, VideoStatus

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

TASK_NAME = "workers.tasks.extract_video_embeddings_task"
FINAL = {VideoStatus.READY, VideoStatus.PARTIAL, VideoStatus.FAILED}
SERVABLE = {VideoStatus.READY, VideoStatus.PARTIAL}
# Columns that change on every run by design: the attempt counter and timestamps.
VOLATILE_COLUMNS = {"attempts", "updated_at", "processed_at"}
# Seconds after which Redis hands an unacknowledged message to another consumer.
VISIBILITY_TIMEOUT_S = 61


def send_extraction(broker_url: str, video_id: int, *, task_id: str | None = None, retries: int = 0) -> str:
    """Publish one extraction message to `broker_url` and return its task id."""
    app = control_app(broker_url)
    try:
        result = app.send_task(TASK_NAME, args=[video_id], queue="ingestion",
                               task_id=task_id or uuid.uuid4().hex, retries=retries)
        return result.id
    finally:
        app.close()


@pytest.fixture
def start_worker(tmp_path, shared_media_root):
    """Return a function that starts a worker on the ingestion queue; every one is stopped at teardown."""
    started: list[Worker] = []

    def _start(name: str, broker_url: str, **extra_env) -> Worker:
        worker = Worker(
            "ingestion", f"{name}-{uuid.uuid4().hex[:6]}", str(shared_media_root), tmp_path / f"{name}.log",
            broker_url=broker_url, extra_env=extra_env,
        )
        started.append(worker)
        return worker.start()

    yield _start
    for worker in started:
        if worker.process is not None:
            worker.stop()


def video_row(video_id: int) -> dict:
    return Video.objects.filter(pk=video_id).values().get()


def wait_until_final(video_id: int, timeout: float, *, attempts: int = 1) -> Video:
    return wait_for(
        lambda: Video.objects.filter(pk=video_id, status__in=FINAL, attempts__gte=attempts).first(),
        timeout=timeout, interval=0.5, message=f"video {video_id} to end after {attempts} attempts",
    )


def test_killed_pool_process_reruns_task_once(tenant, store_pending_video, long_clip, private_redis, start_worker):
    # given: a fresh worker, whose first task loads the models before decoding a 16 s clip
    worker = start_worker("pool-kill", private_redis.url(1))
    video = store_pending_video(tenant, long_clip, "pool-kill")
    send_extraction(private_redis.url(1), video.pk)
    wait_for(lambda: Video.objects.filter(pk=video.pk, status=VideoStatus.PROCESSING).exists(),
             timeout=60, interval=0.1, message="the extraction to start")
    (child,) = worker.child_pids()

    # when: the pool process dies with SIGKILL in the middle of the extraction
    os.kill(child, signal.SIGKILL)
    video = wait_until_final(video.pk, timeout=300, attempts=2)

    # then: the task ran again in a new pool process and stored one set of embeddings
    assert video.status in SERVABLE, (video.status, video.status_reason, video.status_message)
    assert video.attempts == 2
    assert Video.objects.filter(tenant=tenant, external_id="pool-kill").count() == 1
    assert video.fused_embedding is not None
    assert video.visual_embedding is not None
    assert worker.process.poll() is None
    assert child not in worker.child_pids()
    assert "WorkerLostError" in worker.log_text()


@pytest.mark.slow
def test_killed_worker_message_is_delivered_again(tenant, store_pending_video, long_clip, private_redis,
                                                  start_worker):
    # given: a worker in the middle of an extraction
    broker_url = private_redis.url(2)
    first = start_worker("killed", broker_url)
    video = store_pending_video(tenant, long_clip, "worker-kill")
    send_extraction(broker_url, video.pk)
    wait_for(lambda: Video.objects.filter(pk=video.pk, status=VideoStatus.PROCESSING).exists(),
             timeout=60, interval=0.1, message="the extraction to start")
    killed_at = time.monotonic()

    # when: the whole worker (parent and pool) dies with SIGKILL, so no process returns
    # the message, and a new worker with a short visibility timeout takes over. The
    # settings require that timeout to exceed every task's hard time limit.
    first.kill()
    second = start_worker(
        "replacement", broker_url,
        CELERY_TASK_HARD_TIME_LIMIT_S=30, CELERY_TRAINING_HARD_TIME_LIMIT_S=60,
        CELERY_VISIBILITY_TIMEOUT_S=VISIBILITY_TIMEOUT_S,
    )
    video = wait_until_final(video.pk, timeout=360, attempts=2)
    redelivered_after = time.monotonic() - killed_at
    print(f"message delivered again and processed {redelivered_after:.0f} s after the kill")

    # then: the second worker processed the same message to the end
    assert video.status in SERVABLE, (video.status, video.status_reason, video.status_message)
    assert video.attempts == 2
    assert Video.objects.filter(tenant=tenant, external_id="worker-kill").count() == 1
    assert f"Extracting video {video.pk}" in second.log_text()
    assert redelivered_after >= VISIBILITY_TIMEOUT_S


def hold_key_share_lock(video_id: int) -> psycopg.Connection:
    """Open a transaction that takes FOR KEY SHARE on the video's row, and return its connection.

    The extraction task's SELECT ... FOR UPDATE conflicts with that lock, but the
    plain UPDATE that records a failure does not (PostgreSQL's row lock table), so
    only the start of the task fails.
    """
    connection = psycopg.connect(_test_database_url(), autocommit=False)
    connection.execute("SELECT id FROM videos_video WHERE id = %s FOR KEY SHARE", [video_id])
    return connection


def test_task_failing_after_last_retry_stores_reason(tenant, store_pending_video, private_redis, start_worker,
                                                     tmp_path):
    # given: a worker whose database sessions give up waiting for a row lock after
    # 1 s, and a video whose row another transaction keeps locked
    broker_url = private_redis.url(3)
    worker = start_worker("lock-timeout", broker_url, PGOPTIONS="-c lock_timeout=1000")
    video = store_pending_video(tenant, mf.make_normal_mp4(tmp_path), "locked")
    lock = hold_key_share_lock(video.pk)
    try:
        # when: the message is marked as retry 6, which is the task's max_retries
        send_extraction(broker_url, video.pk, retries=6)
        failed = wait_for(lambda: Video.objects.filter(pk=video.pk, status=VideoStatus.FAILED).first(),
                          timeout=120, message="the video to be marked failed")
    finally:
        lock.rollback()
        lock.close()
        worker.stop()

    # then: no further retry was sent, and the failure is stored with its reason
    assert failed.status_reason == "extraction_retries_exhausted"
    assert "6 retries" in failed.status_message
    assert "OperationalError" in failed.status_message
    assert "Retry in" not in worker.log_text()
    assert failed.attempts == 0, "the attempt counter is written in the transaction that failed"


@pytest.mark.slow
def test_task_failing_every_time_retries_six_times(tenant, store_pending_video, private_redis, start_worker,
                                                   tmp_path):
    # given: as above, but the message starts at retry 0
    broker_url = private_redis.url(4)
    worker = start_worker("retries", broker_url, PGOPTIONS="-c lock_timeout=1000")
    video = store_pending_video(tenant, mf.make_normal_mp4(tmp_path), "always-locked")
    lock = hold_key_share_lock(video.pk)
    try:
        # when: every attempt fails on the lock. The backoff is 2 s doubling, with
        # jitter, so the 6 retries wait at most 2 + 4 + 8 + 16 + 32 + 64 = 126 s
        send_extraction(broker_url, video.pk)
        failed = wait_for(lambda: Video.objects.filter(pk=video.pk, status=VideoStatus.FAILED).first(),
                          timeout=240, interval=1.0, message="the video to be marked failed")
    finally:
        lock.rollback()
        lock.close()
        worker.stop()

    # then
    retries = [line for line in worker.log_text().splitlines() if "] retry: Retry in" in line]
    print(f"retries logged: {len(retries)}")
    assert len(retries) == 6
    assert failed.status_reason == "extraction_retries_exhausted"
    assert "6 retries" in failed.status_message


def comparable(row: dict) -> dict:
    return {name: value for name, value in row.items() if name not in VOLATILE_COLUMNS}


def test_duplicate_delivery_changes_no_column(tenant, store_pending_video, private_redis, start_worker, tmp_path):
    # given: a video extracted once
    broker_url = private_redis.url(5)
    start_worker("duplicates", broker_url)
    video = store_pending_video(tenant, mf.make_normal_mp4(tmp_path), "twice", title="A tone and a pattern")
    task_id = send_extraction(broker_url, video.pk)
    wait_until_final(video.pk, timeout=180)
    first = video_row(video.pk)

    # when: the same message (same task id) is delivered a second time
    send_extraction(broker_url, video.pk, task_id=task_id)
    wait_until_final(video.pk, timeout=180, attempts=2)
    second = video_row(video.pk)

    # then: every column but the attempt counter and timestamps is unchanged
    assert first["status"] == VideoStatus.READY
    assert second["attempts"] == 2
    for modality in (*MODALITIES, "fused"):
        column = f"{modality}_embedding"
        assert np.array_equal(np.asarray(first.pop(column)), np.asarray(second.pop(column))), column
    assert comparable(second) == comparable(first)
    assert Video.objects.filter(tenant=tenant).count() == 1
