"""Offline evaluation of a tenant: the platform's model, baselines, privacy, modalities, latency.

``run_evaluation`` produces the results that ``recommend.evaluation.report`` writes:

- MicroLens-50k (the tenant made by ``import_microlens``, its videos text-embedded by
  the workers): leave-last-out split, full ranking over every servable item with the
  user's train and validation items excluded, precision, recall, NDCG and hit rate
  at 10 and 20;
- the platform's fusion and ranker, trained in memory on the train part only (the
  tenant's stored and active models are never read or changed), against popularity,
  item-kNN and SASRec baselines on the same users;
- each privacy mechanism at each charged epsilon, repeated with seeded samplers;
- a modality ablation and label-simulated users on YouTube-8M;
- latency of the real serving path per privacy level.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from django.core.management import call_command
from django.db import connection
from tqdm import tqdm

from privacy.mechanisms import (
    DEFAULT_HISTORY_LENGTH,
    DEFAULT_RETRIEVAL_FRACTION,
    MECHANISM_IMPORTANCE_WEIGHTED,
    MECHANISM_LAPLACE,
    MECHANISM_USER_VECTOR,
    MECHANISMS,
)
from privacy.validation import epsilon_error
from recommend.evaluation.baselines import (
    ItemKNNRecommender,
    PopularityRecommender,
    SASRecRecommender,
    recommend_top_k,
)
from recommend.evaluation.latency import measure_serving_latency, missing_active_models
from recommend.evaluation.metrics import evaluate_rankings
from recommend.evaluation.pipeline import (
    EvaluationUsers,
    PlatformModel,
    mechanism_plans,
    rank_non_private,
    rank_private,
    summarise,
)
from recommend.evaluation.splits import leave_last_out_split
from recommend.evaluation.youtube8m_users import LabelUserSimulation, simulate_label_users
from recommend.fusion import DEFAULT_FUSION, FusionWeights, fuse_embeddings
from recommend.training import CatalogueMatrix, TrainingConfig, fused_matrix, load_catalogue, train_fusion, train_ranker
from users.models import EVENT_WEIGHTS, EventType, Tenant
from videos.models import FUSED_DIM, MODALITIES, SERVABLE_STATUSES, Video, VideoStatus

logger = logging.getLogger(__name__)

ALL_MECHANISMS = (MECHANISM_LAPLACE, MECHANISM_IMPORTANCE_WEIGHTED, MECHANISM_USER_VECTOR)
KS = (10, 20)
# The release is the top 20 list; metrics at 10 read its first 10 items.
RELEASED_K = max(KS)
# Non-private scorer that each mechanism tends to as epsilon grows.
NON_PRIVATE_SCORER = {
    MECHANISM_LAPLACE: "ranker",
    MECHANISM_IMPORTANCE_WEIGHTED: "ranker",
    MECHANISM_USER_VECTOR: "user_vector",
}


class EvaluationError(Exception):
    """The evaluation cannot run on the given data; the message explains what to do."""


@dataclass
class EvaluationConfig:
    """Settings of one evaluation run; the report prints them all."""

    tenant: str
    epsilons: list[float]
    youtube8m_tenant: str | None = None
    youtube8m_dir: Path | None = None
    skip_youtube8m: bool = False
    skip_latency: bool = False
    users: int = 2000
    youtube8m_users: int = 1000
    youtube8m_train_users: int = 5000
    repetitions: int = 3
    seed: int = 0
    mechanisms: tuple[str, ...] = ALL_MECHANISMS
    history_length: int = DEFAULT_HISTORY_LENGTH
    n_candidates: int = 100
    retrieval_fraction: float = DEFAULT_RETRIEVAL_FRACTION
    fusion_epochs: int = 2
    ranker_epochs: int = 2
    sasrec_epochs: int = 50
    sasrec_max_seconds: float = 400.0
    knn_neighbours: int = 400
    knn_shrinkage: float = 50.0
    baselines_all_users: bool = True
    latency_users: int = 50
    torch_threads: int = 1
    progress: bool = True
    command: str = ""

    def __post_init__(self):
        unknown = [name for name in self.mechanisms if name not in MECHANISMS]
        if unknown:
            raise EvaluationError(f"unknown mechanism(s) {', '.join(unknown)}; choose from {', '.join(ALL_MECHANISMS)}")
        if not self.epsilons:
            raise EvaluationError("pass at least one epsilon, e.g. --epsilons 0.5,1,2,5,inf")
        for epsilon in self.epsilons:
            message = None if math.isinf(epsilon) and epsilon > 0 else epsilon_error(epsilon)
            if message is not None:
                raise EvaluationError(f"{message}, or inf for the non-private reference")
        for name in ("users", "repetitions", "history_length", "n_candidates", "youtube8m_users",
                     "youtube8m_train_users", "latency_users", "torch_threads"):
            if getattr(self, name) < 1:
                raise EvaluationError(f"{name} must be at least 1; got {getattr(self, name)}")
        if self.n_candidates < RELEASED_K:
            raise EvaluationError(
                f"n_candidates must be at least {RELEASED_K}, the released list; got {self.n_candidates}"
            )
        if not 0 < self.retrieval_fraction < 1:
            raise EvaluationError(f"retrieval_fraction must be in (0, 1); got {self.retrieval_fraction}")
        self.youtube8m_tenant = self.youtube8m_tenant or f"{self.tenant}-yt8m"

    @property
    def finite_epsilons(self) -> list[float]:
        return sorted(e for e in self.epsilons if math.isfinite(e))

    @property
    def includes_non_private(self) -> bool:
        return any(math.isinf(e) for e in self.epsilons)

    def training_config(self) -> TrainingConfig:
        return TrainingConfig(fusion_epochs=self.fusion_epochs, ranker_epochs=self.ranker_epochs, seed=self.seed,
                              threads=self.torch_threads)

    def as_dict(self) -> dict:
        values = asdict(self)
        values["epsilons"] = [_epsilon_json(e) for e in self.epsilons]
        values["youtube8m_dir"] = str(self.youtube8m_dir) if self.youtube8m_dir else None
        values["mechanisms"] = list(self.mechanisms)
        return values


def _epsilon_json(epsilon: float):
    return "inf" if math.isinf(epsilon) else float(epsilon)


@dataclass
class Stopwatch:
    """Wall time of each step of the run, in seconds."""

    started: float = field(default_factory=time.perf_counter)
    steps: dict[str, float] = field(default_factory=dict)

    def measure(self, name: str, function: Callable, *args, **kwargs):
        began = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            self.steps[name] = round(self.steps.get(name, 0.0) + time.perf_counter() - began, 1)
            logger.info("Evaluation step %s took %.1f s", name, self.steps[name])

    @property
    def total(self) -> float:
        return round(time.perf_counter() - self.started, 1)


# ---------------------------------------------------------------------------
# Data from the database
# ---------------------------------------------------------------------------


@dataclass
class TenantInteractions:
    """A tenant's catalogue and each user's interactions as catalogue rows, oldest first."""

    catalogue: CatalogueMatrix
    user_ids: np.ndarray
    sequences: list[np.ndarray]
    weights: list[np.ndarray]
    dropped_interactions: int


def check_embedded(tenant: Tenant) -> dict:
    """Return the tenant's video counts by status; raise if any video still awaits its embeddings."""
    counts = {status: 0 for status in VideoStatus.values}
    for status, count in _status_counts(tenant):
        counts[status] = count
    waiting = counts[VideoStatus.PENDING] + counts[VideoStatus.PROCESSING]
    if waiting:
        raise EvaluationError(
            f"{waiting} of {sum(counts.values())} videos of tenant {tenant.name} are not embedded yet "
            f"({counts[VideoStatus.PENDING]} pending, {counts[VideoStatus.PROCESSING]} processing). Start a worker "
            "(celery -A recsys_platform worker -Q default,ingestion,training) and rerun when none is pending."
        )
    if counts[VideoStatus.READY] + counts[VideoStatus.PARTIAL] == 0:
        raise EvaluationError(f"tenant {tenant.name} has no servable videos; import and embed its catalogue first")
    return counts


def _status_counts(tenant: Tenant) -> list[tuple[str, int]]:
    from django.db.models import Count

    return list(Video.objects.filter(tenant=tenant).values_list("status").annotate(n=Count("id")))


def load_tenant_interactions(tenant: Tenant) -> TenantInteractions:
    """Read the servable catalogue and every user's non-skip interactions in ``occurred_at`` order.

    Interactions on videos outside the catalogue (failed videos) are dropped and
    counted. Event weights are those of serving (``users.models.EVENT_WEIGHTS``).
    """
    catalogue = load_catalogue(tenant.pk)
    id_to_row = {int(video_id): row for row, video_id in enumerate(catalogue.video_ids)}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT user_id, video_id, event_type FROM users_interaction WHERE tenant_id = %s "
            "AND event_type <> %s ORDER BY user_id, occurred_at, id",
            [tenant.pk, EventType.SKIP.value],
        )
        rows = cursor.fetchall()

    user_ids, sequences, weights = [], [], []
    dropped = 0
    current_user, items, item_weights = None, [], []
    for user_id, video_id, event_type in rows + [(None, None, None)]:
        if user_id != current_user:
            if items:
                user_ids.append(current_user)
                sequences.append(np.array(items, dtype=np.int64))
                weights.append(np.array(item_weights, dtype=np.float64))
            current_user, items, item_weights = user_id, [], []
        if user_id is None:
            break
        row = id_to_row.get(video_id)
        if row is None:
            dropped += 1
            continue
        items.append(row)
        item_weights.append(EVENT_WEIGHTS.get(event_type, 1.0))
    return TenantInteractions(catalogue=catalogue, user_ids=np.array(user_ids, dtype=np.int64),
                              sequences=sequences, weights=weights, dropped_interactions=dropped)


def fuse_catalogue(catalogue: CatalogueMatrix, fusion: FusionWeights) -> np.ndarray:
    """Fuse every catalogue row with ``fusion`` exactly as ingestion does; rows with nothing to fuse stay 0."""
    fused = np.zeros((len(catalogue.video_ids), FUSED_DIM), np.float32)
    spaces = list(catalogue.spaces.items())
    for row in range(len(catalogue.video_ids)):
        embeddings, extractors = {}, {}
        for space, (modality, matrix, mask) in spaces:
            if mask[row]:
                embeddings[modality] = matrix[row]
                extractors[modality] = space
        vector = fuse_embeddings(embeddings, extractors, fusion)
        if vector is not None:
            fused[row] = vector
    return fused


def single_modality_fusion(modality: str) -> FusionWeights:
    """Return the default fusion restricted to one modality (weight 1, the others 0)."""
    return FusionWeights(version=f"ablation-{modality}-only",
                         weights={m: 1.0 if m == modality else 0.0 for m in MODALITIES})


# ---------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------


def _progress(config: EvaluationConfig, total: int, description: str):
    return tqdm(total=total, desc=description, unit="user", disable=not config.progress)


def _metrics(ranked: np.ndarray, users: EvaluationUsers) -> dict[str, float]:
    return evaluate_rankings(ranked, users.relevant, ks=KS)


def random_ranking_metrics(users: EvaluationUsers, n_items: int) -> dict[str, float]:
    """Return the expected metrics of a uniformly random order of each user's unseen items.

    With n unseen items of which r are relevant, every rank contains a relevant item with
    probability p = r / n, so E[precision@k] = p, E[recall@k] = k p / |R|,
    E[NDCG@k] = sum_{i<=k} p / log2(i + 1) / IDCG@k and
    E[hit_rate@k] = 1 - prod_{i<k} (n - r - i) / (n - i).
    """
    totals = {f"{name}@{k}": 0.0 for k in KS for name in ("precision", "recall", "ndcg", "hit_rate")}
    for excluded, relevant in zip(users.excluded, users.relevant):
        seen = set(int(item) for item in excluded)
        unseen = n_items - len(seen)
        reachable = len(relevant - seen)
        p = reachable / unseen if unseen else 0.0
        for k in KS:
            discounts = 1.0 / np.log2(np.arange(2, k + 2))
            totals[f"precision@{k}"] += p
            totals[f"recall@{k}"] += k * p / len(relevant)
            totals[f"ndcg@{k}"] += float(p * discounts.sum() / discounts[: min(k, len(relevant))].sum())
            miss_all = np.prod([(unseen - reachable - i) / (unseen - i) for i in range(min(k, unseen))])
            totals[f"hit_rate@{k}"] += 1.0 - float(miss_all)
    return {name: value / len(users) for name, value in totals.items()}


def train_platform_model(catalogue, sequences, config: EvaluationConfig) -> tuple:
    """Train fusion then ranker in memory on ``sequences``; nothing is stored or activated."""
    training = config.training_config()
    net, fusion_metrics = train_fusion(catalogue, sequences, training, config.progress)
    fused = fused_matrix(catalogue, net)
    ranker, ranker_metrics = train_ranker(fused, sequences, training, config.progress)
    return net, fused, ranker, {**fusion_metrics, **ranker_metrics}


def platform_model(fused: np.ndarray, ranker, config: EvaluationConfig) -> PlatformModel:
    return PlatformModel(fused=fused, ranker=ranker, history_length=config.history_length,
                         n_candidates=config.n_candidates, retrieval_fraction=config.retrieval_fraction)


def evaluate_non_private(model: PlatformModel, users: EvaluationUsers, config: EvaluationConfig,
                         scorers: Sequence[str] = ("ranker", "user_vector"), label: str = "") -> dict:
    """Return the metrics of each non-private scorer: {"ranker": {...}, "user_vector": {...}}."""
    results = {}
    for scorer in scorers:
        with _progress(config, len(users), f"{label}non-private {scorer}") as progress:
            ranked = rank_non_private(model, users, RELEASED_K, scorer=scorer, on_block=progress.update)
        results[scorer] = _metrics(ranked, users)
    if "ranker" in scorers:
        # The ranker only reorders the C candidates, so their hit rate bounds its metrics.
        candidates = rank_non_private(model, users, config.n_candidates, scorer="user_vector")
        key = f"hit_rate@{config.n_candidates}"
        results["ranker"][f"candidate_{key}"] = evaluate_rankings(candidates, users.relevant,
                                                                   ks=(config.n_candidates,))[key]
    return results


def sweep_privacy(model: PlatformModel, users: EvaluationUsers, config: EvaluationConfig, non_private: dict,
                  label: str = "") -> list[dict]:
    """Evaluate each mechanism at each charged epsilon, ``config.repetitions`` times.

    Returns one row per (mechanism, epsilon). Each finite epsilon is the epsilon
    charged per response by every mechanism. The row also carries the plan's noise
    scales and, for ``laplace``, the per-score epsilon that the calibration of arXiv
    2504.08751 assigns to the same noise.
    Infinite epsilon rows repeat the non-private scorer that the mechanism tends to.
    """
    rows = []
    finite = config.finite_epsilons
    total = len(users) * len(finite) * config.repetitions
    with _progress(config, total, f"{label}private responses") as progress:
        for epsilon in finite:
            plans = mechanism_plans(model, config.mechanisms, epsilon, RELEASED_K)
            per_repetition: dict[str, list[dict]] = {name: [] for name in plans}
            for repetition in range(config.repetitions):
                ranked = rank_private(model, users, plans, RELEASED_K, seed=config.seed, repetition=repetition,
                                      on_block=progress.update)
                for name, lists in ranked.items():
                    per_repetition[name].append(_metrics(lists, users))
            for name, plan in plans.items():
                row = _privacy_row(name, epsilon, plan, per_repetition[name])
                row["non_private_ndcg@10"] = non_private[NON_PRIVATE_SCORER[name]]["ndcg@10"]
                rows.append(row)
    if config.includes_non_private:
        for name in config.mechanisms:
            metrics = non_private[NON_PRIVATE_SCORER[name]]
            rows.append({
                "mechanism": name, "epsilon": "inf", "non_private": True, "scorer": NON_PRIVATE_SCORER[name],
                "non_private_ndcg@10": metrics["ndcg@10"],
                "metrics": {key: summarise([value]) for key, value in metrics.items()},
            })
    return rows


def _privacy_row(name: str, epsilon: float, plan, repetitions: list[dict]) -> dict:
    parameters = plan.parameters
    return {
        "mechanism": name,
        "epsilon": float(plan.epsilon),
        "epsilon_requested": float(epsilon),
        "non_private": False,
        "k_released": plan.k,
        "n_candidates": plan.n_candidates,
        "epsilon_user_vector": float(plan.epsilon_user_vector),
        "epsilon_scores": float(plan.epsilon_scores),
        "user_vector_scale": plan.user_vector_scale,
        "score_scale": plan.score_scale,
        "score_scale_rule": plan.score_scale_rule,
        "nominal_epsilon_per_score": parameters.get("nominal_epsilon_per_score"),
        "paper_nominal_cost": parameters.get("paper_nominal_cost"),
        "theorem": plan.theorem,
        "metrics": {key: summarise([r[key] for r in repetitions]) for key in repetitions[0]},
    }


def evaluate_baselines(split, n_items: int, sample_users: np.ndarray, config: EvaluationConfig,
                       watch: Stopwatch) -> dict:
    """Fit popularity, item-kNN and SASRec on the train part and rank for the sampled (and all) users."""
    evaluated = split.evaluated_users
    groups = {"sample": sample_users}
    if config.baselines_all_users:
        groups["all"] = evaluated
    results: dict[str, dict] = {"sample": {}, "all": {}, "fit_seconds": {}, "sasrec_epochs": None}

    def fit_sasrec():
        with tqdm(total=config.sasrec_epochs, desc="SASRec epochs", unit="epoch", disable=not config.progress) as bar:
            return SASRecRecommender().fit(
                split.train, n_items, epochs=config.sasrec_epochs, seed=config.seed, batch_size=256,
                learning_rate=3e-3, max_seconds=config.sasrec_max_seconds,
                on_epoch_end=lambda epoch, loss: bar.update(1),
            )

    fitters = {
        "popularity": lambda: PopularityRecommender().fit(split.train, n_items),
        "itemknn": lambda: ItemKNNRecommender().fit(split.train, n_items, neighbours=config.knn_neighbours,
                                                    shrinkage=config.knn_shrinkage),
        "sasrec": fit_sasrec,
    }
    for name, fit in fitters.items():
        began = time.perf_counter()
        model = watch.measure(f"baseline {name} fit", fit)
        results["fit_seconds"][name] = round(time.perf_counter() - began, 1)
        if name == "sasrec":
            results["sasrec_epochs"] = len(model.epoch_losses)
        for group, users in groups.items():
            histories = [split.test_history(int(u)) for u in users]
            relevant = [{int(split.test_items[int(u)])} for u in users]
            ranked = watch.measure(f"baseline {name} rank", recommend_top_k, model, histories, RELEASED_K)
            results[group][name] = evaluate_rankings(ranked, relevant, ks=KS)
    return results


# ---------------------------------------------------------------------------
# MicroLens
# ---------------------------------------------------------------------------


def evaluate_microlens(tenant: Tenant, config: EvaluationConfig, watch: Stopwatch) -> tuple[dict, TenantInteractions]:
    status_counts = check_embedded(tenant)
    data = watch.measure("load interactions", load_tenant_interactions, tenant)
    catalogue = data.catalogue
    split = leave_last_out_split(data.sequences)
    evaluated = split.evaluated_users
    if len(evaluated) == 0:
        raise EvaluationError(f"no user of tenant {tenant.name} has 3 or more interactions to split")
    rng = np.random.default_rng(config.seed)
    sample = np.sort(rng.choice(evaluated, size=min(config.users, len(evaluated)), replace=False))
    users = EvaluationUsers(
        histories=[split.test_history(int(u)) for u in sample],
        # The test history is the sequence without its last (test) item.
        history_weights=[data.weights[int(u)][:-1] for u in sample],
        excluded=[split.test_history(int(u)) for u in sample],
        relevant=[{int(split.test_items[int(u)])} for u in sample],
    )
    modalities = sorted({modality for modality, _, mask in catalogue.spaces.values() if mask.any()})

    net, fused, ranker, training = watch.measure("train platform", train_platform_model, catalogue, split.train, config)
    model = platform_model(fused, ranker, config)
    non_private = watch.measure("platform non-private", evaluate_non_private, model, users, config)
    baselines = evaluate_baselines(split, len(catalogue.video_ids), sample, config, watch)
    privacy = watch.measure("privacy sweep", sweep_privacy, model, users, config, non_private)

    default_fused = watch.measure("ablation fusion", fuse_catalogue, catalogue, DEFAULT_FUSION)
    ablation = [
        _ablation_row("fused, equal weights (default fusion: fixed random projections)",
                      platform_model(default_fused, None, config), users, config, modalities),
        {"variant": "fused, learned projections and weights", "modalities": modalities,
         "metrics": non_private["user_vector"]},
    ]

    result = {
        "tenant": tenant.name,
        "data": {
            "videos_by_status": status_counts,
            "catalogue_items": int(len(catalogue.video_ids)),
            "modalities": modalities,
            "users": int(len(data.sequences)),
            "interactions": int(sum(len(s) for s in data.sequences)),
            "dropped_interactions": data.dropped_interactions,
            "evaluated_users": int(len(evaluated)),
            "sample_users": int(len(sample)),
        },
        "training": training,
        "non_private": {
            "platform_ranker": non_private["ranker"],
            "platform_user_vector": non_private["user_vector"],
            **baselines["sample"],
            "random": random_ranking_metrics(users, len(catalogue.video_ids)),
        },
        "baselines_all_users": baselines["all"],
        "baseline_fit_seconds": baselines["fit_seconds"],
        "sasrec_epochs": baselines["sasrec_epochs"],
        "privacy": privacy,
        "ablation": ablation,
    }
    return result, data


def _ablation_row(variant: str, model: PlatformModel, users: EvaluationUsers, config: EvaluationConfig,
                  modalities: list[str], label: str = "") -> dict:
    metrics = evaluate_non_private(model, users, config, scorers=("user_vector",), label=label)["user_vector"]
    return {"variant": variant, "modalities": modalities, "metrics": metrics}


# ---------------------------------------------------------------------------
# YouTube-8M
# ---------------------------------------------------------------------------


def ensure_youtube8m_tenant(config: EvaluationConfig) -> Tenant:
    """Return the YouTube-8M tenant, importing the features first if it has no videos."""
    tenant = Tenant.objects.filter(name=config.youtube8m_tenant).first()
    if tenant is None or not Video.objects.filter(tenant=tenant).exists():
        logger.info("Importing YouTube-8M into tenant %s", config.youtube8m_tenant)
        arguments = [str(config.youtube8m_dir)] if config.youtube8m_dir else []
        call_command("import_youtube8m", *arguments, tenant=config.youtube8m_tenant)
        tenant = Tenant.objects.get(name=config.youtube8m_tenant)
    return tenant


def evaluate_youtube8m(config: EvaluationConfig, watch: Stopwatch) -> dict:
    tenant = watch.measure("youtube8m import", ensure_youtube8m_tenant, config)
    catalogue = watch.measure("youtube8m load", load_catalogue, tenant.pk)
    if len(catalogue.video_ids) == 0:
        raise EvaluationError(f"tenant {tenant.name} has no servable videos; rerun import_youtube8m")
    labels_by_id = dict(Video.objects.filter(tenant=tenant, status__in=SERVABLE_STATUSES).values_list("id", "labels"))
    item_labels = [labels_by_id[int(video_id)] for video_id in catalogue.video_ids]

    simulation = LabelUserSimulation()
    train_users = simulate_label_users(item_labels, config.youtube8m_train_users, simulation,
                                       np.random.default_rng([config.seed, 1]))
    test_users = simulate_label_users(item_labels, config.youtube8m_users, simulation,
                                      np.random.default_rng([config.seed, 2]))
    view_weight = EVENT_WEIGHTS[EventType.VIEW]
    users = EvaluationUsers(
        histories=test_users.histories,
        history_weights=[np.full(len(h), view_weight) for h in test_users.histories],
        excluded=test_users.histories,
        relevant=test_users.relevant,
    )

    net, fused, ranker, training = watch.measure("youtube8m train", train_platform_model, catalogue,
                                                 train_users.histories, config)
    model = platform_model(fused, ranker, config)
    non_private = watch.measure("youtube8m non-private", evaluate_non_private, model, users, config,
                                label="YouTube-8M ")
    privacy = watch.measure("youtube8m privacy sweep", sweep_privacy, model, users, config, non_private,
                            label="YouTube-8M ")

    variants = [
        ("visual only (default projection)", single_modality_fusion("visual"), ["visual"]),
        ("audio only (default projection)", single_modality_fusion("audio"), ["audio"]),
        ("fused, equal weights (default fusion)", DEFAULT_FUSION, ["audio", "visual"]),
    ]
    ablation = []
    for variant, fusion, modalities in variants:
        variant_fused = watch.measure("youtube8m ablation", fuse_catalogue, catalogue, fusion)
        ablation.append(_ablation_row(variant, platform_model(variant_fused, None, config), users, config, modalities,
                                      label="YouTube-8M "))
    ablation.append({"variant": "fused, learned projections and weights", "modalities": ["audio", "visual"],
                     "metrics": non_private["user_vector"]})

    label_sizes = [len(r) for r in test_users.relevant]
    return {
        "tenant": tenant.name,
        "data": {
            "catalogue_items": int(len(catalogue.video_ids)),
            "eligible_labels": len(test_users.eligible_labels),
            "train_users": config.youtube8m_train_users,
            "test_users": config.youtube8m_users,
            "mean_history_length": float(np.mean([len(h) for h in test_users.histories])),
            "mean_relevant_items": float(np.mean(label_sizes)),
            "min_relevant_items": int(np.min(label_sizes)),
        },
        "simulation": {**asdict(simulation), "description": simulation.describe()},
        "training": training,
        "non_private": {
            "platform_ranker": non_private["ranker"],
            "platform_user_vector": non_private["user_vector"],
            "random": random_ranking_metrics(users, len(catalogue.video_ids)),
        },
        "privacy": privacy,
        "ablation": ablation,
    }


# ---------------------------------------------------------------------------
# The whole run
# ---------------------------------------------------------------------------


def machine_description() -> dict:
    """Return the CPU model, core count, memory and load of this machine."""
    cpu_model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory_gib = None
    try:
        import psutil

        memory_gib = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu_model": cpu_model, "cores": os.cpu_count(), "memory_gib": memory_gib,
        "load_average_1_5_15_min_at_start": [round(value, 2) for value in load] if load else None,
        "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
    }


def run_evaluation(config: EvaluationConfig) -> dict:
    """Run every part of the evaluation and return the results (see the module docstring)."""
    tenant = Tenant.objects.filter(name=config.tenant).first()
    if tenant is None:
        raise EvaluationError(f"no tenant named {config.tenant!r}; run import_microlens with --tenant {config.tenant}")

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.torch_threads)
    watch = Stopwatch()
    started_at = dt.datetime.now(dt.timezone.utc)
    results: dict = {
        "command": config.command, "started_at": started_at.isoformat(timespec="seconds"),
        "config": config.as_dict(), "machine": machine_description(),
    }
    try:
        results["microlens"], _ = evaluate_microlens(tenant, config, watch)
        if config.skip_youtube8m:
            results["youtube8m"] = {"skipped": "--skip-youtube8m was given"}
        else:
            results["youtube8m"] = evaluate_youtube8m(config, watch)
        results["latency"] = evaluate_latency(tenant, config, watch)
    finally:
        torch.set_num_threads(previous_threads)
    results["timings"] = dict(watch.steps)
    if hasattr(os, "getloadavg"):
        results["machine"]["load_average_1_5_15_min_at_end"] = [round(value, 2) for value in os.getloadavg()]
    results["wall_seconds"] = watch.total
    return results


def evaluate_latency(tenant: Tenant, config: EvaluationConfig, watch: Stopwatch) -> dict:
    if config.skip_latency:
        return {"skipped": "--skip-latency was given"}
    missing = missing_active_models(tenant)
    if missing:
        return {"skipped": (f"tenant {tenant.name} has no active {' or '.join(missing)} model, so serving would not "
                            f"run its ranker; run `python manage.py train --tenant {tenant.name}` and rerun")}
    cells = len(config.mechanisms) * len(config.finite_epsilons)
    if cells == 0:
        return {"skipped": "no finite epsilon was given, and serving has no non-private mode"}
    with tqdm(total=cells * config.latency_users, desc="Serving latency", unit="call",
              disable=not config.progress) as progress:
        try:
            return watch.measure(
                "latency", measure_serving_latency, tenant, config.mechanisms, config.finite_epsilons,
                users_per_cell=config.latency_users, k=10, seed=config.seed, progress=progress,
            )
        except ValueError as error:
            return {"skipped": str(error)}
