"""State changes of videos: uploads, extraction results, reprocessing."""

import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.core.files import File
from django.db import IntegrityError, transaction
from django.utils import timezone

from videos.errors import BrokerUnavailable, DuplicateVideo, InvalidMedia, UploadTooLarge
from videos.models import MODALITIES, Video, VideoStatus

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int
    max_duration_s: float
    max_width: int
    max_height: int

    @classmethod
    def from_settings(cls) -> "UploadLimits":
        return cls(
            max_bytes=settings.UPLOAD_MAX_BYTES,
            max_duration_s=settings.UPLOAD_MAX_DURATION_S,
            max_width=settings.UPLOAD_MAX_WIDTH,
            max_height=settings.UPLOAD_MAX_HEIGHT,
        )


def create_video_upload(
    *,
    tenant,
    uploaded_file,
    title: str = "",
    description: str = "",
    tags: list[str] | None = None,
    external_id: str | None = None,
    limits: UploadLimits | None = None,
) -> Video:
    """Validate an uploaded file by probing its content, store it, and enqueue extraction.

    Raises ``UploadTooLarge``, ``InvalidMedia`` (with the probe's code) or
    ``DuplicateVideo``. The extraction task is enqueued only after the row commits.
    """
    # Probing is a pure media check shared with the extraction worker. It imports no
    # Django app, so this import does not make videos depend on the worker tasks.
    from workers.extractors.media import MediaError, probe_media

    limits = limits or UploadLimits.from_settings()
    size = uploaded_file.size
    if size is not None and size > limits.max_bytes:
        raise UploadTooLarge(
            f"The file is {size} bytes, over the limit of {limits.max_bytes} bytes; "
            "upload a shorter or more compressed video."
        )
    if not size:
        raise InvalidMedia("The uploaded file is empty; send the video's bytes.", code="empty_file")

    with _local_path(uploaded_file) as path:
        try:
            info = probe_media(
                path,
                max_duration_s=limits.max_duration_s,
                max_width=limits.max_width,
                max_height=limits.max_height,
            )
        except MediaError as error:
            raise InvalidMedia(str(error), code=error.code) from None

    external_id = external_id or uuid.uuid4().hex
    video = Video(
        tenant=tenant,
        external_id=external_id,
        title=title,
        description=description,
        tags=list(tags or []),
        duration_s=info.duration_s,
        width=info.width,
        height=info.height,
        has_audio=info.has_audio,
        status=VideoStatus.PENDING,
    )
    extension = _extension_for(info.format_name)
    uploaded_file.seek(0)
    try:
        with transaction.atomic():
            video.media.save(f"{uuid.uuid4().hex}{extension}", File(uploaded_file), save=False)
            video.save()
    except IntegrityError:
        _delete_media_file(video)
        raise DuplicateVideo(
            f"A video with external_id {external_id!r} already exists for this tenant; "
            "use another external_id or fetch the existing video."
        ) from None

    # Enqueued after the commit, so the worker always finds the row. If the broker is
    # down the upload is undone and the caller gets a 503 to retry, rather than a video
    # that would stay pending with no task to process it. Inside a caller's
    # transaction the enqueue waits for that transaction to commit.
    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(lambda: enqueue_extraction(video.pk))
        return video
    try:
        enqueue_extraction(video.pk)
    except Exception as error:  # noqa: BLE001 - any broker failure must undo the upload
        logger.warning("Could not enqueue extraction of video %s: %s", video.pk, error.__class__.__name__)
        _delete_media_file(video)
        video.delete()
        raise BrokerUnavailable() from None

    logger.info("Accepted upload of video %s for tenant %s", video.pk, tenant.pk)
    return video


def enqueue_extraction(video_id: int) -> None:
    from workers.tasks import extract_video_embeddings_task

    extract_video_embeddings_task.delay(video_id)


def _extension_for(format_name: str) -> str:
    names = format_name.split(",")
    if "mp4" in names or "mov" in names:
        return ".mp4"
    if "webm" in names or "matroska" in names:
        return ".mkv" if "webm" not in names else ".webm"
    return ".bin"


class _local_path:
    """Yield a filesystem path for an uploaded file, copying it to a temp file if needed."""

    def __init__(self, uploaded_file):
        self.uploaded_file = uploaded_file
        self.temp_path = None

    def __enter__(self) -> str:
        temporary_path = getattr(self.uploaded_file, "temporary_file_path", None)
        if temporary_path is not None:
            return temporary_path()
        name = getattr(self.uploaded_file, "name", None)
        if isinstance(name, str) and os.path.isfile(name):
            return name
        handle, self.temp_path = tempfile.mkstemp(prefix="upload-")
        with os.fdopen(handle, "wb") as out:
            self.uploaded_file.seek(0)
            shutil.copyfileobj(self.uploaded_file, out)
        return self.temp_path

    def __exit__(self, *exc_info) -> None:
        if self.temp_path is not None:
            os.unlink(self.temp_path)


def _delete_media_file(video: Video) -> None:
    if video.media and video.media.name:
        video.media.storage.delete(video.media.name)


def mark_video_processing(video_id: int) -> Video | None:
    """Mark a video as processing and count the attempt; return None if it is gone."""
    with transaction.atomic():
        video = Video.objects.select_for_update().filter(pk=video_id).first()
        if video is None:
            return None
        video.status = VideoStatus.PROCESSING
        video.attempts += 1
        video.save(update_fields=["status", "attempts", "updated_at"])
    return video


def mark_video_failed(video_id: int, *, reason: str, message: str) -> None:
    """Record a failed extraction with its machine-readable reason."""
    updated = Video.objects.filter(pk=video_id).update(
        status=VideoStatus.FAILED,
        status_reason=reason,
        status_message=message[:2000],
        processed_at=timezone.now(),
        updated_at=timezone.now(),
    )
    if updated:
        logger.warning("Video %s failed: %s", video_id, reason)


def store_video_embeddings(
    video: Video,
    *,
    embeddings: dict[str, np.ndarray],
    extractors: dict[str, str],
    missing: dict[str, str],
    fused: np.ndarray | None,
    fusion_version: str,
    messages: dict[str, str] | None = None,
) -> Video:
    """Write every modality's embedding (or its absence) and the fused embedding.

    Running it twice with the same inputs leaves the same row: each column is
    overwritten, never appended to. The status becomes ``ready`` when every modality
    is present, ``partial`` when some are missing but a fused embedding exists, and
    ``failed`` with reason ``no_modality`` when none could be extracted.
    """
    for modality in MODALITIES:
        vector = embeddings.get(modality)
        setattr(video, f"{modality}_embedding", None if vector is None else vector.astype(np.float32))
        setattr(video, f"{modality}_extractor", extractors.get(modality, "") if vector is not None else "")

    video.modality_reasons = {m: missing[m] for m in MODALITIES if m in missing}
    video.fused_embedding = fused
    video.fusion_version = fusion_version if fused is not None else ""
    if fused is None:
        video.status = VideoStatus.FAILED
        video.status_reason = "no_modality"
        video.status_message = "No modality could be extracted: " + "; ".join(
            f"{m}: {(messages or {}).get(m, code)}" for m, code in sorted(missing.items())
        )
    elif video.modality_reasons:
        video.status = VideoStatus.PARTIAL
        video.status_reason = "missing_modality"
        video.status_message = "; ".join(
            f"{m}: {(messages or {}).get(m, code)}" for m, code in sorted(video.modality_reasons.items())
        )
    else:
        video.status = VideoStatus.READY
        video.status_reason = ""
        video.status_message = ""
    video.processed_at = timezone.now()
    video.save()
    return video


def reprocess_videos(video_ids: list[int]) -> int:
    """Reset videos to pending and enqueue their extraction again; return the count."""
    with transaction.atomic():
        ids = list(
            Video.objects.filter(pk__in=video_ids).exclude(media="").values_list("pk", flat=True)
        )
        Video.objects.filter(pk__in=ids).update(
            status=VideoStatus.PENDING, status_reason="", status_message="", updated_at=timezone.now()
        )
        for video_id in ids:
            transaction.on_commit(lambda video_id=video_id: enqueue_extraction(video_id))
    logger.info("Reprocessing %s videos", len(ids))
    return len(ids)
