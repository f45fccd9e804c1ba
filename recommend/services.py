"""Recommendation services: fusion of new embeddings, serving, model activation."""

import logging

import numpy as np

from recommend import artifacts
from recommend.fusion import DEFAULT_FUSION, FusionWeights, fuse_embeddings, fusion_from_state
from recommend.models import ModelKind

logger = logging.getLogger(__name__)


def _load_fusion(version) -> FusionWeights:
    state = artifacts.deserialize_state(version.artifact)
    return fusion_from_state(f"{version.label}", state)


def active_fusion(tenant_id: int) -> FusionWeights:
    """Return the tenant's active learned fusion, or the default fusion."""
    return artifacts.load_active(tenant_id, ModelKind.FUSION, _load_fusion) or DEFAULT_FUSION


def fuse_video_embeddings(
    tenant_id: int, embeddings: dict[str, np.ndarray], extractors: dict[str, str]
) -> tuple[np.ndarray | None, str]:
    """Fuse one video's modality embeddings with the tenant's active fusion."""
    fusion = active_fusion(tenant_id)
    return fuse_embeddings(embeddings, extractors, fusion), fusion.version
