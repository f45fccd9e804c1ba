"""Celery tasks. Each takes primary keys, re-fetches its rows and is safe to run twice."""

import logging
import time

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction

logger = logging.getLogger(__name__)

# Only failures of the database connection are worth retrying: a broken file or a
# model error fails the same way every time.
TRANSIENT_ERRORS = (OperationalError, InterfaceError)
EXTRACTION_HARD_LIMIT_S = 600
# Training is the longest task; settings keep the Redis visibility timeout above it.
TRAINING_HARD_LIMIT_S = settings.CELERY_TRAINING_HARD_TIME_LIMIT_S
TRAINING_SOFT_LIMIT_S = max(TRAINING_HARD_LIMIT_S - 300, TRAINING_HARD_LIMIT_S // 2)
EXTRACTION_SOFT_LIMIT_S = 540


def _embedders():
    from workers.extractors.pipeline import get_embedders

    return get_embedders(
        settings.VISUAL_MODEL_WEIGHTS,
        settings.TEXT_MODEL_DIR,
        max_tokens=settings.TEXT_MAX_TOKENS,
        num_threads=settings.TORCH_THREADS,
    )


def _limits():
    from workers.extractors.pipeline import ExtractionLimits

    return ExtractionLimits(
        max_duration_s=settings.UPLOAD_MAX_DURATION_S,
        max_width=settings.UPLOAD_MAX_WIDTH,
        max_height=settings.UPLOAD_MAX_HEIGHT,
        frame_count=settings.EXTRACTION_FRAME_COUNT,
        frame_size=settings.EXTRACTION_FRAME_SIZE,
        audio_sample_rate=settings.EXTRACTION_AUDIO_SAMPLE_RATE,
        max_audio_seconds=settings.EXTRACTION_MAX_AUDIO_S,
    )


def _on_extraction_failure(self, exc, task_id, args, kwargs, einfo):
    # Called once retries are exhausted (or for an error that is not retried), so the
    # video never stays "processing" without a reason.
    from videos.services import mark_video_failed

    video_id = args[0] if args else kwargs.get("video_id")
    try:
        mark_video_failed(
            video_id,
            reason="extraction_retries_exhausted",
            message=f"Extraction failed after {self.request.retries} retries: {exc.__class__.__name__}",
        )
    except TRANSIENT_ERRORS:
        logger.error("Could not record the failure of video %s: database unavailable", video_id)


@shared_task(
    bind=True,
    name="workers.tasks.extract_video_embeddings_task",
    queue="ingestion",
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=2,
    retry_backoff_max=120,
    retry_jitter=True,
    max_retries=6,
    soft_time_limit=EXTRACTION_SOFT_LIMIT_S,
    time_limit=EXTRACTION_HARD_LIMIT_S,
    on_failure=_on_extraction_failure,
)
def extract_video_embeddings_task(self, video_id: int) -> str | None:
    """Extract visual, text and audio embeddings of one uploaded video and fuse them."""
    from recommend.services import fuse_video_embeddings
    from videos.models import Video
    from videos.services import mark_video_failed, mark_video_processing, store_video_embeddings
    from workers.extractors.errors import MediaError
    from workers.extractors.pipeline import extract_video

    started = time.perf_counter()
    video = mark_video_processing(video_id)
    if video is None:
        logger.warning("Video %s no longer exists; skipping extraction", video_id)
        return None
    if not video.media:
        mark_video_failed(video_id, reason="no_media", message="The video has no media file to extract from.")
        return "failed"
    logger.info("Extracting video %s (attempt %s)", video_id, video.attempts, extra={"video_id": video_id})

    try:
        result = extract_video(
            video.media.path,
            title=video.title,
            description=video.description,
            tags=video.tags,
            limits=_limits(),
            embedders=_embedders(),
        )
    except MediaError as error:
        mark_video_failed(video_id, reason=error.code, message=str(error))
        return "failed"
    except FileNotFoundError:
        mark_video_failed(video_id, reason="media_missing", message="The stored media file is missing.")
        return "failed"
    except SoftTimeLimitExceeded:
        mark_video_failed(
            video_id,
            reason="extraction_timed_out",
            message=f"Extraction took longer than {EXTRACTION_SOFT_LIMIT_S} s.",
        )
        return "failed"
    except TRANSIENT_ERRORS:
        raise
    except Exception as error:  # noqa: BLE001 - any extractor bug must fail this video only
        logger.exception("Extraction of video %s raised an unexpected error", video_id)
        mark_video_failed(
            video_id, reason="extraction_error", message=f"Extraction raised {error.__class__.__name__}."
        )
        return "failed"

    with transaction.atomic():
        video = Video.objects.select_for_update().filter(pk=video_id).first()
        if video is None:
            logger.warning("Video %s was deleted during extraction; discarding embeddings", video_id)
            return None
        extractors = result.extractors
        fused, fusion_version = fuse_video_embeddings(video.tenant_id, result.embeddings, extractors)
        store_video_embeddings(
            video,
            embeddings=result.embeddings,
            extractors=extractors,
            missing=result.missing,
            fused=fused,
            fusion_version=fusion_version,
            messages=result.messages,
        )

    elapsed = time.perf_counter() - started
    logger.info(
        "Video %s is %s after %.2f s", video_id, video.status, elapsed,
        extra={"video_id": video_id, "missing": ",".join(sorted(result.missing))},
    )
    return video.status


@shared_task(
    bind=True,
    name="workers.tasks.embed_video_texts_task",
    queue="ingestion",
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=2,
    retry_backoff_max=120,
    max_retries=6,
    soft_time_limit=540,
    time_limit=600,
)
def embed_video_texts_task(self, video_ids: list[int]) -> int:
    """Compute text (and fused) embeddings for a batch of videos that have no media file."""
    from recommend.services import fuse_video_embeddings
    from videos.models import Video
    from videos.services import store_video_embeddings
    from workers.extractors.text import TEXT_EXTRACTOR_VERSION, build_video_text

    started = time.perf_counter()
    videos = list(Video.objects.filter(pk__in=video_ids, media="").order_by("pk"))
    if not videos:
        logger.warning("None of the %s videos of this batch exist any more; skipping", len(video_ids))
        return 0
    texts = [build_video_text(v.title, v.description, v.tags) for v in videos]
    vectors = _embedders().text.embed_batch(texts)

    with transaction.atomic():
        for video, vector in zip(videos, vectors):
            embeddings = {} if vector is None else {"text": vector}
            missing = {"visual": "no_media", "audio": "no_media"}
            if vector is None:
                missing["text"] = "empty_text"
            extractors = {"text": TEXT_EXTRACTOR_VERSION}
            fused, fusion_version = fuse_video_embeddings(video.tenant_id, embeddings, extractors)
            store_video_embeddings(video, embeddings=embeddings, extractors=extractors, missing=missing,
                                   fused=fused, fusion_version=fusion_version)

    elapsed = time.perf_counter() - started
    logger.info("Embedded the texts of %s videos in %.2f s", len(videos), elapsed)
    return len(videos)


@shared_task(
    bind=True,
    name="workers.tasks.train_tenant_models_task",
    queue="training",
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=10,
    max_retries=3,
    soft_time_limit=TRAINING_SOFT_LIMIT_S,
    time_limit=TRAINING_HARD_LIMIT_S,
)
def train_tenant_models_task(self, tenant_id: int) -> dict | None:
    """Train and activate a new fusion and ranker version for one tenant."""
    from recommend.training import train_tenant_models
    from users.models import Tenant

    if not Tenant.objects.filter(pk=tenant_id).exists():
        logger.warning("Tenant %s no longer exists; skipping training", tenant_id)
        return None
    return train_tenant_models(tenant_id)
