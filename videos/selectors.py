"""Read-only queries over videos, always scoped to one tenant."""

from django.db import connection, transaction
from pgvector.django import CosineDistance

from videos.errors import VideoNotFound, VideoNotReady
from videos.models import SERVABLE_STATUSES, Video


def get_video(tenant, external_id: str) -> Video:
    # PostgreSQL text cannot hold NUL, so no stored id contains one, and querying
    # with it would raise DataError.
    video = None if "\x00" in external_id else Video.objects.filter(tenant=tenant, external_id=external_id).first()
    if video is None:
        raise VideoNotFound(f"No video with id {external_id!r} exists for this tenant.")
    return video


def similar_videos(video: Video, k: int, *, ef_search: int = 100) -> list[tuple[Video, float]]:
    """Return the k nearest servable videos of the same tenant by fused embedding.

    Uses the HNSW index with pgvector's iterative scan, so the tenant and status
    filters still yield k rows when they discard most of the index's candidates.
    """
    if video.fused_embedding is None:
        raise VideoNotReady(
            f"Video {video.external_id!r} is {video.status} and has no fused embedding yet; "
            "retry once its status is ready or partial."
        )
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL hnsw.ef_search = %s", [max(ef_search, k)])
            cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        rows = list(
            Video.objects.filter(tenant_id=video.tenant_id, status__in=SERVABLE_STATUSES)
            .exclude(pk=video.pk)
            .exclude(fused_embedding__isnull=True)
            .annotate(distance=CosineDistance("fused_embedding", video.fused_embedding))
            .order_by("distance")
            .only("id", "external_id", "title", "status")[:k]
        )
    # relaxed_order may return rows slightly out of order; sort the final k exactly.
    rows.sort(key=lambda v: v.distance)
    return [(v, 1.0 - float(v.distance)) for v in rows]
