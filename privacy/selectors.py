"""Read-only queries of privacy budgets, ledger entries and privatised user vectors."""

from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from privacy.accounting import budget_to_micro, micro_to_epsilon, window_bounds
from privacy.models import BudgetAccount, LedgerEntry, PrivacyPolicy, PrivatisedUserVector
from recsys_platform import rows


@dataclass(frozen=True)
class BudgetStatus:
    """A user's privacy budget in the current window; amounts in micro-epsilon and epsilon."""

    tenant_id: int
    user_id: int
    budget_micro: int
    spent_micro: int
    window_start: datetime
    window_end: datetime
    mechanism: str
    epsilon_per_response: float

    @property
    def remaining_micro(self) -> int:
        return max(self.budget_micro - self.spent_micro, 0)

    @property
    def budget(self) -> float:
        return micro_to_epsilon(self.budget_micro)

    @property
    def spent(self) -> float:
        return micro_to_epsilon(self.spent_micro)

    @property
    def remaining(self) -> float:
        return micro_to_epsilon(self.remaining_micro)

    def as_dict(self) -> dict:
        """Return the status as the API shows it: amounts in epsilon, times in ISO 8601."""
        return {
            "budget": self.budget,
            "spent": self.spent,
            "remaining": self.remaining,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "mechanism": self.mechanism,
            "epsilon_per_response": self.epsilon_per_response,
        }

    def find_entry(self, request_id: str) -> LedgerEntry | None:
        """Return this user's ledger entry for ``request_id``, from any window, or None."""
        return find_ledger_entry(self.tenant_id, self.user_id, request_id)


def get_budget_status(tenant, user, now: datetime | None = None, *, policy: PrivacyPolicy | None = None) -> BudgetStatus:
    """Return the user's budget, spending and remaining epsilon in the window containing ``now``.

    ``policy`` is the tenant's policy when the caller has already read it in this
    request; without it the policy is read here.
    """
    from privacy.services import get_privacy_policy

    policy = policy or get_privacy_policy(tenant)
    window_start, window_end = window_bounds(now or timezone.now(), policy.window_seconds)
    # Read on every recommendation request, so without the ORM's query compilation.
    row = rows.fetch_row(f"SELECT spent_micro FROM {BudgetAccount._meta.db_table} "
                         "WHERE user_id = %s AND window_start = %s ORDER BY id LIMIT 1", [user.pk, window_start])
    spent_micro = row[0] if row is not None else 0
    return BudgetStatus(
        tenant_id=tenant.pk,
        user_id=user.pk,
        budget_micro=budget_to_micro(policy.budget),
        spent_micro=spent_micro,
        window_start=window_start,
        window_end=window_end,
        mechanism=policy.mechanism,
        epsilon_per_response=policy.epsilon,
    )


def find_ledger_entry(tenant_id: int, user_id: int, request_id: str) -> LedgerEntry | None:
    """Return the ledger entry of one request of one user, or None."""
    return LedgerEntry.objects.filter(tenant_id=tenant_id, user_id=user_id, request_id=request_id).first()


def find_privatised_user_vector(user, window_start: datetime, history_version: int) -> PrivatisedUserVector | None:
    """Return the user's stored noisy vector for this window and history version, or None.

    A vector found here may be reused at no further epsilon: ranking with it is
    post-processing of its one charged release.
    """
    return PrivatisedUserVector.objects.filter(
        user=user, window_start=window_start, history_version=history_version
    ).first()


def find_privacy_policy(tenant) -> PrivacyPolicy | None:
    """Return the tenant's privacy policy, or None if it has none yet."""
    return PrivacyPolicy.objects.filter(tenant=tenant).first()
