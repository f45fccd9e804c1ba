from django.db import models
from django.utils import timezone
from pgvector.django import HnswIndex, VectorField

# Dimension of the fused embedding that retrieval searches. Changing it needs a
# migration of the column and its HNSW index.
FUSED_DIM = 128

MODALITIES = ("visual", "text", "audio")


class VideoStatus(models.TextChoices):
    PENDING = "pending"
    PROCESSING = "processing"
    READY = "ready"
    # Usable, but at least one modality could not be extracted (see modality_reasons).
    PARTIAL = "partial"
    FAILED = "failed"


SERVABLE_STATUSES = (VideoStatus.READY, VideoStatus.PARTIAL)


class Video(models.Model):
    """A video of one tenant with its per-modality and fused embeddings."""

    tenant = models.ForeignKey("users.Tenant", on_delete=models.CASCADE, related_name="videos")
    external_id = models.CharField(max_length=255)
    title = models.TextField(blank=True)
    description = models.TextField(blank=True)
    tags = models.JSONField(default=list, blank=True)
    # Numeric labels of imported catalogues (YouTube-8M); empty for uploads.
    labels = models.JSONField(default=list, blank=True)
    media = models.FileField(upload_to="videos/%Y/%m/%d/", max_length=500, blank=True)

    duration_s = models.FloatField(null=True, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    has_audio = models.BooleanField(null=True, blank=True)

    status = models.CharField(
        max_length=16, choices=VideoStatus.choices, default=VideoStatus.PENDING, db_index=True
    )
    # Machine-readable reason of a failed or partial video, and a message for people.
    status_reason = models.CharField(max_length=64, blank=True)
    status_message = models.TextField(blank=True)
    # Missing modality -> reason code, e.g. {"audio": "no_audio_track"}.
    modality_reasons = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveIntegerField(default=0)

    # Modality columns have no fixed dimension because the extractor (and so the
    # dimension) can differ per source: EfficientNet features are 1280-dimensional,
    # imported YouTube-8M features 1024. The *_extractor fields name the space.
    visual_embedding = VectorField(null=True, blank=True)
    visual_extractor = models.CharField(max_length=64, blank=True)
    text_embedding = VectorField(null=True, blank=True)
    text_extractor = models.CharField(max_length=64, blank=True)
    audio_embedding = VectorField(null=True, blank=True)
    audio_extractor = models.CharField(max_length=64, blank=True)
    fused_embedding = VectorField(dimensions=FUSED_DIM, null=True, blank=True)
    fusion_version = models.CharField(max_length=64, blank=True)

    # Interaction count, used to serve non-personalised (popular) responses.
    popularity = models.BigIntegerField(default=0)

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "external_id"], name="video_unique_per_tenant")
        ]
        indexes = [
            HnswIndex(
                name="video_fused_hnsw_cosine",
                fields=["fused_embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
            models.Index(fields=["tenant", "status"], name="video_tenant_status"),
            models.Index(fields=["tenant", "-popularity"], name="video_tenant_popularity"),
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id}:{self.external_id}"

    @property
    def modalities_present(self) -> list[str]:
        return [m for m in MODALITIES if getattr(self, f"{m}_embedding") is not None]

    @property
    def is_servable(self) -> bool:
        return self.status in SERVABLE_STATUSES and self.fused_embedding is not None
