import hashlib
import hmac
import secrets

from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

_slug = RegexValidator(
    r"^[a-z0-9][a-z0-9_-]{0,62}$",
    "Use 1 to 63 lowercase letters, digits, '-' or '_', starting with a letter or digit.",
)


class Tenant(models.Model):
    """A product app whose videos, users and privacy budget are isolated from others."""

    name = models.CharField(max_length=63, unique=True, validators=[_slug])
    display_name = models.CharField(max_length=200, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name


class ApiKeyQuerySet(models.QuerySet):
    def active(self):
        return self.filter(revoked_at__isnull=True, tenant__is_active=True)


class ApiKey(models.Model):
    """A hashed API key of one tenant; the plain key is shown once, at creation."""

    PREFIX_LENGTH = 12

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    label = models.CharField(max_length=200, blank=True)
    # The prefix is stored in clear so a presented key is found by an index lookup.
    # Only the SHA-256 of the whole key is kept, so a database leak reveals no key.
    prefix = models.CharField(max_length=PREFIX_LENGTH, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiKeyQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.tenant.name}:{self.prefix}"

    @staticmethod
    def hash_key(raw_key: str) -> str:
        return hashlib.sha256(raw_key.encode("utf-8")).hexdigest()

    @classmethod
    def generate(cls) -> tuple[str, str]:
        """Return a new (prefix, raw_key) pair; the raw key embeds the prefix."""
        prefix = secrets.token_hex(cls.PREFIX_LENGTH // 2)
        return prefix, f"rk_{prefix}_{secrets.token_urlsafe(32)}"

    @classmethod
    def prefix_of(cls, raw_key: str) -> str | None:
        parts = raw_key.split("_")
        if len(parts) < 3 or parts[0] != "rk" or len(parts[1]) != cls.PREFIX_LENGTH:
            return None
        # Prefixes are lowercase hex (token_hex); anything else, NUL included, cannot match.
        if any(character not in "0123456789abcdef" for character in parts[1]):
            return None
        return parts[1]

    def matches(self, raw_key: str) -> bool:
        return hmac.compare_digest(self.key_hash, self.hash_key(raw_key))

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


class AppUser(models.Model):
    """An end user of a tenant's app, known by the app's own id."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="app_users")
    external_id = models.CharField(max_length=255)
    created_at = models.DateTimeField(default=timezone.now)
    # Incremented with every recorded interaction, so cached privatised state of the
    # user is known to be stale as soon as the history changes.
    history_version = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "external_id"], name="appuser_unique_per_tenant")
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id}:{self.external_id}"


class EventType(models.TextChoices):
    VIEW = "view"
    LIKE = "like"
    SHARE = "share"
    COMPLETE = "complete"
    SKIP = "skip"


# Weight of each event in a user's representation, in [0, 1]; the privacy
# calibration assumes no event weighs more than 1.
EVENT_WEIGHTS = {
    EventType.VIEW: 0.6,
    EventType.LIKE: 1.0,
    EventType.SHARE: 1.0,
    EventType.COMPLETE: 0.9,
    EventType.SKIP: 0.0,
}


class Interaction(models.Model):
    """One event of one user on one video: the unit that differential privacy protects."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(AppUser, on_delete=models.CASCADE, related_name="interactions")
    video = models.ForeignKey("videos.Video", on_delete=models.CASCADE, related_name="interactions")
    event_type = models.CharField(max_length=16, choices=EventType.choices)
    watch_seconds = models.FloatField(null=True, blank=True)
    occurred_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["user", "-occurred_at", "-id"], name="interaction_user_recent"),
            models.Index(fields=["tenant", "video"], name="interaction_tenant_video"),
        ]


class InteractionBatch(models.Model):
    """An accepted batch of interactions, kept so a retried batch is not counted twice."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    idempotency_key = models.CharField(max_length=128)
    interaction_count = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "idempotency_key"], name="interaction_batch_unique_key"
            )
        ]
