"""Transformer ranker over a user's recent history and each candidate.

A Behaviour Sequence Transformer (Chen et al. 2019, "Behavior Sequence Transformer
for E-commerce Recommendation in Alibaba"): the last L history items and one
candidate form a sequence of fused embeddings with learned position embeddings; a
small Transformer encoder reads it and the candidate position's output gives the
logit of "the user interacts with this candidate next". At serving time the C
candidates of one request are scored in one batch of C sequences.
"""

import numpy as np
import torch
from torch import nn

from videos.models import FUSED_DIM


class SequenceRanker(nn.Module):
    """Score candidates given a history of fused embeddings."""

    def __init__(self, history_length: int = 20, model_dim: int = 64, heads: int = 2, layers: int = 2,
                 dropout: float = 0.1, input_dim: int = FUSED_DIM):
        super().__init__()
        self.history_length = history_length
        self.input_projection = nn.Linear(input_dim, model_dim)
        # Positions 0..L-1 are history slots (oldest first), position L is the candidate.
        self.positions = nn.Embedding(history_length + 1, model_dim)
        self.padding_token = nn.Parameter(torch.zeros(model_dim))
        layer = nn.TransformerEncoderLayer(
            model_dim, heads, dim_feedforward=2 * model_dim, dropout=dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(model_dim), nn.Linear(model_dim, model_dim), nn.GELU(),
                                  nn.Linear(model_dim, 1))

    def forward(self, history: torch.Tensor, history_mask: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Return logits of shape (B,).

        history: (B, L, D) fused embeddings, right-aligned (most recent last);
        history_mask: (B, L) True where a slot contains a real item; candidates: (B, D).
        """
        batch = history.shape[0]
        tokens = self.input_projection(torch.cat([history, candidates[:, None, :]], dim=1))
        pad = ~history_mask
        tokens[:, :-1][pad] = self.padding_token
        tokens = tokens + self.positions.weight[None, :, :]
        key_padding = torch.cat([pad, torch.zeros(batch, 1, dtype=torch.bool, device=pad.device)], dim=1)
        encoded = self.encoder(tokens, src_key_padding_mask=key_padding)
        return self.head(encoded[:, -1]).squeeze(-1)

    @torch.inference_mode()
    def score_candidates(self, history: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Return probabilities in [0, 1] for each candidate given one user's history.

        history: (n, D) oldest first, n >= 0; candidates: (C, D).
        """
        length = self.history_length
        recent = history[-length:] if len(history) else np.zeros((0, candidates.shape[1]), np.float32)
        padded = np.zeros((length, candidates.shape[1]), np.float32)
        mask = np.zeros(length, dtype=bool)
        if len(recent):
            padded[-len(recent):] = recent
            mask[-len(recent):] = True
        count = candidates.shape[0]
        history_t = torch.from_numpy(padded)[None].expand(count, -1, -1)
        mask_t = torch.from_numpy(mask)[None].expand(count, -1)
        logits = self(history_t, mask_t, torch.from_numpy(np.ascontiguousarray(candidates, dtype=np.float32)))
        return torch.sigmoid(logits).numpy().astype(np.float64)

    def config(self) -> dict:
        layer = self.encoder.layers[0]
        return {
            "history_length": self.history_length,
            "model_dim": self.input_projection.out_features,
            "heads": layer.self_attn.num_heads,
            "layers": len(self.encoder.layers),
            "input_dim": self.input_projection.in_features,
        }


def ranker_from_state(state: dict) -> SequenceRanker:
    config = dict(state["config"])
    model = SequenceRanker(dropout=0.0, **config)
    model.load_state_dict(state["weights"])
    model.eval()
    return model
