from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone
from pgvector.django import VectorField

from privacy.accounting import micro_to_epsilon
from privacy.mechanisms import (
    DEFAULT_HISTORY_LENGTH,
    DEFAULT_RETRIEVAL_FRACTION,
    MAX_HISTORY_LENGTH,
    MECHANISM_IMPORTANCE_WEIGHTED,
    MECHANISM_LAPLACE,
    MECHANISM_USER_VECTOR,
    Mechanism,
    build_mechanism,
)
from privacy.validation import (
    MAX_EPSILON_HARD_CAP,
    budget_error,
    epsilon_error,
    max_epsilon,
    retrieval_fraction_error,
)

# Dimension of the privatised user vector: the fused video embedding's dimension
# (videos.models.FUSED_DIM), repeated here because privacy/ does not import videos/.
USER_VECTOR_DIM = 128


def default_policy_epsilon() -> float:
    """Return the default epsilon per response: 1, or PRIVACY_MAX_EPSILON if that is lower."""
    return min(1.0, max_epsilon())


def validate_epsilon(value) -> None:
    message = epsilon_error(value)
    if message is not None:
        raise ValidationError(message, code="invalid_epsilon")


def validate_budget(value) -> None:
    message = budget_error(value)
    if message is not None:
        raise ValidationError(message, code="invalid_budget")


def validate_retrieval_fraction(value) -> None:
    message = retrieval_fraction_error(value)
    if message is not None:
        raise ValidationError(message, code="invalid_retrieval_fraction")


class MechanismName(models.TextChoices):
    LAPLACE = MECHANISM_LAPLACE, "Per-score Laplace (charged its top-k cost)"
    IMPORTANCE_WEIGHTED = MECHANISM_IMPORTANCE_WEIGHTED, "Importance-weighted Laplace"
    USER_VECTOR = MECHANISM_USER_VECTOR, "Private user vector (ranking is post-processing)"


class PrivacyPolicy(models.Model):
    """A tenant's differential privacy settings: epsilon per response, budget, mechanism.

    Unit of privacy: one interaction of one user. ``epsilon`` is charged to a user's
    budget for each personalised response; ``budget`` is the total a user may be
    charged per window of ``window_seconds``.
    """

    tenant = models.OneToOneField("users.Tenant", on_delete=models.CASCADE, related_name="privacy_policy")
    epsilon = models.FloatField(
        default=default_policy_epsilon,
        validators=[validate_epsilon],
        help_text="Epsilon charged per personalised response; greater than 0 and at most PRIVACY_MAX_EPSILON (at most 10).",
    )
    budget = models.FloatField(
        default=10.0,
        validators=[validate_budget],
        help_text="Total epsilon each user may be charged per window.",
    )
    window_seconds = models.PositiveIntegerField(
        default=86400, help_text="Length of a budget window in seconds; windows are aligned to the Unix epoch."
    )
    mechanism = models.CharField(max_length=32, choices=MechanismName.choices, default=MechanismName.USER_VECTOR)
    max_k = models.PositiveIntegerField(default=50, help_text="Largest number of videos in one response.")
    history_length = models.PositiveIntegerField(
        default=DEFAULT_HISTORY_LENGTH,
        help_text=f"L: number of most recent interactions in the user vector (1 to {MAX_HISTORY_LENGTH}).",
    )
    retrieval_fraction = models.FloatField(
        default=DEFAULT_RETRIEVAL_FRACTION,
        validators=[validate_retrieval_fraction],
        help_text="Share of epsilon spent on the user vector by mechanisms that also noise scores; in (0, 1).",
    )
    n_candidates = models.PositiveIntegerField(
        default=100, help_text="C: candidates retrieved and ranked per response; at least max_k."
    )
    # Dropping the user's already-seen videos reads the raw history outside any
    # mechanism (a video the user interacted with can never be released), so it is
    # off by default: with it on, epsilon no longer covers the whole response.
    exclude_seen = models.BooleanField(
        default=False,
        help_text=(
            "Leave out videos the user has already interacted with. This filter is not "
            "differentially private: turn it on only if the tenant accepts that the "
            "released list reveals which candidates the user has not seen."
        ),
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "privacy policies"
        constraints = [
            # PostgreSQL orders NaN above every number and 'Infinity' above every
            # finite one, so these ranges reject NaN and infinity as well.
            models.CheckConstraint(
                condition=Q(epsilon__gt=0) & Q(epsilon__lte=MAX_EPSILON_HARD_CAP),
                name="privacy_policy_epsilon_range",
            ),
            models.CheckConstraint(
                condition=Q(budget__gt=0) & Q(budget__lt=float("inf")),
                name="privacy_policy_budget_range",
            ),
            models.CheckConstraint(
                condition=Q(retrieval_fraction__gt=0) & Q(retrieval_fraction__lt=1),
                name="privacy_policy_retrieval_fraction_range",
            ),
            models.CheckConstraint(condition=Q(window_seconds__gte=1), name="privacy_policy_window_positive"),
            models.CheckConstraint(condition=Q(max_k__gte=1), name="privacy_policy_max_k_positive"),
            models.CheckConstraint(
                condition=Q(history_length__gte=1) & Q(history_length__lte=MAX_HISTORY_LENGTH),
                name="privacy_policy_history_length_range",
            ),
            models.CheckConstraint(
                condition=Q(n_candidates__gte=models.F("max_k")), name="privacy_policy_candidates_cover_k"
            ),
        ]

    def __str__(self) -> str:
        return f"privacy policy of tenant {self.tenant_id}"

    def clean(self) -> None:
        errors = {}
        for field_name, check in (
            ("epsilon", epsilon_error),
            ("budget", budget_error),
            ("retrieval_fraction", retrieval_fraction_error),
        ):
            message = check(getattr(self, field_name))
            if message is not None:
                errors[field_name] = ValidationError(message, code=f"invalid_{field_name}")
        if self.window_seconds is not None and self.window_seconds < 1:
            errors["window_seconds"] = ValidationError(
                f"window_seconds must be at least 1; got {self.window_seconds}", code="invalid_window_seconds"
            )
        if self.history_length is not None and not 1 <= self.history_length <= MAX_HISTORY_LENGTH:
            errors["history_length"] = ValidationError(
                f"history_length must be between 1 and {MAX_HISTORY_LENGTH}; got {self.history_length}",
                code="invalid_history_length",
            )
        if self.max_k is not None and self.max_k < 1:
            errors["max_k"] = ValidationError(f"max_k must be at least 1; got {self.max_k}", code="invalid_max_k")
        if self.max_k is not None and self.n_candidates is not None and self.n_candidates < self.max_k:
            errors["n_candidates"] = ValidationError(
                f"n_candidates must be at least max_k = {self.max_k}; got {self.n_candidates}",
                code="invalid_n_candidates",
            )
        if "epsilon" not in errors and "budget" not in errors and self.budget < self.epsilon:
            errors["budget"] = ValidationError(
                f"budget must be at least epsilon = {self.epsilon:g} so that one personalised "
                f"response fits in a window; got {self.budget:g}",
                code="invalid_budget",
            )
        if errors:
            raise ValidationError(errors)

    def build_mechanism(self) -> Mechanism:
        """Return the policy's mechanism, calibrated to its epsilon per response."""
        return build_mechanism(
            self.mechanism,
            self.epsilon,
            retrieval_fraction=self.retrieval_fraction,
            history_length=self.history_length,
        )

    def editable_values(self) -> dict:
        """Return the policy's settings as a JSON-serialisable dict, as audited on change."""
        return {name: getattr(self, name) for name in POLICY_EDITABLE_FIELDS}


POLICY_EDITABLE_FIELDS = (
    "epsilon",
    "budget",
    "window_seconds",
    "mechanism",
    "max_k",
    "history_length",
    "retrieval_fraction",
    "n_candidates",
    "exclude_seen",
)


class PrivacyPolicyChange(models.Model):
    """An audited change of a privacy policy: who, when, and the old and new values."""

    policy = models.ForeignKey(PrivacyPolicy, on_delete=models.CASCADE, related_name="changes")
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    changed_at = models.DateTimeField(default=timezone.now, db_index=True)
    old_values = models.JSONField(default=dict)
    new_values = models.JSONField(default=dict)

    class Meta:
        ordering = ["-changed_at", "-id"]

    def __str__(self) -> str:
        return f"change of {self.policy} at {self.changed_at:%Y-%m-%d %H:%M:%S}"


class LedgerEntry(models.Model):
    """One charge to a user's privacy budget: one personalised response.

    ``epsilon_micro`` is the charged epsilon in integer micro-epsilon, rounded up so that
    the ledger never under-charges. ``released`` contains the released video ids, so a
    replayed request id returns the same list at no cost.
    """

    # Every response writes one row, so the table keeps no index that another one
    # already covers: ledger_unique_request starts with tenant_id and ledger_user_window
    # with user_id.
    tenant = models.ForeignKey("users.Tenant", on_delete=models.CASCADE, related_name="+", db_index=False)
    user = models.ForeignKey("users.AppUser", on_delete=models.CASCADE, related_name="privacy_ledger",
                             db_index=False)
    request_id = models.CharField(max_length=128)
    epsilon_micro = models.BigIntegerField()
    mechanism = models.CharField(max_length=32)
    parameters = models.JSONField(default=dict)
    window_start = models.DateTimeField()
    released = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        verbose_name_plural = "ledger entries"
        constraints = [
            models.UniqueConstraint(fields=["tenant", "user", "request_id"], name="ledger_unique_request"),
            models.CheckConstraint(condition=Q(epsilon_micro__gte=0), name="ledger_epsilon_not_negative"),
        ]
        indexes = [models.Index(fields=["user", "window_start"], name="ledger_user_window")]

    def __str__(self) -> str:
        return f"{self.request_id} ({self.epsilon:g})"

    @property
    def epsilon(self) -> float:
        return micro_to_epsilon(self.epsilon_micro)


class BudgetAccount(models.Model):
    """The epsilon charged to one user in one budget window, in micro-epsilon.

    Equal to the sum of the user's ledger entries of that window: both are written in
    the same transaction by ``privacy.services.spend_privacy_budget``.
    """

    tenant = models.ForeignKey("users.Tenant", on_delete=models.CASCADE, related_name="+")
    # budget_account_unique_window starts with user_id, so the column needs no index of its own.
    user = models.ForeignKey("users.AppUser", on_delete=models.CASCADE, related_name="privacy_budget_accounts",
                             db_index=False)
    window_start = models.DateTimeField()
    spent_micro = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "window_start"], name="budget_account_unique_window"),
            models.CheckConstraint(condition=Q(spent_micro__gte=0), name="budget_account_spent_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.user} from {self.window_start:%Y-%m-%d %H:%M}"

    @property
    def spent(self) -> float:
        return micro_to_epsilon(self.spent_micro)


class PrivatisedUserVector(models.Model):
    """A released noisy user vector ũ, reusable at no cost while the history is unchanged.

    Later responses that rank with this vector are post-processing of its one release,
    so they cost nothing more while the user's ``history_version`` and the budget window
    are the same as when it was charged (``ledger_entry``).
    """

    tenant = models.ForeignKey("users.Tenant", on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey("users.AppUser", on_delete=models.CASCADE, related_name="privatised_vectors")
    window_start = models.DateTimeField()
    history_version = models.BigIntegerField()
    vector = VectorField(dimensions=USER_VECTOR_DIM)
    epsilon = models.FloatField()
    ledger_entry = models.ForeignKey(LedgerEntry, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "window_start", "history_version"], name="privatised_vector_unique_version"
            )
        ]

    def __str__(self) -> str:
        return f"ũ of {self.user} (version {self.history_version})"
