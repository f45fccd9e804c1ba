"""State changes of tenants, API keys, app users and interactions."""

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from users.errors import UnknownVideos, VideosNotReady
from users.models import ApiKey, AppUser, EventType, Interaction, InteractionBatch, Tenant

logger = logging.getLogger(__name__)


def create_tenant(name: str, display_name: str = "") -> Tenant:
    tenant, created = Tenant.objects.get_or_create(name=name, defaults={"display_name": display_name})
    if created:
        logger.info("Created tenant %s", tenant.pk)
    return tenant


def create_api_key(tenant: Tenant, label: str = "") -> tuple[ApiKey, str]:
    """Create a key for the tenant and return it with the plain key, shown only this once."""
    prefix, raw_key = ApiKey.generate()
    key = ApiKey.objects.create(tenant=tenant, label=label, prefix=prefix, key_hash=ApiKey.hash_key(raw_key))
    logger.info("Created API key %s for tenant %s", key.prefix, tenant.pk)
    return key, raw_key


def revoke_api_key(key: ApiKey) -> None:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        logger.info("Revoked API key %s of tenant %s", key.prefix, key.tenant_id)


@dataclass(frozen=True)
class InteractionInput:
    user_id: str
    video_id: str
    event_type: str
    watch_seconds: float | None
    occurred_at: datetime | None


@dataclass(frozen=True)
class RecordedBatch:
    count: int
    replayed: bool
    idempotency_key: str | None


def record_interactions(
    tenant: Tenant, items: list[InteractionInput], *, idempotency_key: str | None = None
) -> RecordedBatch:
    """Store a batch of interactions atomically: all of them or none.

    A batch whose ``idempotency_key`` was already accepted stores nothing and reports
    ``replayed``. Raises ``UnknownVideos`` for ids of no video of this tenant, and
    ``VideosNotReady`` for videos that are not yet ``ready`` or ``partial``.
    """
    from videos.models import SERVABLE_STATUSES, Video

    if idempotency_key is not None:
        existing = InteractionBatch.objects.filter(tenant=tenant, idempotency_key=idempotency_key).first()
        if existing is not None:
            return RecordedBatch(count=existing.interaction_count, replayed=True, idempotency_key=idempotency_key)

    video_ids = {item.video_id for item in items}
    videos = {
        v.external_id: v
        for v in Video.objects.filter(tenant=tenant, external_id__in=video_ids).only("id", "external_id", "status")
    }
    unknown = sorted(video_ids - videos.keys())
    if unknown:
        raise UnknownVideos(unknown)
    not_ready = sorted(v.external_id for v in videos.values() if v.status not in SERVABLE_STATUSES)
    if not_ready:
        raise VideosNotReady(not_ready)

    now = timezone.now()
    try:
        with transaction.atomic():
            if idempotency_key is not None:
                InteractionBatch.objects.create(
                    tenant=tenant, idempotency_key=idempotency_key, interaction_count=len(items)
                )
            users = _get_or_create_users(tenant, {item.user_id for item in items})
            Interaction.objects.bulk_create(
                [
                    Interaction(
                        tenant=tenant,
                        user=users[item.user_id],
                        video=videos[item.video_id],
                        event_type=item.event_type,
                        watch_seconds=item.watch_seconds,
                        occurred_at=item.occurred_at or now,
                    )
                    for item in items
                ]
            )
            _bump_counters(users, videos, items)
    except IntegrityError:
        # A concurrent request with the same idempotency key committed first.
        existing = InteractionBatch.objects.filter(tenant=tenant, idempotency_key=idempotency_key).first()
        if existing is None:
            raise
        return RecordedBatch(count=existing.interaction_count, replayed=True, idempotency_key=idempotency_key)

    logger.info("Recorded %s interactions for tenant %s", len(items), tenant.pk)
    return RecordedBatch(count=len(items), replayed=False, idempotency_key=idempotency_key)


def _get_or_create_users(tenant: Tenant, external_ids: set[str]) -> dict[str, AppUser]:
    AppUser.objects.bulk_create(
        [AppUser(tenant=tenant, external_id=external_id) for external_id in external_ids],
        ignore_conflicts=True,
    )
    return {u.external_id: u for u in AppUser.objects.filter(tenant=tenant, external_id__in=external_ids)}


def _bump_counters(users: dict[str, AppUser], videos: dict, items: list[InteractionInput]) -> None:
    from videos.models import Video

    per_user = Counter(item.user_id for item in items)
    # Ordered updates keep concurrent batches from deadlocking on the same rows.
    for external_id in sorted(per_user):
        AppUser.objects.filter(pk=users[external_id].pk).update(
            history_version=F("history_version") + per_user[external_id]
        )
    per_video = Counter(item.video_id for item in items if item.event_type != EventType.SKIP)
    for external_id in sorted(per_video):
        Video.objects.filter(pk=videos[external_id].pk).update(popularity=F("popularity") + per_video[external_id])


def erase_app_user(user: AppUser) -> dict[str, int]:
    """Delete a user with every interaction and derived state; return deleted counts."""
    with transaction.atomic():
        interactions = Interaction.objects.filter(user=user).count()
        _, per_model = user.delete()
    logger.info("Erased app user %s of tenant %s", user.pk, user.tenant_id)
    return {"interactions": interactions, "rows": sum(per_model.values())}
