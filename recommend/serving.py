"""Serve one recommendation response under the tenant's privacy policy.

Order of a personalised response (unit of privacy: one interaction of one user):

1. read the user's last L interactions (their fused embeddings and event weights);
2. the mechanism releases a privatised user vector from them (Laplace mechanism);
3. candidates are retrieved with that released vector: post-processing;
4. the mechanism releases the top k of the candidates' scores (noisy ranker scores,
   or scores computed from the released vector alone, depending on the mechanism);
5. the charged epsilon, the proven bound of steps 2 and 4 together, is debited
   atomically; only then is the list returned. A list that cannot be paid for is
   discarded unseen, so it costs nothing, and a non-personalised list is served.

NOTE: with ``exclude_seen`` on, step 3 drops videos the user has interacted with.
That filter reads the raw history outside any mechanism: it reveals which released
videos the user has not seen, information the calling app already has. Tenants that need
the guarantee to cover the whole response turn ``exclude_seen`` off.
"""

import logging
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import torch
from django.conf import settings

from privacy.mechanisms import build_mechanism
from privacy.sampling import NoiseSampler
from privacy.selectors import BudgetStatus, get_budget_status
from privacy.services import (
    find_privatised_user_vector,
    get_privacy_policy,
    spend_privacy_budget,
    store_privatised_user_vector,
)
from recommend import artifacts
from recommend.models import ModelKind
from recommend.ranker import ranker_from_state
from recommend.retrieval import popular_videos, retrieve_candidates, user_history
from recsys_platform import metrics
from users.models import EVENT_WEIGHTS

logger = logging.getLogger(__name__)

_secure_sampler = NoiseSampler.secure()


@dataclass
class RecommendationResult:
    video_ids: list[str]
    personalised: bool
    mechanism: str
    epsilon_spent: float
    budget: dict
    request_id: str
    fallback_reason: str | None = None
    replayed: bool = False
    details: dict = field(default_factory=dict)


def _load_ranker(version):
    # Web workers already run one request per process or thread on the same cores as
    # PostgreSQL, so torch's own intra-op threads only compete with them. Under load
    # that competition showed as latency spikes of several hundred milliseconds.
    torch.set_num_threads(settings.TORCH_THREADS)
    return ranker_from_state(artifacts.deserialize_state(version.artifact), for_serving=True)


def active_ranker(tenant_id: int):
    return artifacts.load_active(tenant_id, ModelKind.RANKER, _load_ranker)


def recommend_for_user(tenant, user, *, k: int, request_id: str | None = None, epsilon: float | None = None,
                       sampler: NoiseSampler | None = None, policy=None) -> RecommendationResult:
    """Return a ranked list of k video ids for one user, personalised if the budget pays.

    ``policy`` is the tenant's privacy policy when the caller has just read it.
    """
    started = time.perf_counter()
    sampler = sampler or _secure_sampler
    policy = policy or get_privacy_policy(tenant)
    epsilon = policy.epsilon if epsilon is None else epsilon
    mechanism = build_mechanism(
        policy.mechanism, epsilon,
        retrieval_fraction=policy.retrieval_fraction, history_length=policy.history_length,
    )

    status = get_budget_status(tenant, user, policy=policy)
    if request_id is None:
        # A fresh random id cannot be in the ledger yet, so only a caller's id is looked up.
        request_id = uuid.uuid4().hex
    else:
        replay = status.find_entry(request_id)
        if replay is not None:
            return _result(tenant, user, replay.released, True, replay.mechanism, 0.0, request_id, policy,
                           replayed=True)

    embeddings, events, _ = user_history(user.pk, policy.history_length)
    if len(embeddings) == 0:
        return _fallback(tenant, user, k, request_id, policy, "no_history")

    plan = mechanism.plan(k=k, n_candidates=policy.n_candidates)
    reused = None
    if policy.mechanism == "user_vector":
        reused = find_privatised_user_vector(user, status.window_start, user.history_version)
    if reused is None and status.remaining_micro < plan.epsilon_micro:
        metrics.BUDGET_EXHAUSTIONS.labels(tenant=tenant.name).inc()
        return _fallback(tenant, user, k, request_id, policy, "budget_exhausted")

    weights = np.array([EVENT_WEIGHTS.get(e, 1.0) for e in events], np.float64)
    if reused is not None:
        noisy_vector = reused.vector
    else:
        noisy_vector = mechanism.privatise_user_vector(embeddings, weights, plan, sampler)

    candidates = retrieve_candidates(
        tenant.pk, _unit(noisy_vector), policy.n_candidates,
        exclude_seen_by=user.pk if policy.exclude_seen else None,
        ef_search=max(policy.n_candidates, settings.RECOMMEND_HNSW_EF_SEARCH),
    )
    if len(candidates.video_ids) == 0:
        return _fallback(tenant, user, k, request_id, policy, "no_candidates")

    retrieval_scores = candidates.embeddings @ np.asarray(noisy_vector, np.float32)
    if policy.mechanism == "user_vector":
        order = np.argsort(-retrieval_scores, kind="stable")[:k]
    else:
        ranker = active_ranker(tenant.pk)
        if ranker is not None:
            scores = ranker.score_candidates(embeddings, candidates.embeddings)
        else:
            # Without a trained ranker the mechanism noises history-mean similarities,
            # mapped into [0, 1] so the clamped sensitivity still holds.
            scores = (candidates.embeddings @ embeddings.mean(axis=0) + 1.0) / 2.0
        order = mechanism.select_top_k(scores, k, plan, sampler, importance=np.abs(retrieval_scores))
    released = [candidates.external_ids[i] for i in order]

    charge = 0.0 if reused is not None else plan.epsilon
    parameters = {**plan.parameters, "k": k, "n_candidates": int(len(candidates.video_ids))}
    if reused is not None:
        parameters["reused_release_id"] = reused.pk
    spend = spend_privacy_budget(
        tenant=tenant, user=user, request_id=request_id, epsilon=charge, mechanism=policy.mechanism,
        parameters=parameters, released=released, policy=policy,
    )
    if spend.status == "exhausted":
        metrics.BUDGET_EXHAUSTIONS.labels(tenant=tenant.name).inc()
        return _fallback(tenant, user, k, request_id, policy, "budget_exhausted")
    if spend.status == "replayed":
        return _result(tenant, user, spend.entry.released, True, spend.entry.mechanism, 0.0, request_id, policy,
                       replayed=True)
    if policy.mechanism == "user_vector" and reused is None:
        store_privatised_user_vector(user, status.window_start, user.history_version, noisy_vector,
                                     plan.epsilon, spend.entry)

    metrics.RECOMMENDATIONS.labels(tenant=tenant.name, mechanism=policy.mechanism, personalised="true").inc()
    metrics.EPSILON_SPENT.labels(tenant=tenant.name, mechanism=policy.mechanism).inc(charge)
    logger.info("Served %s personalised items to user %s for epsilon %s", len(released), user.pk, charge,
                extra={"tenant_id": tenant.pk, "user_id": user.pk,
                       "elapsed_ms": round(1000 * (time.perf_counter() - started), 2)})
    # The spend returned the account's total under its lock, so the budget shown needs no
    # second read.
    status = BudgetStatus(
        tenant_id=tenant.pk, user_id=user.pk, budget_micro=spend.budget_micro, spent_micro=spend.spent_micro,
        window_start=spend.window_start, window_end=spend.window_end, mechanism=policy.mechanism,
        epsilon_per_response=policy.epsilon,
    )
    return _result(tenant, user, released, True, policy.mechanism, charge, request_id, policy, status=status,
                   details={"exact_fallback": candidates.used_exact_fallback, "reused_release": reused is not None})


def _unit(vector) -> np.ndarray:
    vector = np.asarray(vector, np.float32)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def _fallback(tenant, user, k, request_id, policy, reason) -> RecommendationResult:
    mechanism = policy.mechanism
    metrics.FALLBACKS.labels(tenant=tenant.name, reason=reason).inc()
    metrics.RECOMMENDATIONS.labels(tenant=tenant.name, mechanism=mechanism, personalised="false").inc()
    logger.info("Served a non-personalised list to user %s: %s", user.pk, reason,
                extra={"tenant_id": tenant.pk, "user_id": user.pk})
    return _result(tenant, user, popular_videos(tenant.pk, k), False, mechanism, 0.0, request_id, policy,
                   fallback_reason=reason)


def _result(tenant, user, video_ids, personalised, mechanism, epsilon, request_id, policy, *, replayed=False,
            fallback_reason=None, details=None, status: BudgetStatus | None = None) -> RecommendationResult:
    status = status or get_budget_status(tenant, user, policy=policy)
    return RecommendationResult(
        video_ids=list(video_ids), personalised=personalised, mechanism=mechanism, epsilon_spent=epsilon,
        budget=status.as_dict(), request_id=request_id, fallback_reason=fallback_reason, replayed=replayed,
        details=details or {},
    )
