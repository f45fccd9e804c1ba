"""Simulated users for YouTube-8M, which has videos and labels but no users.

Simulation (``simulate_label_users``), for one user:

1. eligible labels are those carried by at least ``min_label_videos`` and at most
   ``max_label_videos`` videos of the catalogue: specific interests, neither a
   near-universal label such as "Game" nor one too rare to hold out videos of;
2. the user draws 2 distinct eligible labels with probability
   ``two_label_probability``, else 1, uniformly among the eligible labels;
3. for each interest label, ``history_per_label`` distinct videos carrying it are drawn
   uniformly (never a video already drawn), and the history is their random order;
4. the relevant videos are every other video carrying one of the user's labels.

A video carries about 3 labels, so a history also carries labels the user has no
interest in, and relevance is decided by the labels alone, never by the features.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelUserSimulation:
    """Parameters of the label-based user simulation; see the module docstring."""

    min_label_videos: int = 30
    max_label_videos: int = 300
    history_per_label: int = 10
    two_label_probability: float = 0.5

    def __post_init__(self):
        if self.history_per_label < 1:
            raise ValueError(f"history_per_label must be at least 1; got {self.history_per_label}")
        if self.min_label_videos <= self.history_per_label:
            raise ValueError(
                "min_label_videos must exceed history_per_label, so every interest leaves relevant videos "
                f"to hold out; got {self.min_label_videos} and {self.history_per_label}"
            )
        if self.max_label_videos < self.min_label_videos:
            raise ValueError(
                f"max_label_videos must be at least min_label_videos; got {self.max_label_videos} "
                f"and {self.min_label_videos}"
            )
        if not 0.0 <= self.two_label_probability <= 1.0:
            raise ValueError(f"two_label_probability must be in [0, 1]; got {self.two_label_probability}")

    def describe(self) -> str:
        """Return the simulation as one paragraph for reports."""
        return (
            f"Eligible interest labels are those carried by {self.min_label_videos} to "
            f"{self.max_label_videos} videos of the catalogue. Each simulated user draws 2 distinct "
            f"eligible labels with probability {self.two_label_probability:g}, else 1, uniformly. "
            f"For each label, {self.history_per_label} distinct videos carrying it are drawn uniformly "
            "and the history is their random order (every interaction a view). The relevant videos are "
            "all other videos carrying one of the user's labels. Relevance comes from the labels only."
        )


@dataclass
class SimulatedUsers:
    """Histories (catalogue rows in interaction order), relevant rows and labels per user."""

    histories: list[np.ndarray]
    relevant: list[set[int]]
    interest_labels: list[list[int]]
    eligible_labels: list[int]


def label_index(item_labels: Sequence[Sequence[int]]) -> dict[int, np.ndarray]:
    """Return label -> sorted catalogue rows that carry it."""
    rows_by_label: dict[int, list[int]] = defaultdict(list)
    for row, labels in enumerate(item_labels):
        for label in set(labels):
            rows_by_label[int(label)].append(row)
    return {label: np.array(rows, dtype=np.int64) for label, rows in rows_by_label.items()}


def simulate_label_users(
    item_labels: Sequence[Sequence[int]], count: int, simulation: LabelUserSimulation, rng: np.random.Generator
) -> SimulatedUsers:
    """Simulate ``count`` users from the catalogue rows' labels (``item_labels[row]``).

    Raises ValueError when no label qualifies as an interest.
    """
    rows_by_label = label_index(item_labels)
    eligible = sorted(
        label for label, rows in rows_by_label.items()
        if simulation.min_label_videos <= len(rows) <= simulation.max_label_videos
    )
    if not eligible:
        raise ValueError(
            f"no label is carried by {simulation.min_label_videos} to {simulation.max_label_videos} videos; "
            "import more videos or widen the label range"
        )

    histories, relevant, interests = [], [], []
    for _ in range(count):
        label_count = 2 if len(eligible) > 1 and rng.random() < simulation.two_label_probability else 1
        labels = [int(label) for label in rng.choice(eligible, size=label_count, replace=False)]
        chosen: list[int] = []
        for label in labels:
            available = np.setdiff1d(rows_by_label[label], chosen, assume_unique=True)
            picked = rng.choice(available, size=min(simulation.history_per_label, len(available)), replace=False)
            chosen.extend(int(row) for row in picked)
        history = np.array(chosen, dtype=np.int64)
        rng.shuffle(history)
        pool = set(np.concatenate([rows_by_label[label] for label in labels]).tolist())
        histories.append(history)
        relevant.append(pool - set(chosen))
        interests.append(labels)
    return SimulatedUsers(histories=histories, relevant=relevant, interest_labels=interests, eligible_labels=eligible)
