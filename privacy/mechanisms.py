"""Differentially private mechanisms for one personalised response.

Unit of privacy: one interaction of one user (event-level). Two histories are
neighbours when one is the other plus one interaction. Every bound below is a pure
epsilon-DP guarantee under that relation.

A response is served in three steps, and each reads the private history only inside a
mechanism or as post-processing of one:

1. ``privatise_user_vector`` releases a noisy user vector
   ũ = u + Lap(Delta_1 / epsilon_u) per coordinate, from
   u = (1/L) * sum_i w_i * e_i / ||e_i||_1 over the last L interactions;
2. retrieval of C candidates with ũ is post-processing;
3. ``select_top_k`` releases the indices of k of the C candidates, either through a
   mechanism on ranking scores that read the raw history (``laplace``,
   ``importance_weighted``) or as post-processing of ũ (``user_vector``).

The charged epsilon is epsilon_u + epsilon_s by basic sequential composition
(Dwork & Roth 2014, "The Algorithmic Foundations of Differential Privacy",
Theorem 3.16). It applies although the candidates and the importance weights of
step 3 are chosen from ũ, because each step's guarantee is proven for every value of
the earlier outputs.

Noise is exact discrete Laplace on a power-of-two grid (``privacy.sampling``). The
grids are chosen from the sensitivities, so that each bound accounts for snapping to
the grid. The research method implemented is arXiv 2504.08751 ("Research on the
Design of a Short Video Recommendation System Based on Multimodal Information and
Differential Privacy"): its per-score Laplace noise is ``laplace`` and its
importance-weighted noise is ``importance_weighted``, both charged their true cost.
"""

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from privacy.accounting import CALIBRATION_MARGIN, epsilon_to_micro
from privacy.sampling import DEFAULT_GRID_BITS, NoiseSampler, power_of_two_at_most
from privacy.validation import (
    check_epsilon,
    positive_integer_error,
    retrieval_fraction_error,
)

MECHANISM_LAPLACE = "laplace"
MECHANISM_IMPORTANCE_WEIGHTED = "importance_weighted"
MECHANISM_USER_VECTOR = "user_vector"
MECHANISM_NON_PRIVATE = "non_private"

# Delta: ranking scores are clamped to [0, 1], and one interaction can move a
# Transformer's score anywhere in that range.
SCORE_SENSITIVITY = 1.0
# gamma_s: the score grid. A power of two <= Delta * 2**-20, so Delta is a whole
# number of grid steps and snapping a score to the grid cannot increase it.
SCORE_GRANULARITY = power_of_two_at_most(SCORE_SENSITIVITY) * 2.0**-DEFAULT_GRID_BITS
# Relative allowance added to the user vector's L1 sensitivity Delta_1 = 2 / L. Half of
# it covers snapping (at most one grid step per coordinate, see user_vector_granularity).
# The other half, 2**-20 / L, covers float64 rounding in computing u and u'. By standard
# summation error bounds (an estimate, not a proof) that rounding is below
# (d + log2 L + 3) * 2**-53 in L1 norm, about 2e-14 for d = 128: over 10**4 times
# smaller for every L up to MAX_HISTORY_LENGTH.
USER_VECTOR_SENSITIVITY_ALLOWANCE = 2.0**-DEFAULT_GRID_BITS
# Largest history length L accepted, which keeps the rounding allowance 2**-20 / L large.
MAX_HISTORY_LENGTH = 1000
# Importance weights at or below this are dropped: their noise scale would exceed
# 2**40 / epsilon_s score ranges, so the released score would carry nothing.
MIN_IMPORTANCE_WEIGHT = 2.0**-40

DEFAULT_RETRIEVAL_FRACTION = 0.5
DEFAULT_HISTORY_LENGTH = 50

THEOREM_LAPLACE_MECHANISM = "Laplace mechanism (Dwork & Roth 2014, Theorem 3.6)"
THEOREM_COMPOSITION = "basic sequential composition (Dwork & Roth 2014, Theorem 3.16)"
THEOREM_POST_PROCESSING = "post-processing (Dwork & Roth 2014, Proposition 2.1)"
THEOREM_NOISY_TOP_K = (
    "one-shot noisy top-k by randomness alignment (Ding, Wang, Zhang, Kifer 2019, "
    "Noisy Top-K with Gap), on the score grid"
)


@dataclass(frozen=True)
class MechanismPlan:
    """The noise calibration of one response and the epsilon it is charged.

    ``epsilon`` is the total charged to the ledger, a proven upper bound on the
    response's privacy loss (``theorem`` names the proof). Scales are in the units of
    what they noise: ``user_vector_scale`` in L1-normalised embedding units,
    ``score_scale`` in score units (scores in [0, 1]). ``score_scale_rule`` is
    ``"uniform"`` (one ``score_scale`` for every score), ``"importance"`` (per-score
    scales b_j = score_scale / w_j = Delta / (epsilon_s * w_j), see
    ``importance_score_scales``) or ``"none"`` (scores are not noised:
    post-processing of ũ, or no privacy; ``score_scale`` is None).
    """

    mechanism: str
    epsilon: float
    epsilon_user_vector: float
    epsilon_scores: float
    k: int
    n_candidates: int
    history_length: int
    user_vector_sensitivity: float
    user_vector_scale: float | None
    sensitivity: float
    score_scale: float | None
    score_scale_rule: str
    score_granularity: float
    theorem: str
    parameters: dict = field(default_factory=dict)

    @property
    def epsilon_micro(self) -> int:
        """Return the charged epsilon in ledger units (micro-epsilon, rounded up)."""
        return epsilon_to_micro(self.epsilon)


def paper_nominal_cost(nominal_epsilon_per_score: float, k: int, n_candidates: int) -> float:
    """Return the true epsilon of releasing the top k of C scores noised at a nominal epsilon.

    The per-score calibration of arXiv 2504.08751 adds Lap(Delta / epsilon_nominal) to
    each score and calls the release epsilon_nominal-DP. Releasing k of C such scores
    costs min(k * (2 + gamma_s / Delta), C) * epsilon_nominal: the noisy top-k bound of
    ``select_top_k`` or the Laplace mechanism on the whole vector, whichever is smaller
    (about min(2k, C) * epsilon_nominal, as gamma_s / Delta = 2**-20).
    """
    _check_count("k", k)
    _check_count("n_candidates", n_candidates)
    top_k_factor = k * (2.0 + SCORE_GRANULARITY / SCORE_SENSITIVITY)
    return min(top_k_factor, float(n_candidates)) * nominal_epsilon_per_score


def laplace_score_cost_numerator(k: int, n_candidates: int) -> float:
    """Return c(k, C) = min(k * (2 * Delta + gamma_s), C * Delta); the loss is c / scale."""
    top_k = k * (2.0 * SCORE_SENSITIVITY + SCORE_GRANULARITY)  # noisy top-k on the grid
    whole_vector = n_candidates * SCORE_SENSITIVITY  # Laplace mechanism on all C scores
    return min(top_k, whole_vector)


class Mechanism:
    """A privacy mechanism for one personalised response, calibrated to a charged epsilon.

    ``epsilon`` is what each response is charged (finite, > 0, at most
    ``PRIVACY_MAX_EPSILON``, which is itself capped at 10). ``retrieval_fraction`` (rho,
    in (0, 1)) is the share of epsilon spent on the user vector by the mechanisms that
    also noise scores. ``history_length`` is L, the number of most recent interactions
    that make up the user vector.
    """

    name: ClassVar[str] = ""
    # 1 except in the audit's deliberately under-noised controls (privacy.audit), where
    # they scale the user vector's and the scores' noise down while the plan still
    # claims the same epsilon.
    _noise_multiplier: float = 1.0
    _score_noise_multiplier: float = 1.0

    def __init__(
        self,
        epsilon: float,
        *,
        retrieval_fraction: float = DEFAULT_RETRIEVAL_FRACTION,
        history_length: int = DEFAULT_HISTORY_LENGTH,
    ):
        self.epsilon = check_epsilon(epsilon)
        message = retrieval_fraction_error(retrieval_fraction)
        if message is not None:
            raise ValueError(message)
        self.retrieval_fraction = float(retrieval_fraction)
        _check_history_length(history_length)
        self.history_length = int(history_length)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(epsilon={self.epsilon!r})"

    def split_epsilon(self) -> tuple[float, float]:
        """Return (epsilon_u, epsilon_s): epsilon_u = rho * epsilon, epsilon_s = epsilon - epsilon_u."""
        epsilon_u = self.retrieval_fraction * self.epsilon
        return epsilon_u, self.epsilon - epsilon_u

    def plan(self, k: int, n_candidates: int) -> MechanismPlan:
        """Calibrate the noise of one response that releases k of n_candidates candidates."""
        raise NotImplementedError

    def charged_epsilon(self, k: int, n_candidates: int) -> float:
        """Return the epsilon charged for releasing k of n_candidates: the plan's total."""
        return self.plan(k, n_candidates).epsilon

    def privatise_user_vector(self, history_embeddings, history_weights, plan, sampler) -> np.ndarray:
        """Release the noisy user vector of ``plan``; see the module function of this name."""
        return privatise_user_vector(history_embeddings, history_weights, plan, sampler)

    def select_top_k(self, scores, k: int, plan, sampler, importance=None) -> np.ndarray:
        """Release k candidate indices under ``plan``; see the module function of this name."""
        return select_top_k(scores, k, plan, sampler, importance=importance)

    def _user_vector_part(self, epsilon_u: float) -> tuple[float, float]:
        # Laplace mechanism: b_u = Delta_1 * (1 + allowance) / epsilon_u, with Delta_1 = 2 / L.
        sensitivity = user_vector_sensitivity(self.history_length)
        effective_sensitivity = sensitivity * (1.0 + USER_VECTOR_SENSITIVITY_ALLOWANCE)
        scale = effective_sensitivity / (epsilon_u * (1.0 - CALIBRATION_MARGIN))
        return sensitivity, scale * self._noise_multiplier

    def _base_parameters(self, k: int, n_candidates: int) -> dict:
        return {
            "epsilon": self.epsilon,
            "k": k,
            "n_candidates": n_candidates,
            "history_length": self.history_length,
            "unit_of_privacy": "one interaction of one user",
        }


class LaplaceMechanism(Mechanism):
    """Per-score Laplace noise on the ranking scores, charged its true top-k cost.

    The scores s_j in [0, 1] come from a model that reads the raw history, so each one
    has sensitivity Delta = 1. Every score gets s'_j = s_j + Lap(b) with
    b = min(k * (2 * Delta + gamma_s), C * Delta) / epsilon_s, and the top k noisy
    scores are released (see ``select_top_k`` for the proof of each bound). With
    epsilon_u = rho * epsilon on ũ, the total is epsilon_u + epsilon_s = epsilon.
    """

    name = MECHANISM_LAPLACE

    def plan(self, k: int, n_candidates: int) -> MechanismPlan:
        _check_count("k", k)
        _check_count("n_candidates", n_candidates)
        epsilon_u, epsilon_s = self.split_epsilon()
        sensitivity_u, scale_u = self._user_vector_part(epsilon_u)

        cost_numerator = laplace_score_cost_numerator(k, n_candidates)
        # b = c(k, C) / epsilon_s, so the scores' loss is c(k, C) / b = epsilon_s.
        scale = cost_numerator / (epsilon_s * (1.0 - CALIBRATION_MARGIN)) * self._score_noise_multiplier
        uses_top_k_bound = cost_numerator < n_candidates * SCORE_SENSITIVITY
        nominal = SCORE_SENSITIVITY / scale  # what the paper would call epsilon per score

        parameters = self._base_parameters(k, n_candidates) | {
            "retrieval_fraction": self.retrieval_fraction,
            "epsilon_user_vector": epsilon_u,
            "epsilon_scores": epsilon_s,
            "user_vector_scale": scale_u,
            "score_scale": scale,
            "score_bound": "noisy_top_k" if uses_top_k_bound else "whole_vector",
            "nominal_epsilon_per_score": nominal,
            "paper_nominal_cost": paper_nominal_cost(nominal, k, n_candidates),
        }
        score_theorem = THEOREM_NOISY_TOP_K if uses_top_k_bound else THEOREM_LAPLACE_MECHANISM
        return MechanismPlan(
            mechanism=self.name,
            epsilon=self.epsilon,
            epsilon_user_vector=epsilon_u,
            epsilon_scores=epsilon_s,
            k=k,
            n_candidates=n_candidates,
            history_length=self.history_length,
            user_vector_sensitivity=sensitivity_u,
            user_vector_scale=scale_u,
            sensitivity=SCORE_SENSITIVITY,
            score_scale=scale,
            score_scale_rule="uniform",
            score_granularity=SCORE_GRANULARITY,
            theorem=(
                f"user vector: {THEOREM_LAPLACE_MECHANISM}; scores: {score_theorem}; "
                f"total: {THEOREM_COMPOSITION}"
            ),
            parameters=parameters,
        )


class ImportanceWeightedMechanism(Mechanism):
    """Importance-weighted Laplace noise on the ranking scores.

    Weights w_j = |g_j| / sum_l |g_l| come from the caller's importance g_j, which must
    be computed only from ũ and public data (the serving path passes |<ũ, v_j>|, the
    gradient of the retrieval score with respect to the scale of ũ). Each score gets
    s'_j = s_j + Lap(Delta / (epsilon_s * w_j)); releasing the whole vector costs
    sum_j Delta / b_j = epsilon_s * sum_j w_j = epsilon_s (Laplace mechanism with
    per-coordinate scales, Dwork & Roth 2014, Theorem 3.6: the pmf ratio of
    independent coordinates is the product of the per-coordinate ratios
    exp(|s_j - s'_j| / b_j) <= exp(Delta / b_j)). Top-k is post-processing.
    """

    name = MECHANISM_IMPORTANCE_WEIGHTED

    def plan(self, k: int, n_candidates: int) -> MechanismPlan:
        _check_count("k", k)
        _check_count("n_candidates", n_candidates)
        epsilon_u, epsilon_s = self.split_epsilon()
        sensitivity_u, scale_u = self._user_vector_part(epsilon_u)
        # Scale at importance weight 1; score j gets b_j = unit_scale / w_j.
        unit_scale = SCORE_SENSITIVITY / (epsilon_s * (1.0 - CALIBRATION_MARGIN)) * self._score_noise_multiplier
        parameters = self._base_parameters(k, n_candidates) | {
            "retrieval_fraction": self.retrieval_fraction,
            "epsilon_user_vector": epsilon_u,
            "epsilon_scores": epsilon_s,
            "user_vector_scale": scale_u,
            "score_scale_at_unit_weight": unit_scale,
            "score_scale_rule": "sensitivity / (epsilon_scores * importance_weight)",
        }
        return MechanismPlan(
            mechanism=self.name,
            epsilon=self.epsilon,
            epsilon_user_vector=epsilon_u,
            epsilon_scores=epsilon_s,
            k=k,
            n_candidates=n_candidates,
            history_length=self.history_length,
            user_vector_sensitivity=sensitivity_u,
            user_vector_scale=scale_u,
            sensitivity=SCORE_SENSITIVITY,
            score_scale=unit_scale,
            score_scale_rule="importance",
            score_granularity=SCORE_GRANULARITY,
            theorem=(
                f"user vector: {THEOREM_LAPLACE_MECHANISM}; scores: {THEOREM_LAPLACE_MECHANISM} "
                f"with per-score scales, top-k by {THEOREM_POST_PROCESSING}; total: {THEOREM_COMPOSITION}"
            ),
            parameters=parameters,
        )


class UserVectorMechanism(Mechanism):
    """All of epsilon on the user vector; retrieval and ranking are post-processing.

    ũ = u + Lap(Delta_1 / epsilon) per coordinate (Laplace mechanism, Dwork & Roth
    2014, Theorem 3.6), and candidates are ranked by <ũ, v_j> only, so the whole
    response costs epsilon (post-processing, Dwork & Roth 2014, Proposition 2.1). A
    stored ũ may serve later responses at no further cost while the history is
    unchanged, because they are post-processing of the same release.
    """

    name = MECHANISM_USER_VECTOR

    def split_epsilon(self) -> tuple[float, float]:
        return self.epsilon, 0.0

    def plan(self, k: int, n_candidates: int) -> MechanismPlan:
        _check_count("k", k)
        _check_count("n_candidates", n_candidates)
        sensitivity_u, scale_u = self._user_vector_part(self.epsilon)
        parameters = self._base_parameters(k, n_candidates) | {
            "epsilon_user_vector": self.epsilon,
            "epsilon_scores": 0.0,
            "user_vector_scale": scale_u,
        }
        return MechanismPlan(
            mechanism=self.name,
            epsilon=self.epsilon,
            epsilon_user_vector=self.epsilon,
            epsilon_scores=0.0,
            k=k,
            n_candidates=n_candidates,
            history_length=self.history_length,
            user_vector_sensitivity=sensitivity_u,
            user_vector_scale=scale_u,
            sensitivity=SCORE_SENSITIVITY,
            score_scale=None,
            score_scale_rule="none",
            score_granularity=SCORE_GRANULARITY,
            theorem=f"user vector: {THEOREM_LAPLACE_MECHANISM}; ranking: {THEOREM_POST_PROCESSING}",
            parameters=parameters,
        )


class NonPrivateMechanism(Mechanism):
    """No noise and no privacy (epsilon = inf): the evaluation's upper reference only.

    Never selectable by a tenant policy and not in ``MECHANISMS``.
    """

    name = MECHANISM_NON_PRIVATE

    def __init__(self, *, history_length: int = DEFAULT_HISTORY_LENGTH):
        _check_history_length(history_length)
        self.epsilon = math.inf
        self.retrieval_fraction = DEFAULT_RETRIEVAL_FRACTION
        self.history_length = int(history_length)

    def split_epsilon(self) -> tuple[float, float]:
        return math.inf, math.inf

    def plan(self, k: int, n_candidates: int) -> MechanismPlan:
        _check_count("k", k)
        _check_count("n_candidates", n_candidates)
        return MechanismPlan(
            mechanism=self.name,
            epsilon=math.inf,
            epsilon_user_vector=math.inf,
            epsilon_scores=math.inf,
            k=k,
            n_candidates=n_candidates,
            history_length=self.history_length,
            user_vector_sensitivity=user_vector_sensitivity(self.history_length),
            user_vector_scale=None,
            sensitivity=SCORE_SENSITIVITY,
            score_scale=None,
            score_scale_rule="none",
            score_granularity=SCORE_GRANULARITY,
            theorem="none: not differentially private",
            parameters={"k": k, "n_candidates": n_candidates, "history_length": self.history_length},
        )


MECHANISMS: dict[str, type[Mechanism]] = {
    MECHANISM_LAPLACE: LaplaceMechanism,
    MECHANISM_IMPORTANCE_WEIGHTED: ImportanceWeightedMechanism,
    MECHANISM_USER_VECTOR: UserVectorMechanism,
}

# Policy fields that configure the response but not the mechanism's noise.
_POLICY_FIELDS_NOT_FOR_MECHANISM = frozenset({"max_k", "n_candidates", "budget", "window_seconds", "mechanism"})


def build_mechanism(name: str, epsilon: float, **policy_params) -> Mechanism:
    """Construct the mechanism ``name`` charged ``epsilon`` per response.

    ``policy_params`` may hold ``retrieval_fraction`` and ``history_length``; the other
    policy fields (max_k, n_candidates, budget, window_seconds, mechanism) are accepted
    and ignored, and any other name raises TypeError. Raises ValueError for an unknown
    name or an invalid epsilon.
    """
    mechanism_class = MECHANISMS.get(name)
    if mechanism_class is None:
        known = ", ".join(sorted(MECHANISMS))
        raise ValueError(f"mechanism must be one of {known}; got {name!r}")
    unknown = set(policy_params) - {"retrieval_fraction", "history_length"} - _POLICY_FIELDS_NOT_FOR_MECHANISM
    if unknown:
        raise TypeError(f"build_mechanism() got unknown parameters: {', '.join(sorted(unknown))}")
    kwargs = {key: policy_params[key] for key in ("retrieval_fraction", "history_length") if key in policy_params}
    return mechanism_class(epsilon, **kwargs)


# Serving-path functions: each takes the plan of the response and a NoiseSampler.


def user_vector_sensitivity(history_length: int) -> float:
    """Return Delta_1 = 2 / L, the L1 sensitivity of u under one added or removed interaction.

    u = (1/L) * sum_i w_i * e_i / ||e_i||_1 over the last L interactions, each term of
    L1 norm w_i / L <= 1 / L. Adding or removing one interaction changes which
    interactions are in the last-L window by at most one entering and one leaving,
    so ||u - u'||_1 <= 2 / L. The denominator stays L with fewer interactions, so a
    short history does not raise the sensitivity.
    """
    _check_history_length(history_length)
    return 2.0 / history_length


def user_vector_granularity(history_length: int, dimensions: int) -> float:
    """Return the user vector's grid step: the largest power of two <= Delta_1 / (2 d 2**20).

    Snapping moves each of the d coordinates by at most one grid step relative to its
    neighbour, so the snapped vectors' L1 distance is at most
    Delta_1 + d * gamma_u <= Delta_1 * (1 + 2**-21), inside the allowance that
    ``Mechanism._user_vector_part`` adds to the sensitivity.
    """
    _check_count("dimensions", dimensions)
    sensitivity = user_vector_sensitivity(history_length)
    return power_of_two_at_most(sensitivity * USER_VECTOR_SENSITIVITY_ALLOWANCE / (2.0 * dimensions))


def compute_user_vector(history_embeddings, history_weights, history_length: int) -> np.ndarray:
    """Compute u = (1/L) * sum_i w_i * e_i / ||e_i||_1, the user vector that is privatised.

    ``history_embeddings`` (n x d) and ``history_weights`` (n) are the last n <= L
    interactions; weights are clamped to [0, 1] and an all-zero embedding contributes
    nothing, so the sensitivity bound of ``user_vector_sensitivity`` holds for any input.
    Raises ValueError for more than L interactions or non-finite values.
    """
    embeddings = np.asarray(history_embeddings, dtype=np.float64)
    weights = np.asarray(history_weights, dtype=np.float64).reshape(-1)
    if embeddings.ndim != 2:
        raise ValueError(f"history_embeddings must be a 2-dimensional array; got shape {embeddings.shape}")
    if embeddings.shape[0] != weights.shape[0]:
        raise ValueError(
            f"history_weights must have one weight per embedding; got {weights.shape[0]} weights "
            f"for {embeddings.shape[0]} embeddings"
        )
    if embeddings.shape[0] > history_length:
        raise ValueError(
            f"history must hold at most history_length = {history_length} interactions; "
            f"got {embeddings.shape[0]}: pass only the most recent ones"
        )
    if not (np.all(np.isfinite(embeddings)) and np.all(np.isfinite(weights))):
        raise ValueError("history embeddings and weights must be finite; got NaN or infinity")

    l1_norms = np.abs(embeddings).sum(axis=1)
    safe_norms = np.where(l1_norms > 0, l1_norms, 1.0)
    clamped_weights = np.clip(weights, 0.0, 1.0)
    terms = embeddings * (clamped_weights / safe_norms)[:, None]  # w_i * e_i / ||e_i||_1
    return terms.sum(axis=0) / history_length  # (1/L) * sum_i, L fixed


def privatise_user_vector(history_embeddings, history_weights, plan: MechanismPlan, sampler: NoiseSampler) -> np.ndarray:
    """Release ũ = u + Lap(b_u) per coordinate on the grid, where b_u = Delta_1 / epsilon_u.

    Laplace mechanism (Dwork & Roth 2014, Theorem 3.6) with L1 sensitivity
    Delta_1 = 2 / L (``user_vector_sensitivity``) widened by a relative 2**-20 for
    snapping and rounding. u is computed here from the raw history so that the
    sensitivity is guaranteed whatever the caller passes. Returns a float64 vector;
    for the non-private plan, u itself.
    """
    u = compute_user_vector(history_embeddings, history_weights, plan.history_length)
    if plan.user_vector_scale is None:
        return u
    granularity = user_vector_granularity(plan.history_length, u.shape[0])
    return sampler.add_laplace(u, plan.user_vector_scale, granularity=granularity)


def score_with_user_vector(noisy_user_vector, candidate_embeddings) -> np.ndarray:
    """Return score_j = <ũ, v_j> for each candidate: ranking by post-processing of ũ only."""
    vector = np.asarray(noisy_user_vector, dtype=np.float64)
    candidates = np.asarray(candidate_embeddings, dtype=np.float64)
    return candidates @ vector


def importance_weights(importance) -> np.ndarray:
    """Return w_j = |g_j| / sum_l |g_l|, or uniform weights 1/C when every g_j is 0."""
    g = np.abs(np.asarray(importance, dtype=np.float64).reshape(-1))
    if not np.all(np.isfinite(g)):
        raise ValueError("importance must be finite; got NaN or infinity")
    total = g.sum()
    if total == 0:
        return np.full(g.shape[0], 1.0 / g.shape[0])
    return g / total


def importance_score_scales(importance, plan: MechanismPlan) -> np.ndarray:
    """Return b_j = Delta / (epsilon_s * w_j) per score; inf marks a dropped score.

    A score is dropped (never noised nor released) when w_j <= 2**-40. The released
    scores' loss is sum_j Delta / b_j = epsilon_s * sum_{j kept} w_j <= epsilon_s.
    """
    if plan.score_scale_rule != "importance":
        raise ValueError(f"importance scales need an importance_weighted plan; got {plan.mechanism}")
    weights = importance_weights(importance)
    noised = weights > MIN_IMPORTANCE_WEIGHT
    scales = np.full(weights.shape[0], math.inf)
    # plan.score_scale is the scale at weight 1, Delta / epsilon_s.
    scales[noised] = plan.score_scale / weights[noised]  # b_j = Delta / (epsilon_s * w_j)
    return scales


def select_top_k(scores, k: int, plan: MechanismPlan, sampler: NoiseSampler, importance=None) -> np.ndarray:
    """Release the indices of k candidates, best first, under the plan's mechanism.

    ``scores`` contains one score per candidate (at most ``plan.n_candidates``) and ``k``
    may not exceed ``plan.k``. Scores are clamped to [0, 1] (NaN counts as 0) and
    snapped to the grid gamma_s = 2**-20, a step that divides Delta = 1.

    - ``laplace``: s'_j = s_j + Lap(b), b = c(k, C) / epsilon_s with
      c(k, C) = min(k * (2 * Delta + gamma_s), C * Delta), and the k largest s'_j are
      released (ties to the lower index). Whole-vector bound: the Laplace mechanism on
      all C scores, L1 sensitivity C * Delta (Dwork & Roth 2014, Theorem 3.6).
      Noisy top-k bound, by the randomness alignment of Ding, Wang, Zhang, Kifer 2019
      (their Noisy Top-K with Gap: Lap(2k / epsilon) on each query is epsilon-DP), redone
      on the grid. Let S be the released indices in order and M the largest noisy score
      outside S. For neighbouring score vectors, map the noise Z to Z' with
      Z'_j = Z_j outside S and Z'_i = Z_i + s_i - s'_i + M' - M + gamma_s on S, where M'
      is that maximum under s'. Every released noisy score moves by the same
      M' - M + gamma_s, so S keeps its order and stays strictly above M' whatever the
      tie-breaking. The map is one-to-one (Z outside S fixes M and M'), and each of the
      k shifts is at most 2 * Delta + gamma_s, so P[S | s] <= exp(k (2 Delta + gamma_s) / b) P[S | s'].
      The extra gamma_s per released index pays for ties with M, which grid noise makes possible.
      NOTE: this grid version of the published continuous proof is argued here, not
      taken from a paper; ``privacy.audit`` tests it empirically (k = 1, C = 3).
    - ``importance_weighted``: s'_j = s_j + Lap(Delta / (epsilon_s * w_j)) with weights
      from ``importance`` (required; see ``importance_score_scales``); dropped scores
      rank after all others, by index.
    - ``user_vector`` and ``non_private``: no noise. The scores must be post-processing of
      ũ (``score_with_user_vector``) for the user_vector plan's epsilon to hold.
    """
    values = _clean_scores(scores)
    count = values.shape[0]
    if count > plan.n_candidates:
        raise ValueError(
            f"scores must hold at most n_candidates = {plan.n_candidates} candidates; got {count}: "
            "plan the response for the number of candidates retrieved"
        )
    _check_count("k", k)
    if k > plan.k:
        raise ValueError(f"k must be at most the planned k = {plan.k}; got {k}")
    released = min(k, count)
    indices = np.arange(count)

    if plan.score_scale_rule == "uniform":
        noisy = sampler.add_laplace(values, plan.score_scale, granularity=plan.score_granularity)
        order = np.lexsort((indices, -noisy))
        return order[:released]

    if plan.score_scale_rule == "importance":
        if importance is None:
            raise ValueError("importance is required by the importance_weighted mechanism")
        importance = np.asarray(importance, dtype=np.float64).reshape(-1)
        if importance.shape[0] != count:
            raise ValueError(
                f"importance must have one value per score; got {importance.shape[0]} for {count} scores"
            )
        scales = importance_score_scales(importance, plan)
        noised = np.isfinite(scales)
        noisy = np.full(count, -np.inf)
        if np.any(noised):
            noisy[noised] = sampler.add_laplace(values[noised], scales[noised], granularity=plan.score_granularity)
        # Dropped scores (-inf) sort after every released one, by index.
        order = np.lexsort((indices, -noisy))
        return order[:released]

    order = np.lexsort((indices, -values))
    return order[:released]


def privacy_loss_bound(plan: MechanismPlan, importance=None) -> float:
    """Recompute the proven privacy loss of a plan from its noise scales.

    Returns Delta_1 (1 + 2**-20) / b_u plus the score part. The score part is
    c(k, C) / b for ``laplace`` and 0 for ``user_vector``. For ``importance_weighted``
    it is sum_j Delta / b_j with the given ``importance``, or its bound epsilon_s
    without. A correct plan's bound is at most its charged ``epsilon``.
    """
    if plan.user_vector_scale is None:
        return math.inf
    effective_sensitivity = plan.user_vector_sensitivity * (1.0 + USER_VECTOR_SENSITIVITY_ALLOWANCE)
    loss = effective_sensitivity / plan.user_vector_scale  # epsilon_u = Delta_1 / b_u
    if plan.score_scale_rule == "uniform":
        loss += laplace_score_cost_numerator(plan.k, plan.n_candidates) / plan.score_scale  # c(k, C) / b
    elif plan.score_scale_rule == "importance":
        if importance is None:
            loss += plan.epsilon_scores
        else:
            scales = importance_score_scales(importance, plan)
            noised = np.isfinite(scales)
            loss += float(np.sum(plan.sensitivity / scales[noised]))  # sum_j Delta / b_j
    return loss


def _clean_scores(scores) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    # Clamping is what bounds the sensitivity by Delta = 1; NaN becomes 0, which is
    # a fixed function of the score and so keeps that bound.
    values = np.nan_to_num(values, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(values, 0.0, SCORE_SENSITIVITY)


def _check_count(name: str, value) -> None:
    message = positive_integer_error(name, value)
    if message is not None:
        raise ValueError(message)


def _check_history_length(history_length) -> None:
    _check_count("history_length", history_length)
    if history_length > MAX_HISTORY_LENGTH:
        raise ValueError(f"history_length must be at most {MAX_HISTORY_LENGTH}; got {history_length}")
