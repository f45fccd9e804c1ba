"""Periodic maintenance tasks, sent by Celery beat (``recsys_platform.schedules``).

Each task is safe to run twice and at any time: it recomputes what is due from the
database instead of remembering what it did last time.
"""

import logging
import os
import socket
from datetime import timedelta

from celery import shared_task
from django.apps import apps
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.db.models import OuterRef, Q, Subquery
from django.utils import timezone

logger = logging.getLogger(__name__)

TRANSIENT_ERRORS = (OperationalError, InterfaceError)
# Rows deleted per statement by the roll-over, so no statement holds locks for long.
DELETE_BATCH_SIZE = 5000


def _scheduled_task(name: str, *, soft_time_limit: int, time_limit: int):
    """Return the task decorator of a beat-scheduled task: default queue, retries on database errors."""
    return shared_task(
        bind=True, name=name, queue="default", autoretry_for=TRANSIENT_ERRORS, retry_backoff=10, max_retries=3,
        soft_time_limit=soft_time_limit, time_limit=time_limit,
    )


def tenants_due_for_retraining(min_new_interactions: int) -> list[int]:
    """Return the ids of active tenants with enough interactions since their newest model.

    A tenant that was never trained counts all its interactions. Interactions are
    counted by ``created_at`` (when the platform recorded them), because imported
    histories carry ``occurred_at`` times older than any model.
    """
    from recommend.models import ModelVersion
    from users.models import Interaction, Tenant

    newest_version = (
        ModelVersion.objects.filter(tenant=OuterRef("pk")).order_by("-created_at").values("created_at")[:1]
    )
    tenants = (
        Tenant.objects.filter(is_active=True)
        .annotate(trained_at=Subquery(newest_version))
        .order_by("pk")
        .values_list("pk", "trained_at")
    )

    due = []
    for tenant_id, trained_at in tenants:
        new_interactions = Interaction.objects.filter(tenant_id=tenant_id)
        if trained_at is not None:
            new_interactions = new_interactions.filter(created_at__gt=trained_at)
        # COUNT over a LIMIT stops reading as soon as the threshold is reached.
        # NOTE: with no index on (tenant, created_at), a tenant below the threshold is
        # scanned in full. Add that index if this query shows up in slow-query logs.
        if new_interactions.values("pk")[:min_new_interactions].count() >= min_new_interactions:
            due.append(tenant_id)
    return due


@_scheduled_task("workers.maintenance.schedule_tenant_retraining_task", soft_time_limit=240, time_limit=300)
def schedule_tenant_retraining_task(self) -> list[int]:
    """Enqueue ``train_tenant_models_task`` for every tenant with enough new interactions."""
    from workers.tasks import train_tenant_models_task

    due = tenants_due_for_retraining(settings.RETRAIN_MIN_NEW_INTERACTIONS)

    # A training message that waited a whole interval in the queue is dropped: the
    # next run of this task has sent a fresh one, and training twice is wasted work.
    for tenant_id in due:
        train_tenant_models_task.apply_async((tenant_id,), expires=settings.RETRAIN_INTERVAL_S)

    logger.info(
        "Scheduled retraining of %s tenants (threshold %s new interactions)",
        len(due), settings.RETRAIN_MIN_NEW_INTERACTIONS, extra={"tenant_ids": ",".join(map(str, due))},
    )
    return due


def _delete_in_batches(queryset) -> int:
    deleted = 0
    while True:
        ids = list(queryset.order_by("pk").values_list("pk", flat=True)[:DELETE_BATCH_SIZE])
        if not ids:
            return deleted
        count, _ = queryset.model.objects.filter(pk__in=ids).delete()
        deleted += count


def roll_over_budget_windows(retention: timedelta, now=None) -> dict[str, int]:
    """Delete budget accounts and privatised user vectors of windows that ended before ``now - retention``.

    Ledger entries are never deleted: they are the audit record of every charge, and
    per-window summaries can be recomputed from them. A window ends ``window_seconds``
    (the tenant's current policy) after its ``window_start``.
    """
    BudgetAccount = apps.get_model("privacy", "BudgetAccount")
    PrivatisedUserVector = apps.get_model("privacy", "PrivatisedUserVector")
    PrivacyPolicy = apps.get_model("privacy", "PrivacyPolicy")
    Tenant = apps.get_model("users", "Tenant")

    now = now or timezone.now()
    default_window_s = PrivacyPolicy._meta.get_field("window_seconds").get_default()
    window_by_tenant = dict(PrivacyPolicy.objects.values_list("tenant_id", "window_seconds"))

    deleted = {"budget_accounts": 0, "privatised_user_vectors": 0}
    for tenant_id in Tenant.objects.order_by("pk").values_list("pk", flat=True):
        # NOTE: windows are judged by the tenant's current length. After a tenant
        # shortens its window, older and longer windows may go up to the difference early.
        window = timedelta(seconds=window_by_tenant.get(tenant_id, default_window_s))
        # window_start + window < now - retention
        cutoff = now - retention - window
        deleted["budget_accounts"] += _delete_in_batches(
            BudgetAccount.objects.filter(tenant_id=tenant_id, window_start__lt=cutoff)
        )
        deleted["privatised_user_vectors"] += _delete_in_batches(
            PrivatisedUserVector.objects.filter(tenant_id=tenant_id, window_start__lt=cutoff)
        )
    return deleted


@_scheduled_task("workers.maintenance.roll_over_budget_windows_task", soft_time_limit=540, time_limit=600)
def roll_over_budget_windows_task(self) -> dict[str, int]:
    """Delete per-window privacy state older than ``PRIVACY_ACCOUNT_RETENTION_DAYS``; keep the ledger."""
    retention = timedelta(days=settings.PRIVACY_ACCOUNT_RETENTION_DAYS)
    deleted = roll_over_budget_windows(retention)
    logger.info(
        "Rolled over budget windows older than %s days: deleted %s budget accounts and %s privatised user vectors",
        settings.PRIVACY_ACCOUNT_RETENTION_DAYS, deleted["budget_accounts"], deleted["privatised_user_vectors"],
    )
    return deleted


def current_extractor_versions() -> dict[str, str]:
    """Return the extractor version each modality's embeddings are computed with today."""
    from workers.extractors.audio import AUDIO_EXTRACTOR_VERSION
    from workers.extractors.text import TEXT_EXTRACTOR_VERSION
    from workers.extractors.visual import VISUAL_EXTRACTOR_VERSION

    return {"visual": VISUAL_EXTRACTOR_VERSION, "text": TEXT_EXTRACTOR_VERSION, "audio": AUDIO_EXTRACTOR_VERSION}


def videos_with_outdated_extractors(versions: dict[str, str], limit: int) -> list[int]:
    """Return up to ``limit`` ids of uploaded videos with an embedding from another extractor version.

    Only servable videos with a media file qualify: imported catalogues have no media
    to extract from, and pending or processing videos are already being extracted. An
    empty ``*_extractor`` means the modality is missing (no audio track) and is not
    outdated.
    """
    from videos.models import SERVABLE_STATUSES, Video

    outdated = Q()
    for modality, version in versions.items():
        field = f"{modality}_extractor"
        outdated |= ~Q(**{field: ""}) & ~Q(**{field: version})
    return list(
        Video.objects.filter(outdated, status__in=SERVABLE_STATUSES)
        .exclude(media="")
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )


def stale_pending_videos(older_than: timedelta, limit: int, now=None) -> list[int]:
    """Return up to ``limit`` ids of uploaded videos left pending for longer than ``older_than``.

    A pending video normally has its extraction message in the queue. It has none when
    the web process died between committing the upload and sending the message, or when
    the broker lost its data, and then nothing else would ever extract it.
    """
    from videos.models import Video, VideoStatus

    cutoff = (now or timezone.now()) - older_than
    return list(
        Video.objects.filter(status=VideoStatus.PENDING, updated_at__lt=cutoff)
        .exclude(media="")
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )


@_scheduled_task("workers.maintenance.requeue_stale_pending_videos_task", soft_time_limit=240, time_limit=300)
def requeue_stale_pending_videos_task(self) -> int:
    """Send videos pending for longer than ``PENDING_REQUEUE_AFTER_S`` to extraction again.

    A video whose first message is still queued behind a long backlog gets a second
    one. That costs one extra extraction, because extraction is safe to run twice.
    """
    from videos.services import reprocess_videos

    video_ids = stale_pending_videos(timedelta(seconds=settings.PENDING_REQUEUE_AFTER_S),
                                     settings.REEXTRACT_BATCH_SIZE)
    if not video_ids:
        logger.info("No video has been pending for longer than %s s", settings.PENDING_REQUEUE_AFTER_S)
        return 0

    count = reprocess_videos(video_ids)
    logger.warning("Sent %s videos pending for longer than %s s to extraction again", count,
                   settings.PENDING_REQUEUE_AFTER_S)
    return count


@_scheduled_task("workers.maintenance.reextract_outdated_videos_task", soft_time_limit=240, time_limit=300)
def reextract_outdated_videos_task(self) -> int:
    """Send up to ``REEXTRACT_BATCH_SIZE`` videos with outdated embeddings back to extraction."""
    from videos.services import reprocess_videos

    video_ids = videos_with_outdated_extractors(current_extractor_versions(), settings.REEXTRACT_BATCH_SIZE)
    if not video_ids:
        logger.info("No video has embeddings from an outdated extractor")
        return 0

    count = reprocess_videos(video_ids)
    logger.info("Sent %s videos with outdated embeddings back to extraction", count)
    return count


@shared_task(
    bind=True,
    name="workers.maintenance.ping_task",
    queue="default",
    soft_time_limit=10,
    time_limit=20,
)
def ping_task(self, token: str, fail: bool = False) -> dict:
    """Log and return which worker and queue ran this task; raise when ``fail`` is true.

    A diagnostic for operators and tests: it shows where a queue's messages are
    consumed, and ``fail=True`` checks that failures reach the metrics and logs.
    """
    delivery = self.request.delivery_info or {}
    answer = {
        "token": token,
        "hostname": self.request.hostname or socket.gethostname(),
        "queue": delivery.get("routing_key"),
        "pid": os.getpid(),
    }
    logger.info(
        "Ping %s ran on %s from queue %s", token, answer["hostname"], answer["queue"],
        extra={"ping_token": token, "worker": answer["hostname"], "queue": answer["queue"]},
    )
    if fail:
        raise RuntimeError(f"ping {token} was asked to fail")
    return answer
