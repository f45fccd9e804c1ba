"""Statistical audit of the privacy mechanisms: an empirical lower bound on epsilon.

The audit runs a mechanism many times on two neighbouring histories H and H', where
H' is H plus one interaction (the unit of privacy). Candidates and a stand-in ranking
model are fixed. The audit looks for an output event E whose probability differs most
between the two histories. For an epsilon-DP mechanism P[E | H] <= exp(epsilon) P[E | H'] for
every E, so with Clopper-Pearson bounds

    eps_lb = ln(p_lower(E | H) / p_upper(E | H'))

is, with confidence 1 - alpha, a lower bound on the mechanism's true epsilon. The
mechanism passes if eps_lb <= its charged epsilon. Events are chosen on 30% of the
runs (the calibration runs) and measured on the rest, in the manner of DP-Sniper
and of the statistical testers of Google's differential-privacy library. The chosen
events' bounds share alpha (Bonferroni).

A passing audit is evidence, not proof: it can only show violations large enough for
the number of runs. The same audit run on a copy of the mechanism with 10 times too
little noise (``under_noised_copy``) must fail, which shows that it has that power.
"""

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from privacy.mechanisms import (
    MECHANISM_IMPORTANCE_WEIGHTED,
    MECHANISM_LAPLACE,
    MECHANISM_USER_VECTOR,
    Mechanism,
    MechanismPlan,
    compute_user_vector,
    privatise_user_vector,
    score_with_user_vector,
    select_top_k,
)
from privacy.sampling import NoiseSampler

# Sharpness of the stand-in ranking model: scores saturate at 0 or 1 once the cosine
# similarity to the latest interaction is beyond 1/(2 * 25) = 0.02, so adding one
# interaction moves most candidates' scores across the whole range Delta = 1.
STAND_IN_SHARPNESS = 25.0
# (k, C) audited per mechanism. Every bound must hold for all k and C, and a test has
# the most power where the score noise is spread over the fewest candidates: C = 3
# with k = 1 is the smallest case in which ``laplace`` uses its noisy top-k bound
# (k (2 Delta + gamma_s) < C Delta), and C = 2 gives the importance weights w_j their
# largest values. The user vector's noise does not depend on k or C.
AUDIT_SHAPES = {
    MECHANISM_LAPLACE: (1, 3),
    MECHANISM_IMPORTANCE_WEIGHTED: (1, 2),
    MECHANISM_USER_VECTOR: (1, 2),
}
# Share of the runs that choose the events; the rest measure them. Choosing among a
# few hundred events needs fewer runs than bounding the chosen ones tightly.
CALIBRATION_SHARE = 0.3
# Thresholds tried for the user-vector statistic on the calibration runs.
_THRESHOLD_QUANTILES = np.linspace(0.01, 0.99, 99)


def under_noised_copy(mechanism: Mechanism, factor: float = 10.0, *, scores_only: bool = False) -> Mechanism:
    """Return a copy of ``mechanism`` whose noise is ``factor`` times too small.

    For the audit's control only: the copy's plans claim the original epsilon while its
    true epsilon is up to ``factor`` times larger, so the audit must fail it. With
    ``scores_only`` the user vector keeps its noise, which checks that the audit also
    detects a flaw confined to the score mechanism.
    """
    if not (math.isfinite(factor) and factor > 1):
        raise ValueError(f"factor must be a finite number greater than 1; got {factor}")
    broken = copy.copy(mechanism)
    if not scores_only:
        broken._noise_multiplier = mechanism._noise_multiplier / factor
    broken._score_noise_multiplier = mechanism._score_noise_multiplier / factor
    return broken


@dataclass(frozen=True)
class AuditScenario:
    """Two neighbouring histories, fixed candidates and the stand-in model's scores for each."""

    history_embeddings: np.ndarray
    history_weights: np.ndarray
    neighbour_embeddings: np.ndarray
    neighbour_weights: np.ndarray
    candidate_embeddings: np.ndarray
    scores: np.ndarray
    neighbour_scores: np.ndarray
    k: int
    description: str


@dataclass(frozen=True)
class AuditResult:
    """The outcome of auditing one mechanism.

    ``probability`` and ``neighbour_probability`` are the measured frequencies of
    ``event`` under H and under H'.
    """

    label: str
    mechanism: str
    charged_epsilon: float
    epsilon_lower_bound: float
    event: str
    probability: float
    neighbour_probability: float
    runs: int
    max_detectable_epsilon: float
    is_control: bool = False
    details: dict = field(default_factory=dict)

    @property
    def violates(self) -> bool:
        """Return whether the empirical lower bound exceeds the charged epsilon."""
        return self.epsilon_lower_bound > self.charged_epsilon

    @property
    def passed(self) -> bool:
        """Return whether the audit came out as expected.

        A real mechanism passes when it shows no violation; the under-noised control
        passes when its violation is detected.
        """
        return self.violates if self.is_control else not self.violates


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """Return the one-sided (1 - alpha) Clopper-Pearson lower bound of a binomial probability."""
    if successes == 0:
        return 0.0
    return float(stats.beta.ppf(alpha, successes, trials - successes + 1))


def clopper_pearson_upper(successes: int, trials: int, alpha: float) -> float:
    """Return the one-sided (1 - alpha) Clopper-Pearson upper bound of a binomial probability."""
    if successes == trials:
        return 1.0
    return float(stats.beta.ppf(1 - alpha, successes + 1, trials - successes))


def epsilon_lower_bound(successes: int, neighbour_successes: int, trials: int, alpha: float) -> float:
    """Return ln(p_lower / p_upper) for an event seen ``successes`` times under H and
    ``neighbour_successes`` times under H', each in ``trials`` runs, at joint confidence
    1 - alpha (alpha / 2 for each bound). Returns -inf when the lower bound is 0."""
    lower = clopper_pearson_lower(successes, trials, alpha / 2)
    upper = clopper_pearson_upper(neighbour_successes, trials, alpha / 2)
    if lower <= 0:
        return -math.inf
    return math.log(lower / upper)


def stand_in_scores(history_embeddings: np.ndarray, candidate_embeddings: np.ndarray) -> np.ndarray:
    """Score candidates like a ranking model that reads the raw history.

    s_j = clamp(1/2 + 25 * cos(latest interaction, v_j), 0, 1): deterministic, in
    [0, 1], and moved across the whole range by one added interaction, which makes it
    a worst case for the sensitivity Delta = 1 of the score mechanisms.
    """
    latest = _unit_rows(history_embeddings[-1:])[0]
    similarity = _unit_rows(candidate_embeddings) @ latest
    return np.clip(0.5 + STAND_IN_SHARPNESS * similarity, 0.0, 1.0)


def build_scenario(
    item_embeddings: np.ndarray,
    *,
    history_length: int,
    n_candidates: int,
    k: int,
    rng: np.random.Generator,
) -> AuditScenario:
    """Build worst-case neighbouring histories and candidates from item embeddings.

    H contains L interactions whose oldest and latest are the same item a; H' adds one
    interaction on item x, which pushes the oldest copy of a out of the last-L window.
    So u' - u = (e_x / ||e_x||_1 - e_a / ||e_a||_1) / L, and (a, x) is a pair whose L1
    norm is within 10% of the largest found (at most 2 / L, the sensitivity) with the
    largest L2 norm, because a change concentrated on few coordinates is the easiest to
    detect. The latest item changes from a to x, so the stand-in model's scores flip.
    Candidates are the items whose scores change most, half favoured by H and half by H'.
    """
    items = np.asarray(item_embeddings, dtype=np.float64)
    if items.shape[0] < 3:
        raise ValueError(f"the audit needs at least 3 item embeddings; got {items.shape[0]}")
    anchor, added = _max_change_pair(items, rng)

    filler_count = history_length - 2
    others = np.setdiff1d(np.arange(items.shape[0]), [anchor, added])
    filler = rng.choice(others, size=max(filler_count, 0), replace=others.shape[0] < filler_count)
    history_items = np.concatenate([[anchor], filler, [anchor]]).astype(int)[-history_length:]
    neighbour_items = np.concatenate([history_items, [added]])[-history_length:]

    history = items[history_items]
    neighbour = items[neighbour_items]
    candidates = _flipping_candidates(items, history, neighbour, n_candidates)
    return AuditScenario(
        history_embeddings=history,
        history_weights=np.ones(history.shape[0]),
        neighbour_embeddings=neighbour,
        neighbour_weights=np.ones(neighbour.shape[0]),
        candidate_embeddings=candidates,
        scores=stand_in_scores(history, candidates),
        neighbour_scores=stand_in_scores(neighbour, candidates),
        k=k,
        description=(
            f"L = {history_length}, C = {n_candidates}, k = {k}; H' adds item {added} and drops the "
            f"oldest copy of item {anchor}"
        ),
    )


def synthetic_item_embeddings(count: int, dimensions: int, rng: np.random.Generator) -> np.ndarray:
    """Return unit vectors: the signed standard basis, then random directions up to ``count``."""
    basis = np.concatenate([np.eye(dimensions), -np.eye(dimensions)])[: min(count, 2 * dimensions)]
    extra = rng.normal(size=(max(count - basis.shape[0], 0), dimensions))
    return np.concatenate([basis, _unit_rows(extra)]) if extra.shape[0] else basis


@dataclass
class _Outputs:
    statistic: np.ndarray  # user-vector statistic T(ũ) per run
    released: np.ndarray  # n_runs x k indices, best first (padded with -1)


def run_audit(
    mechanism: Mechanism,
    scenario: AuditScenario,
    *,
    runs: int,
    sampler: NoiseSampler,
    alpha: float = 0.05,
    label: str | None = None,
    is_control: bool = False,
    progress: Callable[[int], None] | None = None,
) -> AuditResult:
    """Estimate an empirical lower bound on ``mechanism``'s epsilon with ``runs`` runs per history.

    Each run releases ũ and the top-k candidates exactly as serving does. Events: for
    each candidate j, "j is released" and "j is released first"; "at least m released
    candidates are favoured by H" for m = 1..k; and "T(ũ) > tau", where T is the
    Laplace log-likelihood-ratio statistic of ũ between the two true user vectors
    (the most powerful test of them) and tau runs over quantiles of the calibration
    runs. Each event is also tried in its complement and in both directions.
    """
    if runs < 20:
        raise ValueError(f"runs must be at least 20; got {runs}")
    plan = mechanism.plan(scenario.k, scenario.candidate_embeddings.shape[0])
    u = compute_user_vector(scenario.history_embeddings, scenario.history_weights, plan.history_length)
    u_neighbour = compute_user_vector(
        scenario.neighbour_embeddings, scenario.neighbour_weights, plan.history_length
    )

    outputs = _run_mechanism(plan, scenario, u, u_neighbour, runs, sampler, neighbour=False, progress=progress)
    neighbour_outputs = _run_mechanism(
        plan, scenario, u, u_neighbour, runs, sampler, neighbour=True, progress=progress
    )

    split = max(int(runs * CALIBRATION_SHARE), 10)
    favoured = scenario.scores > scenario.neighbour_scores
    thresholds = _thresholds(outputs.statistic[:split], neighbour_outputs.statistic[:split])
    calibration = _events(outputs, neighbour_outputs, slice(0, split), favoured, thresholds)
    chosen = _choose_events(calibration, split, alpha)

    evaluation = _events(outputs, neighbour_outputs, slice(split, runs), favoured, thresholds)
    trials = runs - split
    best = (-math.inf, "none", 0.0, 0.0)
    for name, flipped in chosen:
        counts = evaluation[name]
        successes, neighbour_successes = (counts[1], counts[0]) if flipped else counts
        # Bonferroni: the chosen events share alpha.
        bound = epsilon_lower_bound(successes, neighbour_successes, trials, alpha / len(chosen))
        if bound > best[0]:
            direction = "more likely under H'" if flipped else "more likely under H"
            best = (bound, f"{name} ({direction})", counts[0] / trials, counts[1] / trials)

    max_detectable = epsilon_lower_bound(trials, 0, trials, alpha / max(len(chosen), 1))
    return AuditResult(
        label=label or mechanism.name,
        mechanism=mechanism.name,
        charged_epsilon=plan.epsilon,
        epsilon_lower_bound=max(best[0], 0.0),
        event=best[1],
        probability=best[2],
        neighbour_probability=best[3],
        runs=runs,
        max_detectable_epsilon=max_detectable,
        is_control=is_control,
        details={"scenario": scenario.description, "alpha": alpha, "theorem": plan.theorem},
    )


def _run_mechanism(
    plan: MechanismPlan,
    scenario: AuditScenario,
    u: np.ndarray,
    u_neighbour: np.ndarray,
    runs: int,
    sampler: NoiseSampler,
    *,
    neighbour: bool,
    progress,
) -> _Outputs:
    embeddings = scenario.neighbour_embeddings if neighbour else scenario.history_embeddings
    weights = scenario.neighbour_weights if neighbour else scenario.history_weights
    scores = scenario.neighbour_scores if neighbour else scenario.scores
    candidates = scenario.candidate_embeddings
    released_count = min(scenario.k, candidates.shape[0])

    delta = u_neighbour - u
    changed = delta != 0
    statistic = np.empty(runs)
    released = np.empty((runs, released_count), dtype=np.int64)
    for run in range(runs):
        noisy = privatise_user_vector(embeddings, weights, plan, sampler)
        # T(ũ) = sum_i |delta_i| * clip((ũ_i - u_i) / delta_i, 0, 1): the Laplace
        # log-likelihood ratio between centres u and u', up to an affine map.
        ratio = np.clip((noisy[changed] - u[changed]) / delta[changed], 0.0, 1.0)
        statistic[run] = float(np.abs(delta[changed]) @ ratio)

        if plan.score_scale_rule == "none":
            run_scores = score_with_user_vector(noisy, candidates)
            importance = None
        else:
            run_scores = scores
            importance = np.abs(score_with_user_vector(noisy, candidates))
        released[run] = select_top_k(run_scores, scenario.k, plan, sampler, importance=importance)
        if progress is not None:
            progress(1)
    return _Outputs(statistic=statistic, released=released)


def _thresholds(statistic: np.ndarray, neighbour_statistic: np.ndarray) -> np.ndarray:
    pooled = np.concatenate([statistic, neighbour_statistic])
    return np.unique(np.quantile(pooled, _THRESHOLD_QUANTILES))


def _events(outputs: _Outputs, neighbour_outputs: _Outputs, runs: slice, favoured: np.ndarray, thresholds):
    """Return {event name: (count under H, count under H')} for the runs in ``runs``."""
    counts = {}
    first = outputs.released[runs]
    neighbour_first = neighbour_outputs.released[runs]
    n_candidates = favoured.shape[0]

    for j in range(n_candidates):
        released = np.any(first == j, axis=1)
        neighbour_released = np.any(neighbour_first == j, axis=1)
        counts[f"candidate {j} released"] = (int(released.sum()), int(neighbour_released.sum()))
        counts[f"candidate {j} ranked first"] = (
            int(np.sum(first[:, 0] == j)),
            int(np.sum(neighbour_first[:, 0] == j)),
        )

    favoured_count = favoured[first].sum(axis=1)
    neighbour_favoured_count = favoured[neighbour_first].sum(axis=1)
    for m in range(1, first.shape[1] + 1):
        counts[f"at least {m} released candidates favoured by H"] = (
            int(np.sum(favoured_count >= m)),
            int(np.sum(neighbour_favoured_count >= m)),
        )

    if thresholds is not None:
        statistic = outputs.statistic[runs]
        neighbour_statistic = neighbour_outputs.statistic[runs]
        for tau in thresholds:
            counts[f"T(u~) > {tau:.6g}"] = (int(np.sum(statistic > tau)), int(np.sum(neighbour_statistic > tau)))

    trials = first.shape[0]
    for name, (count, neighbour_count) in list(counts.items()):
        counts[f"not ({name})"] = (trials - count, trials - neighbour_count)
    return counts


def _choose_events(calibration: dict, trials: int, alpha: float) -> list[tuple[str, bool]]:
    """Pick the event with the largest calibration bound in each direction."""
    best_forward = (-math.inf, None)
    best_backward = (-math.inf, None)
    for name, (count, neighbour_count) in calibration.items():
        forward = epsilon_lower_bound(count, neighbour_count, trials, alpha)
        backward = epsilon_lower_bound(neighbour_count, count, trials, alpha)
        if forward > best_forward[0]:
            best_forward = (forward, name)
        if backward > best_backward[0]:
            best_backward = (backward, name)
    chosen = []
    if best_forward[1] is not None:
        chosen.append((best_forward[1], False))
    if best_backward[1] is not None:
        chosen.append((best_backward[1], True))
    return chosen or [(next(iter(calibration)), False)]


def _max_change_pair(items: np.ndarray, rng: np.random.Generator, anchors: int = 64) -> tuple[int, int]:
    normalised = items / np.maximum(np.abs(items).sum(axis=1, keepdims=True), 1e-300)
    anchor_indices = rng.choice(items.shape[0], size=min(anchors, items.shape[0]), replace=False)
    pairs = []
    for anchor in anchor_indices:
        difference = normalised - normalised[anchor]
        l1 = np.abs(difference).sum(axis=1)
        l2 = np.sqrt((difference**2).sum(axis=1))
        l1[anchor] = -1.0
        for added in np.argsort(-l1)[:8]:
            pairs.append((float(l1[added]), float(l2[added]), int(anchor), int(added)))
    # Among pairs within 10% of the largest L1 change, the largest L2 change is the
    # most concentrated one, which a test detects with the fewest runs.
    largest_l1 = max(pair[0] for pair in pairs)
    near_largest = [pair for pair in pairs if pair[0] >= 0.9 * largest_l1]
    _, _, anchor, added = max(near_largest, key=lambda pair: (pair[1], pair[0]))
    return anchor, added


def _flipping_candidates(items: np.ndarray, history: np.ndarray, neighbour: np.ndarray, count: int) -> np.ndarray:
    change = stand_in_scores(neighbour, items) - stand_in_scores(history, items)
    similarity_change = _unit_rows(items) @ (_unit_rows(neighbour[-1:])[0] - _unit_rows(history[-1:])[0])
    favoured_by_history = np.lexsort((similarity_change, change))[: (count + 1) // 2]
    favoured_by_neighbour = np.lexsort((-similarity_change, -change))[: count // 2]
    chosen = list(dict.fromkeys([*favoured_by_history.tolist(), *favoured_by_neighbour.tolist()]))
    remaining = [i for i in range(items.shape[0]) if i not in set(chosen)]
    chosen.extend(remaining[: count - len(chosen)])
    return items[np.array(chosen[:count])]


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)
