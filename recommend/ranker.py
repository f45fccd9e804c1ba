"""Transformer ranker over a user's recent history and each candidate.

A Behaviour Sequence Transformer (Chen et al. 2019, "Behavior Sequence Transformer
for E-commerce Recommendation in Alibaba") in which the candidate enters only the last
layer:

- the last L history items (fused embeddings with learned position embeddings) pass
  through ``layers - 1`` Transformer encoder layers that see the history alone;
- in the last layer the candidate token, at position L, attends over the encoded
  history and itself, followed by the layer's feed-forward block;
- a small head turns the candidate token's output into the logit of "the user
  interacts with this candidate next".

In the original BST the history tokens also attend to the candidate in every layer, so
each of the C candidates of a request needs its own pass over all L + 1 tokens. Here
the history encoding does not depend on the candidate: a request encodes the history
once and then runs one query token per candidate, which cuts the ranker's work per
request by about L times (Zhou et al. 2018, "Deep Interest Network", score candidates
with the same target attention over a history).
"""

import logging
import math

import numpy as np
import torch
from torch import nn

from videos.models import FUSED_DIM

logger = logging.getLogger(__name__)

# Stored with each artifact; a ranker saved in another layout cannot be loaded into
# this class and has to be retrained.
ARTIFACT_FORMAT = 2


class CandidateAttentionLayer(nn.Module):
    """A pre-norm Transformer encoder layer evaluated for the candidate position only.

    The candidate token is the query. The keys and values are the encoded history
    tokens followed by the candidate token itself, so a candidate always has one
    unmasked key, even when the whole history is padding.
    """

    def __init__(self, model_dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.scale = 1.0 / math.sqrt(model_dim // heads)
        self.norm_attention = nn.LayerNorm(model_dim)
        self.query = nn.Linear(model_dim, model_dim)
        self.key = nn.Linear(model_dim, model_dim)
        self.value = nn.Linear(model_dim, model_dim)
        self.output = nn.Linear(model_dim, model_dim)
        self.norm_feedforward = nn.LayerNorm(model_dim)
        self.feedforward = nn.Sequential(nn.Linear(model_dim, 2 * model_dim), nn.GELU(), nn.Dropout(dropout),
                                         nn.Linear(2 * model_dim, model_dim))
        self.dropout = nn.Dropout(dropout)

    def _split(self, tensor: torch.Tensor) -> torch.Tensor:
        # (..., D) -> (..., heads, D / heads)
        return tensor.unflatten(-1, (self.heads, -1))

    def forward(self, history: torch.Tensor, history_padding: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
        """Return the candidate tokens after the layer, shape (B, D).

        history: (H, L, D) encoded history with H = 1 (shared by every candidate) or
        H = B; history_padding: (H, L) True where a slot is padding; candidate: (B, D).
        """
        normed_history = self.norm_attention(history)
        normed_candidate = self.norm_attention(candidate)
        query = self._split(self.query(normed_candidate))  # (B, h, d)
        history_keys = self._split(self.key(normed_history)).transpose(1, 2)  # (H, h, L, d)
        history_values = self._split(self.value(normed_history)).transpose(1, 2)
        own_key = self._split(self.key(normed_candidate))  # (B, h, d)
        own_value = self._split(self.value(normed_candidate))

        history_logits = (query[:, :, None, :] @ history_keys.transpose(-1, -2)).squeeze(2) * self.scale  # (B, h, L)
        history_logits = history_logits.masked_fill(history_padding[:, None, :], float("-inf"))
        own_logit = (query * own_key).sum(-1, keepdim=True) * self.scale  # (B, h, 1)
        weights = torch.softmax(torch.cat([history_logits, own_logit], dim=-1), dim=-1)
        weights = self.dropout(weights)
        attended = (weights[:, :, None, :-1] @ history_values).squeeze(2) + weights[:, :, -1:] * own_value
        token = candidate + self.dropout(self.output(attended.flatten(1)))
        return token + self.dropout(self.feedforward(self.norm_feedforward(token)))


class SequenceRanker(nn.Module):
    """Score candidates given a history of fused embeddings."""

    def __init__(self, history_length: int = 20, model_dim: int = 64, heads: int = 2, layers: int = 2,
                 dropout: float = 0.1, input_dim: int = FUSED_DIM):
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be at least 1; got {layers}")
        if model_dim % heads:
            raise ValueError(f"model_dim must be a multiple of heads; got {model_dim} and {heads}")
        self.history_length = history_length
        self.heads = heads
        self.input_projection = nn.Linear(input_dim, model_dim)
        # Positions 0..L-1 are history slots (oldest first), position L is the candidate.
        self.positions = nn.Embedding(history_length + 1, model_dim)
        self.padding_token = nn.Parameter(torch.zeros(model_dim))
        self.history_layers = nn.ModuleList(
            nn.TransformerEncoderLayer(model_dim, heads, dim_feedforward=2 * model_dim, dropout=dropout,
                                       batch_first=True, norm_first=True)
            for _ in range(layers - 1)
        )
        self.candidate_layer = CandidateAttentionLayer(model_dim, heads, dropout)
        self.head = nn.Sequential(nn.LayerNorm(model_dim), nn.Linear(model_dim, model_dim), nn.GELU(),
                                  nn.Linear(model_dim, 1))

    def encode_history(self, history: torch.Tensor, history_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the encoded history (H, L, D) and its padding mask (H, L).

        history: (H, L, D_in), right-aligned (most recent last); history_mask: (H, L)
        True where a slot contains a real item.
        """
        padding = ~history_mask
        tokens = self.input_projection(history)
        tokens = torch.where(padding[..., None], self.padding_token, tokens)
        tokens = tokens + self.positions.weight[None, :-1, :]
        # A history of padding only would leave its rows nothing to attend to, so such a
        # row attends over its padding tokens, which carry no user data.
        attention_padding = padding & history_mask.any(dim=1, keepdim=True)
        for layer in self.history_layers:
            tokens = layer(tokens, src_key_padding_mask=attention_padding)
        return tokens, attention_padding

    def score_encoded(self, encoded: torch.Tensor, padding: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Return logits (B,) for candidates (B, D_in) against an encoded history (1 or B rows)."""
        candidate_tokens = self.input_projection(candidates) + self.positions.weight[-1]
        return self.head(self.candidate_layer(encoded, padding, candidate_tokens)).squeeze(-1)

    def forward(self, history: torch.Tensor, history_mask: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Return logits of shape (B,).

        history: (B, L, D) fused embeddings, right-aligned (most recent last);
        history_mask: (B, L) True where a slot contains a real item; candidates: (B, D).
        """
        encoded, padding = self.encode_history(history, history_mask)
        return self.score_encoded(encoded, padding, candidates)

    def _probabilities(self, history: torch.Tensor, history_mask: torch.Tensor,
                       candidates: torch.Tensor) -> torch.Tensor:
        encoded, padding = self.encode_history(history, history_mask)
        return torch.sigmoid(self.score_encoded(encoded, padding, candidates))

    def prepare_for_serving(self, candidates: int = 100) -> None:
        """Trace and freeze the scoring path that ``score_candidates`` runs.

        The traced graph skips the Python work of the module calls, which is most of a
        request's ranking time at these sizes (0.5 ms instead of 0.9 ms for 100
        candidates on one core). The model must not be trained afterwards. The trace
        has no branches on data, so it is valid for any history mask and any number
        of candidates.
        """
        self.eval()
        width = self.input_projection.in_features
        example = (torch.zeros(1, self.history_length, width), torch.ones(1, self.history_length, dtype=torch.bool),
                   torch.zeros(candidates, width))
        with torch.inference_mode():
            traced = torch.jit.trace(_Probabilities(self).eval(), example)
            # Set around nn.Module's __setattr__, so that the traced copy is not registered
            # as a submodule and never enters state_dict().
            scorer = torch.jit.freeze(traced)
            # TorchScript profiles the first calls of a graph (about 5 ms each here) and
            # optimises it after them. Running them now keeps that cost out of the first requests.
            for _ in range(3):
                scorer(*example)
            object.__setattr__(self, "_serving_scorer", scorer)

    @torch.inference_mode()
    def score_candidates(self, history: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Return probabilities in [0, 1] for each candidate given one user's history.

        history: (n, D) oldest first, n >= 0; candidates: (C, D). The history is
        encoded once and shared by all C candidates.
        """
        length = self.history_length
        width = candidates.shape[1]
        recent = history[-length:] if len(history) else np.zeros((0, width), np.float32)
        padded = np.zeros((1, length, width), np.float32)
        mask = np.zeros((1, length), dtype=bool)
        if len(recent):
            padded[0, -len(recent):] = recent
            mask[0, -len(recent):] = True
        scorer = getattr(self, "_serving_scorer", None) or self._probabilities
        probabilities = scorer(torch.from_numpy(padded), torch.from_numpy(mask),
                               torch.from_numpy(np.ascontiguousarray(candidates, dtype=np.float32)))
        return probabilities.numpy().astype(np.float64)

    def config(self) -> dict:
        return {
            "format": ARTIFACT_FORMAT,
            "history_length": self.history_length,
            "model_dim": self.input_projection.out_features,
            "heads": self.heads,
            "layers": len(self.history_layers) + 1,
            "input_dim": self.input_projection.in_features,
        }


class _Probabilities(nn.Module):
    # torch.jit.trace follows forward(); this wrapper makes the scoring path the one traced.
    def __init__(self, ranker: SequenceRanker):
        super().__init__()
        self.ranker = ranker

    def forward(self, history, history_mask, candidates):
        return self.ranker._probabilities(history, history_mask, candidates)


def ranker_from_state(state: dict, *, for_serving: bool = False) -> SequenceRanker | None:
    """Rebuild a ranker from a stored artifact, or return None for an artifact of another format.

    Serving treats None as "no ranker" and scores candidates without one, so an old
    artifact degrades the ranking until ``manage.py train`` replaces it instead of
    failing requests.
    """
    config = dict(state["config"])
    artifact_format = config.pop("format", 1)
    if artifact_format != ARTIFACT_FORMAT:
        logger.warning("Ignoring a ranker artifact of format %s; this version reads format %s. "
                       "Retrain with manage.py train.", artifact_format, ARTIFACT_FORMAT)
        return None
    model = SequenceRanker(dropout=0.0, **config)
    model.load_state_dict(state["weights"])
    model.eval()
    if for_serving:
        model.prepare_for_serving()
    return model
