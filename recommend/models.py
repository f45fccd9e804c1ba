from django.db import models
from django.db.models import Q
from django.utils import timezone


class ModelKind(models.TextChoices):
    FUSION = "fusion"
    RANKER = "ranker"


class ModelVersion(models.Model):
    """A trained model of one tenant, stored as a versioned artifact with its metrics.

    At most one version per tenant and kind is active; serving reads the active one
    and notices a newly activated version without a restart.
    """

    tenant = models.ForeignKey("users.Tenant", on_delete=models.CASCADE, related_name="model_versions")
    kind = models.CharField(max_length=16, choices=ModelKind.choices)
    version = models.PositiveIntegerField()
    # torch.save of the model's state and configuration.
    artifact = models.BinaryField()
    config = models.JSONField(default=dict)
    metrics = models.JSONField(default=dict)
    is_active = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "kind", "version"], name="model_version_unique"),
            models.UniqueConstraint(
                fields=["tenant", "kind"], condition=Q(is_active=True), name="model_version_one_active"
            ),
        ]
        ordering = ["tenant", "kind", "-version"]

    def __str__(self) -> str:
        return f"{self.tenant_id}:{self.kind}:v{self.version}"

    @property
    def label(self) -> str:
        return f"{self.kind}/v{self.version}"
