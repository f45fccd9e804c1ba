"""Weighted fusion of per-modality embeddings into one retrieval space.

Implements the fusion of "Research on the Design of a Short Video Recommendation
System Based on Multimodal Information and Differential Privacy" (arXiv 2504.08751):

    v = alpha * P_visual(x_visual) + beta * P_text(x_text) + gamma * P_audio(x_audio)

where each P_m projects modality m into the shared FUSED_DIM space and is followed by
L2 normalisation. A missing modality drops out and the weights of the present ones
are renormalised to sum to 1, so a clip without audio or without a title is fused
from what it has. The result is L2-normalised, since retrieval uses cosine distance.

Before a tenant has a trained fusion model, the default uses equal weights and fixed
Gaussian random projections (Johnson-Lindenstrauss), one per extractor space, seeded
by the extractor's name so every process computes the same matrix. Random
projections preserve cosine similarity within each modality in expectation, which is
all a default needs until interactions teach the learned projections.
"""

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from videos.models import FUSED_DIM, MODALITIES

DEFAULT_FUSION_VERSION = "default-random-projection/1"


@lru_cache(maxsize=32)
def default_projection(extractor: str, input_dim: int) -> np.ndarray:
    """Return the fixed (FUSED_DIM, input_dim) Gaussian projection of one extractor space."""
    seed = int.from_bytes(hashlib.sha256(f"{extractor}:{input_dim}".encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((FUSED_DIM, input_dim)) / np.sqrt(FUSED_DIM)).astype(np.float32)


@dataclass
class FusionWeights:
    """Projections per extractor space and modality weights (alpha, beta, gamma)."""

    version: str
    weights: dict[str, float]
    # (extractor space) -> (projection matrix (FUSED_DIM, d_in), centering vector (d_in,))
    projections: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def project(self, modality: str, extractor: str, vector: np.ndarray) -> np.ndarray:
        learned = self.projections.get(extractor)
        if learned is not None and learned[0].shape[1] == vector.shape[0]:
            matrix, center = learned
            return matrix @ (vector - center)
        return default_projection(extractor, vector.shape[0]) @ vector


DEFAULT_FUSION = FusionWeights(
    version=DEFAULT_FUSION_VERSION, weights={modality: 1.0 / len(MODALITIES) for modality in MODALITIES}
)


def fuse_embeddings(
    embeddings: dict[str, np.ndarray],
    extractors: dict[str, str],
    fusion: FusionWeights = DEFAULT_FUSION,
) -> np.ndarray | None:
    """Fuse the present modalities into one unit vector, or return None if none is usable."""
    parts = []
    weights = []
    for modality in MODALITIES:
        vector = embeddings.get(modality)
        weight = fusion.weights.get(modality, 0.0)
        if vector is None or weight <= 0:
            continue
        projected = fusion.project(modality, extractors.get(modality, modality), np.asarray(vector, np.float32))
        norm = float(np.linalg.norm(projected))
        if not np.isfinite(norm) or norm == 0.0:
            continue
        parts.append(projected / norm)
        weights.append(weight)
    if not parts:
        return None

    # Renormalise over the present modalities: w_m / sum of present w.
    total = sum(weights)
    fused = sum((w / total) * p for w, p in zip(weights, parts))
    norm = float(np.linalg.norm(fused))
    if not np.isfinite(norm) or norm == 0.0:
        return None
    return (fused / norm).astype(np.float32)


def fusion_from_state(version_label: str, state: dict) -> FusionWeights:
    """Build FusionWeights from a trained fusion artifact (see recommend.training)."""
    projections = {
        extractor: (matrix.numpy().astype(np.float32), center.numpy().astype(np.float32))
        for extractor, (matrix, center) in state["projections"].items()
    }
    return FusionWeights(version=version_label, weights=dict(state["weights"]), projections=projections)
