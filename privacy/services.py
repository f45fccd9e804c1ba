"""State changes of privacy policies, budgets, the ledger and privatised user vectors."""

import logging
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from privacy.accounting import budget_to_micro, epsilon_to_micro, micro_to_epsilon, window_bounds
from privacy.models import (
    POLICY_EDITABLE_FIELDS,
    USER_VECTOR_DIM,
    BudgetAccount,
    LedgerEntry,
    PrivacyPolicy,
    PrivacyPolicyChange,
    PrivatisedUserVector,
)
from privacy.selectors import find_ledger_entry, find_privatised_user_vector  # noqa: F401 - re-exported

logger = logging.getLogger(__name__)

SPEND_CHARGED = "charged"
SPEND_REPLAYED = "replayed"
SPEND_EXHAUSTED = "exhausted"

_ACCOUNTS = BudgetAccount._meta.db_table
_LEDGER = LedgerEntry._meta.db_table
# Creates the user's account row of the window, or locks the existing one, in one
# statement: ON CONFLICT DO UPDATE takes the row lock and returns what was spent so far.
# The WHERE clause turns synchronous_commit on for this transaction only, whatever the
# server's setting, so a response is returned only after its charge is durable. A
# server running with it off (the embedded development server does) could lose the
# last charges in a crash, and a user's loss could then exceed the budget.
_LOCK_ACCOUNT_SQL = f"""
    INSERT INTO {_ACCOUNTS} (tenant_id, user_id, window_start, spent_micro)
    SELECT %s, %s, %s, 0 WHERE set_config('synchronous_commit', 'on', true) IS NOT NULL
    ON CONFLICT (user_id, window_start) DO UPDATE SET spent_micro = {_ACCOUNTS}.spent_micro
    RETURNING id, spent_micro
"""
# Writes the ledger entry and debits the account in one statement. A request id that
# is already in the ledger writes no entry (ON CONFLICT DO NOTHING), so nothing is
# debited and no row is returned.
_CHARGE_SQL = f"""
    WITH entry AS (
        INSERT INTO {_LEDGER}
            (tenant_id, user_id, request_id, epsilon_micro, mechanism, parameters, window_start, released, created_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (tenant_id, user_id, request_id) DO NOTHING
        RETURNING id
    ), debit AS (
        UPDATE {_ACCOUNTS} SET spent_micro = spent_micro + %s WHERE id = %s AND EXISTS (SELECT 1 FROM entry)
    )
    SELECT id FROM entry
"""


def get_privacy_policy(tenant) -> PrivacyPolicy:
    """Return the tenant's privacy policy, creating the default one if it has none."""
    policy = PrivacyPolicy.objects.filter(tenant=tenant).first()
    if policy is not None:
        return policy
    # get_or_create retries the read when a concurrent request created the row first.
    policy, created = PrivacyPolicy.objects.get_or_create(tenant=tenant)
    if created:
        logger.info("Created the default privacy policy of tenant %s", tenant.pk)
    return policy


def create_privacy_policy(tenant, *, values: dict, actor=None) -> PrivacyPolicy:
    """Create the tenant's policy from ``values`` and write its audit row, atomically.

    Raises ValueError for unknown fields and ValidationError for invalid values.
    """
    _check_policy_fields(values)
    policy = PrivacyPolicy(tenant=tenant, **values)
    policy.full_clean()
    with transaction.atomic():
        policy.save()
        PrivacyPolicyChange.objects.create(
            policy=policy, changed_by=_actor_or_none(actor), old_values={}, new_values=policy.editable_values()
        )
    logger.info("Created the privacy policy of tenant %s", tenant.pk, extra={"actor_id": _actor_id(actor)})
    return policy


def update_privacy_policy(policy: PrivacyPolicy, *, changes: dict, actor=None) -> PrivacyPolicy:
    """Apply ``changes`` to the policy and write the audit row in the same transaction.

    Only fields whose value differs are saved and audited; an empty change writes
    nothing. Raises ValueError for unknown fields and ValidationError (nothing
    written) for invalid values. Returns the saved policy.
    """
    _check_policy_fields(changes)
    with transaction.atomic():
        # The lock keeps two concurrent edits from auditing the same old values.
        locked = PrivacyPolicy.objects.select_for_update().get(pk=policy.pk)
        old_values = {name: getattr(locked, name) for name in changes if getattr(locked, name) != changes[name]}
        if not old_values:
            return locked
        for name in old_values:
            setattr(locked, name, changes[name])
        locked.full_clean()
        locked.save()
        PrivacyPolicyChange.objects.create(
            policy=locked,
            changed_by=_actor_or_none(actor),
            old_values=old_values,
            new_values={name: getattr(locked, name) for name in old_values},
        )
    logger.info(
        "Changed %s of the privacy policy of tenant %s",
        ", ".join(sorted(old_values)),
        locked.tenant_id,
        extra={"actor_id": _actor_id(actor)},
    )
    return locked


@dataclass(frozen=True)
class SpendResult:
    """The outcome of one spend: ``status`` is "charged", "replayed" or "exhausted".

    ``entry`` is the new or replayed ledger entry (None when exhausted); the amounts
    are those of the user's current window, in micro-epsilon.
    """

    status: str
    entry: LedgerEntry | None
    spent_micro: int
    remaining_micro: int
    budget_micro: int
    window_start: datetime
    window_end: datetime

    @property
    def spent(self) -> float:
        return micro_to_epsilon(self.spent_micro)

    @property
    def remaining(self) -> float:
        return micro_to_epsilon(self.remaining_micro)

    @property
    def budget(self) -> float:
        return micro_to_epsilon(self.budget_micro)


def spend_privacy_budget(
    *,
    tenant,
    user,
    request_id: str,
    epsilon: float,
    mechanism: str,
    parameters: dict,
    released: list,
    now: datetime | None = None,
    policy: PrivacyPolicy | None = None,
) -> SpendResult:
    """Charge ``epsilon`` to the user's budget for one response, atomically, at most once.

    In one transaction: create the user's account row of the current window or lock
    the existing one (one INSERT ... ON CONFLICT DO UPDATE, so concurrent first
    requests do not fail), then either write the ledger entry and debit the account,
    or change nothing. Returns "replayed" with the stored entry (spending nothing)
    when the request id is already in the ledger, "exhausted" (nothing written) when
    the remaining budget cannot pay, else "charged". Epsilon 0 (reuse of a privatised
    vector) is recorded like any other charge. ``epsilon`` is charged as
    ``epsilon_to_micro(epsilon)``, rounded up. ``policy`` is the tenant's policy when
    the caller has already read it in this request.
    """
    if user.tenant_id != tenant.pk:
        raise ValueError(f"user {user.pk} does not belong to tenant {tenant.pk}")
    if not isinstance(request_id, str) or not 1 <= len(request_id) <= 128:
        raise ValueError(f"request_id must be a string of 1 to 128 characters; got {request_id!r}")
    epsilon_micro = epsilon_to_micro(epsilon)
    policy = policy or get_privacy_policy(tenant)
    window_start, window_end = window_bounds(now or timezone.now(), policy.window_seconds)
    budget_micro = budget_to_micro(policy.budget)

    def result(status: str, entry: LedgerEntry | None, spent_micro: int) -> SpendResult:
        return SpendResult(
            status=status,
            entry=entry,
            spent_micro=spent_micro,
            remaining_micro=max(budget_micro - spent_micro, 0),
            budget_micro=budget_micro,
            window_start=window_start,
            window_end=window_end,
        )

    # Serving calls this once per response, so it takes two statements inside the
    # transaction (lock, then charge) instead of one ORM query per step.
    with transaction.atomic(), connection.cursor() as cursor:
        # The row lock serialises every spend of this user in this window.
        cursor.execute(_LOCK_ACCOUNT_SQL, [tenant.pk, user.pk, window_start])
        account_id, spent_micro = cursor.fetchone()

        if spent_micro + epsilon_micro > budget_micro:
            existing = find_ledger_entry(tenant.pk, user.pk, request_id)
            # Rolling back also undoes the account row if this call created it:
            # exhausted and replayed write nothing.
            transaction.set_rollback(True)
            if existing is not None:
                return result(SPEND_REPLAYED, existing, spent_micro)
            logger.info(
                "Privacy budget exhausted for user %s of tenant %s: %s of %s micro-epsilon spent, %s requested",
                user.pk,
                tenant.pk,
                spent_micro,
                budget_micro,
                epsilon_micro,
            )
            return result(SPEND_EXHAUSTED, None, spent_micro)

        created_at = timezone.now()
        cursor.execute(
            _CHARGE_SQL,
            [
                tenant.pk, user.pk, request_id, epsilon_micro, mechanism,
                connection.ops.adapt_json_value(parameters, None), window_start,
                connection.ops.adapt_json_value(list(released), None), created_at,
                epsilon_micro, account_id,
            ],
        )
        row = cursor.fetchone()
        if row is None:
            # The request id is already in the ledger: committed before this call, or
            # meanwhile by a spend in another window, which this lock does not serialise.
            existing = find_ledger_entry(tenant.pk, user.pk, request_id)
            transaction.set_rollback(True)
            if existing is None:
                raise IntegrityError(f"ledger entry of request {request_id!r} conflicted but cannot be read")
            return result(SPEND_REPLAYED, existing, spent_micro)

    entry = LedgerEntry(
        pk=row[0],
        tenant=tenant,
        user=user,
        request_id=request_id,
        epsilon_micro=epsilon_micro,
        mechanism=mechanism,
        parameters=parameters,
        window_start=window_start,
        released=list(released),
        created_at=created_at,
    )
    entry._state.adding = False
    entry._state.db = connection.alias
    logger.debug(
        "Charged %s micro-epsilon to user %s of tenant %s for request %s",
        epsilon_micro,
        user.pk,
        tenant.pk,
        request_id,
    )
    return result(SPEND_CHARGED, entry, spent_micro + epsilon_micro)


def store_privatised_user_vector(
    user, window_start: datetime, history_version: int, vector, epsilon: float, ledger_entry: LedgerEntry
) -> PrivatisedUserVector:
    """Store a charged noisy user vector for reuse, keeping the first one stored.

    Two concurrent responses may both privatise and pay for a vector. Both releases
    are charged, and later responses reuse the one stored first.
    """
    values = np.asarray(vector, dtype=np.float64).reshape(-1)
    if values.shape[0] != USER_VECTOR_DIM:
        raise ValueError(f"vector must have {USER_VECTOR_DIM} dimensions; got {values.shape[0]}")
    if not np.all(np.isfinite(values)):
        raise ValueError("vector must be finite; got NaN or infinity")
    PrivatisedUserVector.objects.bulk_create(
        [
            PrivatisedUserVector(
                tenant_id=user.tenant_id,
                user=user,
                window_start=window_start,
                history_version=history_version,
                vector=values,
                epsilon=epsilon,
                ledger_entry=ledger_entry,
            )
        ],
        ignore_conflicts=True,
    )
    return PrivatisedUserVector.objects.get(user=user, window_start=window_start, history_version=history_version)


def _check_policy_fields(values: dict) -> None:
    unknown = set(values) - set(POLICY_EDITABLE_FIELDS)
    if unknown:
        raise ValueError(
            f"unknown privacy policy fields: {', '.join(sorted(unknown))}; "
            f"editable fields are {', '.join(POLICY_EDITABLE_FIELDS)}"
        )


def _actor_or_none(actor):
    if actor is None or not getattr(actor, "is_authenticated", False):
        return None
    return actor


def _actor_id(actor) -> int | None:
    actor = _actor_or_none(actor)
    return actor.pk if actor is not None else None
