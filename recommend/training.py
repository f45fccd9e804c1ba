"""Train a tenant's fusion and ranking models from its interactions.

Fusion: each extractor space gets a linear projection into the fused space
(initialised from the default random projection, centred on the space's mean) and
the modality weights alpha, beta, gamma are softmax(logits) renormalised over the
modalities an item has. They are learned with an InfoNCE loss (van den Oord et al.
2018, "Representation Learning with Contrastive Predictive Coding") that pulls the
fused embeddings of consecutive items of a user's history together against the other
items of the batch:

    loss = -log( exp(<f(i), f(j)> / tau) / sum_b exp(<f(i), f(b)> / tau) )

Ranker: the SequenceRanker learns "next item" against uniformly sampled negatives
with binary cross-entropy, on the fused embeddings of the new fusion.

The last interaction of each user is held out for the validation metrics stored
with each version.

NOTE: training reads every user's interactions without differential privacy, so the
per-response guarantee of privacy.mechanisms does not cover what the weights
memorise; DP-SGD (Abadi et al. 2016) on both models would close that gap.
"""

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from django.db import connection, transaction
from django.utils import timezone
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from recommend import artifacts
from recommend.fusion import default_projection
from recommend.models import ModelKind, ModelVersion
from recommend.ranker import SequenceRanker
from videos.models import FUSED_DIM, MODALITIES, SERVABLE_STATUSES, Video

logger = logging.getLogger(__name__)


@dataclass
class CatalogueMatrix:
    """Modality embeddings of a tenant's servable videos, grouped by extractor space."""

    video_ids: np.ndarray  # (N,) primary keys
    # space name -> (modality, (N, d) matrix with zero rows where absent, (N,) presence mask)
    spaces: dict[str, tuple[str, np.ndarray, np.ndarray]]


@dataclass
class TrainingConfig:
    fusion_epochs: int = 2
    ranker_epochs: int = 2
    batch_size: int = 512
    temperature: float = 0.1
    history_length: int = 20
    learning_rate: float = 2e-3
    max_users_for_validation: int = 2000
    # Sampled (history, next item) pairs per ranker epoch; bounds training time on CPU.
    ranker_samples_per_epoch: int = 100_000
    seed: int = 0
    # One thread: on a busy 2-core machine two torch threads ran several times slower.
    threads: int = 1


def load_catalogue(tenant_id: int) -> CatalogueMatrix:
    """Read every servable video's modality embeddings into per-space matrices."""
    rows = list(
        Video.objects.filter(tenant_id=tenant_id, status__in=SERVABLE_STATUSES)
        .order_by("id")
        .values_list("id", *(f"{m}_embedding" for m in MODALITIES), *(f"{m}_extractor" for m in MODALITIES))
    )
    count = len(rows)
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    spaces: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
    for m_index, modality in enumerate(MODALITIES):
        for row_index, row in enumerate(rows):
            vector = row[1 + m_index]
            if vector is None:
                continue
            space = row[1 + len(MODALITIES) + m_index] or modality
            if space not in spaces:
                spaces[space] = (modality, np.zeros((count, len(vector)), np.float32), np.zeros(count, bool))
            _, matrix, mask = spaces[space]
            if len(vector) == matrix.shape[1]:
                matrix[row_index] = vector
                mask[row_index] = True
    return CatalogueMatrix(video_ids=ids, spaces=spaces)


def load_sequences(tenant_id: int, id_to_row: dict[int, int]) -> list[np.ndarray]:
    """Return each user's interacted catalogue rows, oldest first (skips excluded)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT user_id, video_id FROM users_interaction WHERE tenant_id = %s AND event_type <> 'skip' "
            "ORDER BY user_id, occurred_at, id",
            [tenant_id],
        )
        rows = cursor.fetchall()
    sequences, current_user, current = [], None, []
    for user_id, video_id in rows:
        if user_id != current_user:
            if current:
                sequences.append(np.array(current, dtype=np.int64))
            current_user, current = user_id, []
        row = id_to_row.get(video_id)
        if row is not None:
            current.append(row)
    if current:
        sequences.append(np.array(current, dtype=np.int64))
    return sequences


class FusionNet(nn.Module):
    """Learnable projections per extractor space and modality logits."""

    def __init__(self, catalogue: CatalogueMatrix):
        super().__init__()
        self.space_names = list(catalogue.spaces)
        self.space_modality = [catalogue.spaces[s][0] for s in self.space_names]
        self.projections = nn.ModuleList()
        self.centers = []
        for space in self.space_names:
            _, matrix, mask = catalogue.spaces[space]
            center = matrix[mask].mean(axis=0) if mask.any() else np.zeros(matrix.shape[1], np.float32)
            layer = nn.Linear(matrix.shape[1], FUSED_DIM, bias=False)
            with torch.no_grad():
                layer.weight.copy_(torch.from_numpy(default_projection(space, matrix.shape[1])))
            self.projections.append(layer)
            self.centers.append(torch.from_numpy(center.astype(np.float32)))
        self.modality_logits = nn.Parameter(torch.zeros(len(MODALITIES)))

    def forward(self, inputs: list[torch.Tensor], masks: list[torch.Tensor]) -> torch.Tensor:
        weights = torch.softmax(self.modality_logits, dim=0)
        total = torch.zeros(inputs[0].shape[0], FUSED_DIM)
        weight_sum = torch.zeros(inputs[0].shape[0], 1)
        for index, (x, mask) in enumerate(zip(inputs, masks)):
            w = weights[MODALITIES.index(self.space_modality[index])]
            projected = F.normalize(self.projections[index](x - self.centers[index]), dim=1)
            present = mask.float()[:, None]
            total = total + w * present * projected
            weight_sum = weight_sum + w * present
        # Renormalise over the present modalities; rows with none stay zero.
        return F.normalize(total / weight_sum.clamp_min(1e-12), dim=1)

    def export(self) -> dict:
        weights = torch.softmax(self.modality_logits.detach(), dim=0)
        return {
            "weights": {m: float(weights[i]) for i, m in enumerate(MODALITIES)},
            "projections": {
                space: (self.projections[i].weight.detach().clone(), self.centers[i].clone())
                for i, space in enumerate(self.space_names)
            },
        }


def _gather(catalogue: CatalogueMatrix, net: FusionNet, rows: np.ndarray):
    inputs = [torch.from_numpy(catalogue.spaces[s][1][rows]) for s in net.space_names]
    masks = [torch.from_numpy(catalogue.spaces[s][2][rows]) for s in net.space_names]
    return inputs, masks


def fused_matrix(catalogue: CatalogueMatrix, net: FusionNet, batch: int = 4096) -> np.ndarray:
    """Return the fused embedding of every catalogue row, shape (N, FUSED_DIM)."""
    out = np.zeros((len(catalogue.video_ids), FUSED_DIM), np.float32)
    with torch.inference_mode():
        for start in range(0, len(out), batch):
            rows = np.arange(start, min(start + batch, len(out)))
            out[rows] = net(*_gather(catalogue, net, rows)).numpy()
    return out


def train_fusion(catalogue, sequences, config: TrainingConfig, progress: bool) -> tuple[FusionNet, dict]:
    net = FusionNet(catalogue)
    pairs = np.concatenate([np.stack([s[:-2], s[1:-1]], axis=1) for s in sequences if len(s) >= 3] or
                           [np.zeros((0, 2), np.int64)])
    optimiser = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    rng = np.random.default_rng(config.seed)
    losses = []
    steps = max(1, len(pairs) // config.batch_size)
    for epoch in range(config.fusion_epochs if len(pairs) else 0):
        order = rng.permutation(len(pairs))
        for step in tqdm(range(steps), desc=f"Fusion epoch {epoch + 1}", disable=not progress, unit="batch"):
            batch = pairs[order[step * config.batch_size:(step + 1) * config.batch_size]]
            anchors = net(*_gather(catalogue, net, batch[:, 0]))
            positives = net(*_gather(catalogue, net, batch[:, 1]))
            logits = anchors @ positives.T / config.temperature
            loss = F.cross_entropy(logits, torch.arange(len(batch)))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
    exported = net.export()
    return net, {"fusion_loss": float(np.mean(losses[-50:])) if losses else None,
                 "fusion_pairs": int(len(pairs)), "modality_weights": exported["weights"]}


def _ranker_samples(sequences, length: int, rng, count: int):
    """Sample (history rows padded with -1, positive row) pairs from training prefixes."""
    eligible = [s[:-1] for s in sequences if len(s) >= 3]
    if not eligible:
        return np.zeros((0, length), np.int64), np.zeros(0, np.int64)
    lengths = np.array([len(s) for s in eligible])
    user_pick = rng.choice(len(eligible), size=count, p=(lengths - 1) / (lengths - 1).sum())
    histories = np.full((count, length), -1, np.int64)
    targets = np.zeros(count, np.int64)
    for i, u in enumerate(user_pick):
        seq = eligible[u]
        t = rng.integers(1, len(seq))
        past = seq[max(0, t - length):t]
        histories[i, -len(past):] = past
        targets[i] = seq[t]
    return histories, targets


def train_ranker(fused: np.ndarray, sequences, config: TrainingConfig, progress: bool) -> tuple[SequenceRanker, dict]:
    rng = np.random.default_rng(config.seed + 1)
    torch.manual_seed(config.seed)
    ranker = SequenceRanker(history_length=config.history_length)
    optimiser = torch.optim.AdamW(ranker.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    total_positions = sum(max(len(s) - 2, 0) for s in sequences)
    per_epoch = int(min(total_positions, config.ranker_samples_per_epoch))
    fused_t = torch.from_numpy(np.vstack([fused, np.zeros((1, fused.shape[1]), np.float32)]))
    losses = []
    ranker.train()
    for epoch in range(config.ranker_epochs if per_epoch else 0):
        histories, targets = _ranker_samples(sequences, config.history_length, rng, per_epoch)
        negatives = rng.integers(0, len(fused), size=per_epoch)
        steps = max(1, per_epoch // config.batch_size)
        for step in tqdm(range(steps), desc=f"Ranker epoch {epoch + 1}", disable=not progress, unit="batch"):
            sl = slice(step * config.batch_size, (step + 1) * config.batch_size)
            hist_rows = torch.from_numpy(histories[sl])
            mask = hist_rows >= 0
            history = fused_t[hist_rows.clamp_min(-1)]  # -1 picks the zero row
            batch = len(hist_rows)
            candidates = torch.cat([fused_t[torch.from_numpy(targets[sl])], fused_t[torch.from_numpy(negatives[sl])]])
            logits = ranker(torch.cat([history, history]), torch.cat([mask, mask]), candidates)
            labels = torch.cat([torch.ones(batch), torch.zeros(batch)])
            loss = F.binary_cross_entropy_with_logits(logits, labels)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
    ranker.eval()
    return ranker, {"ranker_loss": float(np.mean(losses[-50:])) if losses else None,
                    "ranker_samples_per_epoch": per_epoch}


def validation_metrics(fused, sequences, ranker, config: TrainingConfig) -> dict:
    """Return HR@10 of the held-out last item among 100 sampled items, per scorer."""
    rng = np.random.default_rng(config.seed + 2)
    users = [s for s in sequences if len(s) >= 3]
    if not users or len(fused) < 101:
        return {}
    picked = rng.choice(len(users), size=min(len(users), config.max_users_for_validation), replace=False)
    hits_ranker = hits_mean = 0
    for u in picked:
        seq = users[u]
        history, target = seq[:-1], seq[-1]
        negatives = rng.choice(len(fused), size=100, replace=False)
        negatives = negatives[negatives != target][:99]
        candidates = np.concatenate([[target], negatives])
        scores = ranker.score_candidates(fused[history], fused[candidates])
        hits_ranker += int((scores > scores[0]).sum() < 10)
        mean_scores = fused[candidates] @ fused[history[-config.history_length:]].mean(axis=0)
        hits_mean += int((mean_scores > mean_scores[0]).sum() < 10)
    return {"validation_users": int(len(picked)), "hr_at_10_of_100_ranker": hits_ranker / len(picked),
            "hr_at_10_of_100_mean_history": hits_mean / len(picked)}


def _next_version(tenant_id: int, kind: str) -> int:
    latest = ModelVersion.objects.filter(tenant_id=tenant_id, kind=kind).order_by("-version").first()
    return 1 if latest is None else latest.version + 1


def write_fused_embeddings(video_ids: np.ndarray, fused: np.ndarray, fusion_version: str) -> None:
    """Overwrite the fused embedding of the given videos, in batches, inside the caller's transaction."""
    with connection.cursor() as cursor:
        for start in range(0, len(video_ids), 2000):
            chunk = range(start, min(start + 2000, len(video_ids)))
            cursor.executemany(
                "UPDATE videos_video SET fused_embedding = %s::vector, fusion_version = %s WHERE id = %s",
                [("[" + ",".join(f"{x:.7g}" for x in fused[i]) + "]", fusion_version, int(video_ids[i])) for i in chunk],
            )


def activate_version(version: ModelVersion) -> None:
    """Make one version the tenant's active model of its kind."""
    with transaction.atomic():
        ModelVersion.objects.filter(tenant_id=version.tenant_id, kind=version.kind, is_active=True).update(
            is_active=False
        )
        ModelVersion.objects.filter(pk=version.pk).update(is_active=True, activated_at=timezone.now())
    logger.info("Activated %s for tenant %s", version.label, version.tenant_id)


def train_tenant_models(tenant_id: int, config: TrainingConfig | None = None, *, activate: bool = True,
                        progress: bool = False) -> dict:
    """Train fusion then ranker for one tenant, store both versions, and activate them.

    Activating the fusion rewrites every servable video's fused embedding in the
    same transaction, so retrieval never mixes two fusion versions.
    """
    config = config or TrainingConfig()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    try:
        catalogue = load_catalogue(tenant_id)
        if len(catalogue.video_ids) == 0:
            raise ValueError(f"Tenant {tenant_id} has no ready videos to train on; ingest or import videos first.")
        id_to_row = {int(v): i for i, v in enumerate(catalogue.video_ids)}
        sequences = load_sequences(tenant_id, id_to_row)
        train_sequences = [s[:-1] if len(s) >= 3 else s for s in sequences]

        net, fusion_metrics = train_fusion(catalogue, train_sequences, config, progress)
        fused = fused_matrix(catalogue, net)
        ranker, ranker_metrics = train_ranker(fused, train_sequences, config, progress)
        metrics = {**fusion_metrics, **ranker_metrics, **validation_metrics(fused, sequences, ranker, config),
                   "videos": int(len(catalogue.video_ids)), "users": len(sequences),
                   "training_seconds": round(time.perf_counter() - started, 1)}
    finally:
        torch.set_num_threads(previous_threads)

    with transaction.atomic():
        fusion_version = ModelVersion.objects.create(
            tenant_id=tenant_id, kind=ModelKind.FUSION, version=_next_version(tenant_id, ModelKind.FUSION),
            artifact=artifacts.serialize_state(net.export()), config=vars(config), metrics=metrics,
        )
        ranker_version = ModelVersion.objects.create(
            tenant_id=tenant_id, kind=ModelKind.RANKER, version=_next_version(tenant_id, ModelKind.RANKER),
            artifact=artifacts.serialize_state({"config": ranker.config(), "weights": ranker.state_dict()}),
            config=vars(config), metrics=metrics,
        )
        if activate:
            write_fused_embeddings(catalogue.video_ids, fused, fusion_version.label)
            activate_version(fusion_version)
            activate_version(ranker_version)
    logger.info("Trained %s and %s for tenant %s", fusion_version.label, ranker_version.label, tenant_id,
                extra={"metrics": metrics})
    return {"fusion": fusion_version.label, "ranker": ranker_version.label, "metrics": metrics}
