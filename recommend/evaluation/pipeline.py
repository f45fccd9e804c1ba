"""The serving algorithm of ``recommend.serving.recommend_for_user``, run offline.

One response of the platform, for a user with history embeddings e_1 .. e_n (the last
L interactions, event weights w_i):

1. user vector u = (1/L) * sum_i w_i * e_i / ||e_i||_1 (``compute_user_vector``), or
   its privatised release ũ (``privatise_user_vector``);
2. the C candidates with the largest <ũ, v> among the items the user has not seen
   (serving queries pgvector's HNSW index, and this module an exact numpy matrix product);
3. the ranker's scores of the C candidates (``laplace`` and ``importance_weighted``
   noise them and release the top k by ``select_top_k`` with importance
   |<ũ, v_j>|), or the order by <ũ, v_j> alone (``user_vector``, as serving does).

Nothing here touches the database, so thousands of users can be evaluated per minute
and the tenant's models, ledger and budgets stay as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from privacy.mechanisms import (
    MECHANISM_USER_VECTOR,
    MechanismPlan,
    build_mechanism,
    compute_user_vector,
    privatise_user_vector,
    select_top_k,
)
from privacy.sampling import NoiseSampler
from recommend.evaluation.baselines import top_k_excluding
from recommend.ranker import SequenceRanker

# Users whose candidates are retrieved with one matrix product.
USER_BLOCK = 64


@dataclass
class EvaluationUsers:
    """The users of one evaluation: what each one has seen and what counts as relevant.

    All lists are indexed by evaluated user. ``histories[u]`` contains catalogue rows,
    oldest first, and ``history_weights[u]`` the event weight of each (in [0, 1]).
    ``excluded[u]`` lists the rows never recommended to u (the seen items), and
    ``relevant[u]`` the held-out rows that count as hits.
    """

    histories: list[np.ndarray]
    history_weights: list[np.ndarray]
    excluded: list[np.ndarray]
    relevant: list[set[int]]

    def __len__(self) -> int:
        return len(self.histories)

    def subset(self, indices: Sequence[int]) -> EvaluationUsers:
        return EvaluationUsers(
            histories=[self.histories[i] for i in indices],
            history_weights=[self.history_weights[i] for i in indices],
            excluded=[self.excluded[i] for i in indices],
            relevant=[self.relevant[i] for i in indices],
        )


@dataclass
class PlatformModel:
    """Fused item embeddings, a ranker and the serving parameters of the privacy policy.

    ``fused`` is the (N, D) matrix of unit-norm fused embeddings, one row per catalogue
    item. ``history_length`` is L, ``n_candidates`` is C, and ``retrieval_fraction`` is
    the share of epsilon spent on ũ by the mechanisms that also noise scores.
    """

    fused: np.ndarray
    ranker: SequenceRanker | None
    history_length: int
    n_candidates: int
    retrieval_fraction: float

    def recent(self, users: EvaluationUsers, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the fused embeddings and event weights of the user's last L interactions."""
        rows = users.histories[index][-self.history_length:]
        weights = users.history_weights[index][-self.history_length:]
        return self.fused[rows], weights

    def candidates(self, queries: np.ndarray, excluded: Sequence[np.ndarray]) -> np.ndarray:
        """Return each query's C best unseen rows by <query, v>, best first, -1 padded."""
        scores = queries.astype(np.float32) @ self.fused.T
        return top_k_excluding(scores, excluded, self.n_candidates)

    def ranker_scores(self, history: np.ndarray, candidate_rows: np.ndarray) -> np.ndarray:
        """Score candidates as serving does: the ranker, or the history mean without one."""
        candidates = self.fused[candidate_rows]
        if self.ranker is not None:
            return self.ranker.score_candidates(history, candidates)
        # Serving maps the history-mean similarity into [0, 1] when no ranker is active.
        return (candidates @ history.mean(axis=0) + 1.0) / 2.0


def _blocks(count: int) -> list[range]:
    return [range(start, min(start + USER_BLOCK, count)) for start in range(0, count, USER_BLOCK)]


def _top_by_score(rows: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    # Best score first, ties to the earlier (better retrieved) candidate.
    order = np.lexsort((np.arange(len(scores)), -scores))[:k]
    return rows[order]


def _padded(ranked: list[np.ndarray], k: int) -> np.ndarray:
    out = np.full((len(ranked), k), -1, dtype=np.int64)
    for index, rows in enumerate(ranked):
        out[index, : len(rows)] = rows[:k]
    return out


def rank_non_private(
    model: PlatformModel, users: EvaluationUsers, k: int, *, scorer: str = "ranker",
    on_block: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Return each user's top k rows, shape (n_users, k), from the exact user vector u.

    ``scorer`` is "ranker" (retrieval, then the ranker's order) or "user_vector" (the
    order by <u, v>: the non-private limit of the ``user_vector`` mechanism).
    """
    if scorer not in ("ranker", "user_vector"):
        raise ValueError(f"scorer must be 'ranker' or 'user_vector'; got {scorer!r}")
    ranked: list[np.ndarray] = []
    for block in _blocks(len(users)):
        recents = [model.recent(users, i) for i in block]
        queries = np.stack([
            compute_user_vector(embeddings, weights, model.history_length) for embeddings, weights in recents
        ])
        candidates = model.candidates(queries, [users.excluded[i] for i in block])
        for (embeddings, _), rows in zip(recents, candidates):
            rows = rows[rows >= 0]
            if scorer == "user_vector":
                ranked.append(rows[:k])
            else:
                ranked.append(_top_by_score(rows, model.ranker_scores(embeddings, rows), k))
        if on_block is not None:
            on_block(len(block))
    return _padded(ranked, k)


def noise_seed(seed: int, repetition: int, epsilon: float, user: int) -> int:
    """Return the sampler seed of one user's response in one repetition at one epsilon.

    Every mechanism gets the same seed for the same response (common random numbers),
    so ``laplace`` and ``importance_weighted``, which spend the same rho * epsilon on
    ũ, release the same ũ and differ only in how they noise the scores.
    """
    epsilon_key = int(round(epsilon * 1_000_000))
    state = np.random.SeedSequence([seed, repetition, epsilon_key, user]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 32 | int(state[1])


def mechanism_plans(model: PlatformModel, mechanisms: Sequence[str], epsilon: float, k: int) -> dict:
    """Build each mechanism charged ``epsilon`` and plan a release of k of C candidates."""
    plans = {}
    for name in mechanisms:
        mechanism = build_mechanism(
            name, epsilon, retrieval_fraction=model.retrieval_fraction, history_length=model.history_length
        )
        plans[name] = mechanism.plan(k=k, n_candidates=model.n_candidates)
    return plans


def rank_private(
    model: PlatformModel, users: EvaluationUsers, plans: dict[str, MechanismPlan], k: int, *, seed: int,
    repetition: int, on_block: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Return each mechanism's released top k rows per user, shape (n_users, k).

    Each user's response follows the serving algorithm with a sampler seeded by
    ``noise_seed``. Ranker scores are computed once when two mechanisms released the
    same ũ, because the scores depend only on the candidates and the history.
    """
    epsilon = next(iter(plans.values())).epsilon
    ranked: dict[str, list[np.ndarray]] = {name: [] for name in plans}
    for block in _blocks(len(users)):
        recents = [model.recent(users, i) for i in block]
        samplers: dict[str, list[NoiseSampler]] = {}
        noisy: dict[str, np.ndarray] = {}
        for name, plan in plans.items():
            samplers[name] = [NoiseSampler.seeded(noise_seed(seed, repetition, epsilon, i)) for i in block]
            noisy[name] = np.stack([
                privatise_user_vector(embeddings, weights, plan, sampler)
                for (embeddings, weights), sampler in zip(recents, samplers[name])
            ])
        excluded = [users.excluded[i] for i in block]
        # Mechanisms that released the same ũ for the whole block share one retrieval.
        retrieved: dict[bytes, np.ndarray] = {}
        candidates = {}
        for name in plans:
            key = noisy[name].tobytes()
            if key not in retrieved:
                retrieved[key] = model.candidates(noisy[name], excluded)
            candidates[name] = retrieved[key]

        for position in range(len(block)):
            history = recents[position][0]
            # (ũ bytes, candidate rows bytes) -> ranker scores, shared by mechanisms.
            score_cache: dict[tuple[bytes, bytes], np.ndarray] = {}
            for name, plan in plans.items():
                vector = noisy[name][position]
                rows = candidates[name][position]
                rows = rows[rows >= 0]
                retrieval_scores = model.fused[rows] @ vector.astype(np.float32)
                if name == MECHANISM_USER_VECTOR:
                    # Serving ranks by <ũ, v_j> alone: post-processing of ũ.
                    order = np.argsort(-retrieval_scores, kind="stable")[:k]
                    ranked[name].append(rows[order])
                    continue
                key = (vector.tobytes(), rows.tobytes())
                if key not in score_cache:
                    score_cache[key] = model.ranker_scores(history, rows)
                order = select_top_k(
                    score_cache[key], k, plan, samplers[name][position], importance=np.abs(retrieval_scores)
                )
                ranked[name].append(rows[order])
        if on_block is not None:
            on_block(len(block))
    return {name: _padded(rows, k) for name, rows in ranked.items()}


def summarise(values: Sequence[float]) -> dict:
    """Return the mean and sample standard deviation of per-repetition values."""
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()), "std": std, "values": [float(v) for v in array]}
