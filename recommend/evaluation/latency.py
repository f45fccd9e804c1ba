"""Latency of personalised responses through the real serving path, per privacy level.

Each measured call is ``recommend.serving.recommend_for_user`` against the database:
history read, privatised user vector, HNSW retrieval, ranker, noise, and the ledger
write that charges the user's budget. So every call writes one ledger row, under a
request id that starts with ``eval-``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence

import numpy as np
from django.utils import timezone

from privacy.accounting import window_bounds
from privacy.models import BudgetAccount
from privacy.services import get_privacy_policy, update_privacy_policy
from recommend import artifacts
from recommend.models import ModelKind, ModelVersion
from users.models import AppUser

logger = logging.getLogger(__name__)

# Calls made before measuring, so the ranker is loaded and the caches are warm.
WARMUP_CALLS = 3


def missing_active_models(tenant) -> list[str]:
    """Return the model kinds (fusion, ranker) that the tenant has no active version of."""
    active = set(ModelVersion.objects.filter(tenant=tenant, is_active=True).values_list("kind", flat=True))
    return [kind for kind in (ModelKind.FUSION, ModelKind.RANKER) if kind not in active]


def fresh_users(tenant, count: int, seed: int) -> list[AppUser]:
    """Return ``count`` users of the tenant, drawn with ``seed``, with no spending in the current window.

    Such users have their whole budget and no privatised user vector to reuse, so
    every call runs the full mechanism.
    """
    policy = get_privacy_policy(tenant)
    window_start, _ = window_bounds(timezone.now(), policy.window_seconds)
    spent = BudgetAccount.objects.filter(tenant=tenant, window_start=window_start).values_list("user_id", flat=True)
    user_ids = np.array(
        AppUser.objects.filter(tenant=tenant, interactions__isnull=False).exclude(pk__in=spent)
        .distinct().order_by("pk").values_list("pk", flat=True)
    )
    if len(user_ids) < count:
        raise ValueError(
            f"tenant {tenant.name} has {len(user_ids)} users with history and no spending in the current "
            f"budget window; {count} are needed. Lower the latency sample or wait for the next window."
        )
    picked = np.sort(np.random.default_rng(seed).choice(user_ids, size=count, replace=False))
    users = AppUser.objects.in_bulk([int(pk) for pk in picked])
    return [users[int(pk)] for pk in picked]


def measure_serving_latency(
    tenant, mechanisms: Sequence[str], epsilons: Sequence[float], *, users_per_cell: int, k: int, seed: int,
    progress=None,
) -> dict:
    """Time ``recommend_for_user`` for fresh users under each (mechanism, epsilon) policy.

    The tenant's policy is changed for the measurement (audited, like any policy
    change) and restored afterwards, also when a call fails. The budget is raised to
    the largest epsilon if it is lower, so each fresh user can pay for one response.
    Returns the rows of the latency table and the restored policy values.
    """
    from recommend.serving import active_ranker, recommend_for_user

    policy = get_privacy_policy(tenant)
    original = {"mechanism": str(policy.mechanism), "epsilon": float(policy.epsilon), "budget": float(policy.budget)}
    cells = [(mechanism, epsilon) for mechanism in mechanisms for epsilon in epsilons]
    users = fresh_users(tenant, len(cells) * users_per_cell + WARMUP_CALLS, seed)
    run_id = uuid.uuid4().hex[:8]
    rows = []
    try:
        for cell_index, (mechanism, epsilon) in enumerate(cells):
            policy = update_privacy_policy(policy, changes={
                "mechanism": mechanism, "epsilon": float(epsilon), "budget": max(original["budget"], float(epsilon)),
            })
            artifacts.forget(tenant.pk)
            # Loading and tracing the ranker happens once per process and version, not per
            # response, so it is done here, outside the timed calls.
            active_ranker(tenant.pk)
            if cell_index == 0:
                for user in users[-WARMUP_CALLS:]:
                    recommend_for_user(tenant, user, k=k, request_id=f"eval-{run_id}-warmup-{user.pk}")

            cell_users = users[cell_index * users_per_cell:(cell_index + 1) * users_per_cell]
            durations, personalised, reused, fallbacks = [], 0, 0, {}
            for user in cell_users:
                request_id = f"eval-{run_id}-{mechanism}-{epsilon:g}-{user.pk}"
                started = time.perf_counter()
                result = recommend_for_user(tenant, user, k=k, request_id=request_id)
                durations.append(1000.0 * (time.perf_counter() - started))
                personalised += int(result.personalised)
                reused += int(bool(result.details.get("reused_release")))
                if result.fallback_reason:
                    fallbacks[result.fallback_reason] = fallbacks.get(result.fallback_reason, 0) + 1
                if progress is not None:
                    progress.update(1)
            p50, p95, p99 = np.percentile(durations, [50, 95, 99])
            rows.append({
                "mechanism": mechanism, "epsilon": float(epsilon), "calls": len(durations),
                "personalised": personalised, "reused_user_vector": reused, "fallbacks": fallbacks,
                "p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99),
                "mean_ms": float(np.mean(durations)), "max_ms": float(np.max(durations)),
            })
            logger.info("Measured serving latency of %s at epsilon %s for tenant %s", mechanism, epsilon, tenant.pk)
    finally:
        update_privacy_policy(get_privacy_policy(tenant), changes=original)
        artifacts.forget(tenant.pk)
    return {
        "rows": rows, "k": k, "users_per_cell": users_per_cell, "warmup_calls": WARMUP_CALLS,
        "request_id_prefix": f"eval-{run_id}-", "policy_restored": original,
        "exclude_seen": get_privacy_policy(tenant).exclude_seen,
        "n_candidates": get_privacy_policy(tenant).n_candidates,
        "history_length": get_privacy_policy(tenant).history_length,
    }
