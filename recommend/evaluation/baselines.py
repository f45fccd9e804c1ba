"""Baseline recommenders for full-ranking evaluation on interaction sequences.

Every model is fit on per-user training sequences of 0-based item indices and
``score`` returns a dense (n_sequences, n_items) float32 array with one score per item
of the catalogue, higher meaning more relevant. Scores include items the user has
already seen, so callers exclude them with ``top_k_excluding``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "ItemKNNRecommender",
    "PopularityRecommender",
    "Recommender",
    "SASRecRecommender",
    "recommend_top_k",
    "top_k_excluding",
]

logger = logging.getLogger(__name__)

ItemSequences = Sequence[Sequence[int] | np.ndarray]


class Recommender(Protocol):
    """Interface that ``recommend_top_k`` needs: the catalogue size and ``score``."""

    n_items: int

    def score(self, sequences: ItemSequences) -> np.ndarray: ...


def _validate_n_items(n_items: int) -> None:
    if isinstance(n_items, bool) or not isinstance(n_items, (int, np.integer)) or n_items < 1:
        raise ValueError(f"n_items must be a positive integer; got {n_items!r}")


def _as_index_arrays(sequences: ItemSequences, n_items: int, name: str) -> list[np.ndarray]:
    arrays = []
    for user, sequence in enumerate(sequences):
        items = np.asarray(sequence, dtype=np.int64).reshape(-1)
        invalid = items[(items < 0) | (items >= n_items)]
        if len(invalid):
            raise ValueError(
                f"{name}[{user}] contains item index {int(invalid[0])}, outside 0..{n_items - 1}; "
                "map items to indices below n_items"
            )
        arrays.append(items)
    return arrays


def _interaction_matrix(sequences: list[np.ndarray], n_items: int) -> sp.csr_matrix:
    """Build the binary (n_sequences, n_items) matrix with X[u, i] = 1 if i is in sequence u."""
    lengths = np.array([len(items) for items in sequences], dtype=np.int64)
    rows = np.repeat(np.arange(len(sequences), dtype=np.int64), lengths)
    cols = np.concatenate(sequences) if sequences else np.empty(0, dtype=np.int64)
    matrix = sp.csr_matrix(
        (np.ones(len(cols), dtype=np.float32), (rows, cols)), shape=(len(sequences), n_items), dtype=np.float32
    )
    # The constructor sums repeated interactions, so reset every stored value to 1.
    matrix.data[:] = 1.0
    return matrix


# ---------------------------------------------------------------------------
# Ranking helpers
# ---------------------------------------------------------------------------


def top_k_excluding(scores: np.ndarray, seen_item_indices: ItemSequences, k: int) -> np.ndarray:
    """Return each row's k best item indices, best first, skipping the row's seen items.

    ``scores`` has shape (n_users, n_items), and ``seen_item_indices[u]`` lists the items
    to exclude for row u. Returns an int64 array of shape (n_users, min(k, n_items)).
    Equal scores rank the lower item index first, also when deciding which of several items
    tied at the k-th score make the cut. Rows with fewer than k rankable items
    are padded with -1, and an item whose score is -inf counts as excluded. ``scores`` is
    not modified. Raises ValueError for NaN scores.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer; got {k!r}")
    scores = np.array(scores, copy=True)
    if scores.dtype.kind != "f":
        scores = scores.astype(np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must have shape (n_users, n_items); got {scores.shape}")
    n_users, n_items = scores.shape
    if len(seen_item_indices) != n_users:
        raise ValueError(f"scores has {n_users} rows but seen_item_indices has {len(seen_item_indices)}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN; check the model's output")

    seen = _as_index_arrays(seen_item_indices, n_items, "seen_item_indices")
    lengths = np.array([len(items) for items in seen], dtype=np.int64)
    if lengths.sum():
        scores[np.repeat(np.arange(n_users), lengths), np.concatenate(seen)] = -np.inf

    k = min(int(k), n_items)
    # torch.topk took 13 ms where np.argpartition took 190 ms for 512 rows of 19,220 items
    # (2-core x86-64 VM, torch 2.13 CPU). Only the k selected are then sorted.
    top = torch.topk(torch.from_numpy(scores), k, dim=1, sorted=False)
    candidates = top.indices.numpy()
    candidate_scores = top.values.numpy()

    # topk leaves unspecified which of several items tied at the k-th score it keeps.
    # In rows with such a tie, keep every item above the k-th score plus the tied items
    # with the lowest indices, so that results do not depend on the selection algorithm.
    kth_scores = candidate_scores.min(axis=1)
    for row in np.flatnonzero((scores >= kth_scores[:, None]).sum(axis=1) > k):
        above = np.flatnonzero(scores[row] > kth_scores[row])
        tied = np.flatnonzero(scores[row] == kth_scores[row])[: k - len(above)]
        candidates[row] = np.concatenate((above, tied))
        candidate_scores[row] = scores[row, candidates[row]]
    order = np.lexsort((candidates, -candidate_scores), axis=1)
    ranked = np.take_along_axis(candidates, order, axis=1)
    ranked[np.take_along_axis(candidate_scores, order, axis=1) == -np.inf] = -1
    return ranked.astype(np.int64)


def recommend_top_k(
    model: Recommender, histories: ItemSequences, k: int, *, batch_size: int = 512
) -> np.ndarray:
    """Score every item for each history and return the top k unseen items per history.

    Items in ``histories[u]`` are excluded from row u. Scoring runs in batches of
    ``batch_size`` histories, so memory stays near batch_size * n_items * 8 bytes.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}")
    batches = []
    for start in range(0, len(histories), batch_size):
        batch = histories[start : start + batch_size]
        batches.append(top_k_excluding(model.score(batch), batch, k))
    if not batches:
        return np.empty((0, min(k, model.n_items)), dtype=np.int64)
    return np.concatenate(batches)


# ---------------------------------------------------------------------------
# Popularity
# ---------------------------------------------------------------------------


class PopularityRecommender:
    """Recommend the items with the most training interactions to every user."""

    def __init__(self) -> None:
        self.n_items = 0
        self.item_counts: np.ndarray | None = None

    def fit(self, train_sequences: ItemSequences, n_items: int) -> PopularityRecommender:
        """Count each item's interactions over all training sequences."""
        _validate_n_items(n_items)
        sequences = _as_index_arrays(train_sequences, n_items, "train_sequences")
        all_items = np.concatenate(sequences) if sequences else np.empty(0, dtype=np.int64)
        self.n_items = int(n_items)
        self.item_counts = np.bincount(all_items, minlength=n_items).astype(np.float32)
        return self

    def score(self, sequences: ItemSequences) -> np.ndarray:
        """Return the training interaction count of each item, the same row for every sequence."""
        if self.item_counts is None:
            raise RuntimeError("PopularityRecommender.score called before fit")
        return np.tile(self.item_counts, (len(sequences), 1))


# ---------------------------------------------------------------------------
# Item-kNN
# ---------------------------------------------------------------------------


class ItemKNNRecommender:
    """Item-based kNN over co-occurrence with shrunk cosine similarity.

    Follows the item-based top-N scheme of Deshpande & Karypis, "Item-based top-N
    recommendation algorithms" (ACM TOIS, 2004): keep each item's most similar items and
    score a candidate by summing its similarity to the user's items. With X the binary
    user-item matrix and n_i the number of users of item i::

        sim(i, j) = (X^T X)_ij / (sqrt(n_i) * sqrt(n_j) + shrinkage)

    The shrinkage term pulls similarities supported by few co-occurrences towards 0.
    """

    def __init__(self) -> None:
        self.n_items = 0
        self.similarity: sp.csr_matrix | None = None

    def fit(
        self,
        train_sequences: ItemSequences,
        n_items: int,
        *,
        neighbours: int = 100,
        shrinkage: float = 10.0,
    ) -> ItemKNNRecommender:
        """Compute the item-item similarity matrix, keeping ``neighbours`` entries per item.

        ``similarity[i, j]`` is sim(i, j) for the ``neighbours`` most similar items j of i
        (ties broken by lower j) and 0 elsewhere. The diagonal is 0.
        """
        _validate_n_items(n_items)
        if neighbours < 1:
            raise ValueError(f"neighbours must be at least 1; got {neighbours}")
        if shrinkage < 0:
            raise ValueError(f"shrinkage must be at least 0; got {shrinkage}")
        sequences = _as_index_arrays(train_sequences, n_items, "train_sequences")

        interactions = _interaction_matrix(sequences, n_items)
        item_users = np.asarray(interactions.sum(axis=0)).ravel()
        co_occurrence = (interactions.T @ interactions).tocsr()
        co_occurrence.setdiag(0)
        co_occurrence.eliminate_zeros()
        co_occurrence.sort_indices()

        rows = np.repeat(np.arange(n_items, dtype=np.int64), np.diff(co_occurrence.indptr))
        cols = co_occurrence.indices.astype(np.int64)
        norms = np.sqrt(item_users)
        # sim(i, j) = c_ij / (sqrt(n_i) sqrt(n_j) + shrinkage)
        values = co_occurrence.data / (norms[rows] * norms[cols] + shrinkage)

        # Rank entries within each row by descending similarity, then ascending column,
        # and keep the first `neighbours`.
        order = np.lexsort((cols, -values, rows))
        rows, cols, values = rows[order], cols[order], values[order]
        rank_in_row = np.arange(len(rows)) - co_occurrence.indptr[rows]
        keep = rank_in_row < neighbours

        self.similarity = sp.csr_matrix(
            (values[keep].astype(np.float32), (rows[keep], cols[keep])), shape=(n_items, n_items)
        )
        self.n_items = int(n_items)
        logger.info(
            "Item-kNN fit: %d items, %d similarity entries (neighbours=%d, shrinkage=%s)",
            n_items,
            self.similarity.nnz,
            neighbours,
            shrinkage,
        )
        return self

    def score(self, sequences: ItemSequences) -> np.ndarray:
        """Return score(u, j) = sum over items i in the sequence of similarity[i, j]."""
        if self.similarity is None:
            raise RuntimeError("ItemKNNRecommender.score called before fit")
        history = _interaction_matrix(_as_index_arrays(sequences, self.n_items, "sequences"), self.n_items)
        return np.asarray((history @ self.similarity).toarray(), dtype=np.float32)


# ---------------------------------------------------------------------------
# SASRec
# ---------------------------------------------------------------------------

# Finite stand-in for -inf in attention logits. A left-padded position attends only to
# masked keys, and a finite value gives it a uniform softmax where -inf would give NaN.
_MASKED_LOGIT = -1e9


class _CausalSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = hidden // heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.output = nn.Linear(hidden, hidden)
        self.attention_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, logit_bias: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape

        def split_heads(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.view(batch, length, self.heads, self.head_dim).transpose(1, 2)

        queries = split_heads(self.query(x))
        keys = split_heads(self.key(x))
        values = split_heads(self.value(x))
        # Attention(Q, K, V) = softmax(Q K^T / sqrt(d) + bias) V, bias = -1e9 on future and padded keys
        logits = queries @ keys.transpose(-2, -1) / math.sqrt(self.head_dim) + logit_bias
        weights = self.attention_dropout(torch.softmax(logits, dim=-1))
        attended = (weights @ values).transpose(1, 2).reshape(batch, length, hidden)
        return self.output(attended)


class _SASRecBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(hidden)
        self.attention = _CausalSelfAttention(hidden, heads, dropout)
        self.feed_forward_norm = nn.LayerNorm(hidden)
        self.feed_forward = nn.Sequential(
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, hidden)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, logit_bias: torch.Tensor) -> torch.Tensor:
        # Each sub-layer g is applied as x + Dropout(g(LayerNorm(x))).
        x = x + self.dropout(self.attention(self.attention_norm(x), logit_bias))
        # FFN(S) = ReLU(S W1 + b1) W2 + b2, applied at each position separately
        return x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))


class _SASRecNetwork(nn.Module):
    """Embedding, stacked causal self-attention blocks and a final LayerNorm.

    Item id 0 is padding, so catalogue item index i is id i + 1. Inputs are left-padded
    and position embeddings count back from the newest item, which sits at position
    max_len - 1 whatever the padded length of the batch.
    """

    def __init__(self, n_items: int, max_len: int, hidden: int, blocks: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.max_len = max_len
        self.item_embedding = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, hidden)
        self.embedding_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_SASRecBlock(hidden, heads, dropout) for _ in range(blocks))
        self.final_norm = nn.LayerNorm(hidden)
        nn.init.normal_(self.item_embedding.weight, std=hidden**-0.5)
        nn.init.normal_(self.position_embedding.weight, std=hidden**-0.5)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def forward(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Return the hidden state F_t of every position, shape (batch, length, hidden)."""
        length = item_ids.shape[1]
        positions = torch.arange(self.max_len - length, self.max_len, device=item_ids.device)
        valid = (item_ids != 0).unsqueeze(-1)

        # E_t = M_{s_t} + P_t, and padded positions are zeroed after every block.
        x = self.embedding_dropout(self.item_embedding(item_ids) + self.position_embedding(positions))
        x = x * valid

        # Query t may attend to key j only when j <= t and j is not padding.
        causal = torch.ones(length, length, dtype=torch.bool, device=item_ids.device).tril()
        allowed = causal.unsqueeze(0) & (item_ids != 0).unsqueeze(1)
        logit_bias = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device)
        logit_bias = logit_bias.masked_fill(~allowed, _MASKED_LOGIT).unsqueeze(1)

        for block in self.blocks:
            x = block(x, logit_bias) * valid
        return self.final_norm(x)


def _left_pad(rows: Sequence[np.ndarray], length: int) -> np.ndarray:
    padded = np.zeros((len(rows), length), dtype=np.int64)
    for index, row in enumerate(rows):
        if len(row):
            padded[index, length - len(row) :] = row
    return padded


def _length_bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle sequence indices into batches of similar length.

    The indices are shuffled, cut into chunks of 50 batches, sorted by length inside each
    chunk, cut into batches, and the batch order is shuffled. Padding then costs little
    while the batch composition stays random.
    """
    permutation = rng.permutation(len(lengths))
    chunk_size = batch_size * 50
    batches = []
    for start in range(0, len(permutation), chunk_size):
        chunk = permutation[start : start + chunk_size]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[offset : offset + batch_size] for offset in range(0, len(chunk), batch_size))
    return [batches[index] for index in rng.permutation(len(batches))]


class SASRecRecommender:
    """SASRec: next-item prediction with causal self-attention over item IDs.

    Kang & McAuley, "Self-Attentive Sequential Recommendation" (ICDM 2018,
    arXiv:1808.09781). A user's last ``max_len`` items s_1 .. s_n pass through item plus
    learned position embeddings and ``blocks`` pre-LayerNorm Transformer blocks with a
    causal mask. The output F_t at position t scores item i as r_{i,t} = F_t . M_i, with
    M the input item embedding (shared, as in the paper). Training uses binary
    cross-entropy with one sampled negative j per position::

        loss = -sum_t [ log sigmoid(r_{s_{t+1},t}) + log(1 - sigmoid(r_{j,t})) ]

    averaged over the non-padded positions of each batch. Training runs on CPU.

    NOTE: on a machine whose cores are busy with other processes, torch's default of one
    thread per core can slow training tenfold. Callers that own the process may call
    ``torch.set_num_threads(1)``, which ``fit`` does not do for them.
    """

    def __init__(self) -> None:
        self.n_items = 0
        self.max_len = 0
        self.network: _SASRecNetwork | None = None
        self.epoch_losses: list[float] = []

    def fit(
        self,
        train_sequences: ItemSequences,
        n_items: int,
        epochs: int = 20,
        max_len: int = 50,
        hidden: int = 64,
        blocks: int = 2,
        heads: int = 1,
        dropout: float = 0.2,
        seed: int = 0,
        *,
        batch_size: int = 128,
        learning_rate: float = 1e-3,
        max_seconds: float | None = None,
        on_epoch_end: Callable[[int, float], None] | None = None,
    ) -> SASRecRecommender:
        """Train the network for ``epochs`` passes over the training sequences.

        Each sequence contributes its last max_len + 1 items, predicting item t + 1 from
        items 1..t. Sequences with fewer than 2 items are skipped. Training stops early
        after the first epoch that ends past ``max_seconds`` of wall time.
        ``on_epoch_end(epoch, mean_loss)`` is called after every epoch, counting from 1.
        The global torch RNG state is restored afterwards, and the thread count is left
        as the caller set it. Results with the same seed repeat on the same machine and
        thread count.
        """
        _validate_n_items(n_items)
        if epochs < 1 or max_len < 1 or hidden < 1 or blocks < 1 or heads < 1 or batch_size < 1:
            raise ValueError(
                "epochs, max_len, hidden, blocks, heads and batch_size must be at least 1; got "
                f"{epochs}, {max_len}, {hidden}, {blocks}, {heads}, {batch_size}"
            )
        if hidden % heads:
            raise ValueError(f"hidden must be divisible by heads; got hidden={hidden}, heads={heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}")
        sequences = _as_index_arrays(train_sequences, n_items, "train_sequences")

        # Shift to ids (0 is padding) and keep the last max_len + 1 items.
        windows = [items[-(max_len + 1) :] + 1 for items in sequences if len(items) >= 2]
        if not windows:
            raise ValueError("train_sequences has no sequence with at least 2 items to learn from")
        lengths = np.array([len(window) - 1 for window in windows], dtype=np.int64)

        self.n_items = int(n_items)
        self.max_len = int(max_len)
        self.epoch_losses = []
        started = time.monotonic()
        rng = np.random.default_rng(seed)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            network = _SASRecNetwork(self.n_items, self.max_len, hidden, blocks, heads, dropout)
            optimizer = torch.optim.Adam(network.parameters(), lr=learning_rate, betas=(0.9, 0.98))
            self.network = network

            for epoch in range(1, epochs + 1):
                network.train()
                total_loss = 0.0
                total_positions = 0
                for batch in _length_bucketed_batches(lengths, batch_size, rng):
                    batch_loss, positions = self._train_step(network, optimizer, [windows[i] for i in batch], rng)
                    total_loss += batch_loss * positions
                    total_positions += positions

                mean_loss = total_loss / max(total_positions, 1)
                self.epoch_losses.append(mean_loss)
                elapsed = time.monotonic() - started
                logger.info("SASRec epoch %d/%d: loss %.4f, %.1f s elapsed", epoch, epochs, mean_loss, elapsed)
                if on_epoch_end is not None:
                    on_epoch_end(epoch, mean_loss)
                if max_seconds is not None and elapsed > max_seconds and epoch < epochs:
                    logger.warning(
                        "SASRec training stopped after epoch %d of %d: max_seconds=%s reached",
                        epoch,
                        epochs,
                        max_seconds,
                    )
                    break

        network.eval()
        return self

    def _sample_negatives(
        self, windows: list[np.ndarray], shape: tuple[int, int], rng: np.random.Generator
    ) -> np.ndarray:
        """Draw item ids uniformly, redrawing those in the user's window (up to 10 rounds)."""
        window_items = _left_pad(windows, max(len(window) for window in windows))
        negatives = rng.integers(1, self.n_items + 1, size=shape)
        for _ in range(10):
            collides = (negatives[:, :, None] == window_items[:, None, :]).any(axis=2)
            count = int(collides.sum())
            if count == 0:
                break
            negatives[collides] = rng.integers(1, self.n_items + 1, size=count)
        return negatives

    def _train_step(
        self,
        network: _SASRecNetwork,
        optimizer: torch.optim.Optimizer,
        windows: list[np.ndarray],
        rng: np.random.Generator,
    ) -> tuple[float, int]:
        length = max(len(window) for window in windows) - 1
        inputs = torch.from_numpy(_left_pad([window[:-1] for window in windows], length))
        positives = torch.from_numpy(_left_pad([window[1:] for window in windows], length))
        # NOTE: negatives avoid only the items inside the window, so a user with more than
        # max_len + 1 items can draw an older item of their own as a negative.
        negatives = torch.from_numpy(self._sample_negatives(windows, (len(windows), length), rng))
        negatives = negatives.masked_fill(positives == 0, 0)

        hidden_states = network(inputs)
        positive_logits = (hidden_states * network.item_embedding(positives)).sum(-1)
        negative_logits = (hidden_states * network.item_embedding(negatives)).sum(-1)
        target = positives != 0
        positions = int(target.sum())
        # -log sigmoid(r_pos) - log(1 - sigmoid(r_neg)), averaged over non-padded positions
        loss = (
            F.binary_cross_entropy_with_logits(positive_logits[target], torch.ones(positions))
            + F.binary_cross_entropy_with_logits(negative_logits[target], torch.zeros(positions))
        )

        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return float(loss.detach()), positions

    def score(self, sequences: ItemSequences, *, batch_size: int = 256) -> np.ndarray:
        """Return r_{i,n} = F_n . M_i for every item i after each sequence's last item.

        Only the last ``max_len`` items of a sequence are used. An empty sequence gets the
        scores of a fully padded input, which carry no information about the user.
        """
        if self.network is None:
            raise RuntimeError("SASRecRecommender.score called before fit")
        arrays = _as_index_arrays(sequences, self.n_items, "sequences")
        scores = np.empty((len(arrays), self.n_items), dtype=np.float32)
        # Sorting by length keeps padding small within each batch.
        order = np.argsort([min(len(items), self.max_len) for items in arrays], kind="stable")

        self.network.eval()
        with torch.no_grad():
            item_embeddings = self.network.item_embedding.weight[1:]
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                windows = [arrays[index][-self.max_len :] + 1 for index in batch]
                length = max(1, max(len(window) for window in windows))
                hidden_states = self.network(torch.from_numpy(_left_pad(windows, length)))
                scores[batch] = (hidden_states[:, -1, :] @ item_embeddings.T).numpy()
        return scores
