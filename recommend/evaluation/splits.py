"""Split per-user interaction sequences for leave-last-out evaluation."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["LeaveLastOutSplit", "leave_last_out_split"]

logger = logging.getLogger(__name__)

# A user needs one training item, one validation item and one test item.
MIN_INTERACTIONS = 3


@dataclass(frozen=True)
class LeaveLastOutSplit:
    """Per-user train sequences and held-out validation and test items.

    All lists are indexed by user index. ``validation_items[u]`` and ``test_items[u]``
    are -1 for users in ``short_users``, who have fewer than 3 interactions and keep
    their whole sequence in ``train``.
    """

    train: list[np.ndarray]
    validation_items: np.ndarray
    test_items: np.ndarray
    short_users: np.ndarray

    @property
    def evaluated_users(self) -> np.ndarray:
        """Indices of the users that have validation and test items."""
        return np.flatnonzero(self.test_items >= 0)

    def validation_history(self, user: int) -> np.ndarray:
        """Return the items a model may see when predicting user's validation item."""
        return self.train[user]

    def test_history(self, user: int) -> np.ndarray:
        """Return the items a model may see when predicting user's test item: train plus validation."""
        if self.validation_items[user] < 0:
            return self.train[user]
        return np.append(self.train[user], self.validation_items[user])


def leave_last_out_split(sequences: Sequence[Sequence[int] | np.ndarray]) -> LeaveLastOutSplit:
    """Hold out each user's last item for test and the one before it for validation.

    ``sequences[u]`` lists user u's item indices oldest first. Every earlier item goes to
    train. Users with fewer than 3 interactions keep all of them in train, get -1 as
    validation and test items, and are listed in ``short_users`` (and counted in a log
    message), so that callers can skip them when evaluating.
    """
    train: list[np.ndarray] = []
    validation_items = np.full(len(sequences), -1, dtype=np.int64)
    test_items = np.full(len(sequences), -1, dtype=np.int64)
    short_users: list[int] = []

    for user, sequence in enumerate(sequences):
        items = np.asarray(sequence, dtype=np.int64)
        if items.ndim != 1:
            raise ValueError(f"sequence of user {user} must be one-dimensional; got shape {items.shape}")
        if len(items) < MIN_INTERACTIONS:
            train.append(items.copy())
            short_users.append(user)
            continue
        train.append(items[:-2].copy())
        validation_items[user] = items[-2]
        test_items[user] = items[-1]

    if short_users:
        logger.info(
            "Leave-last-out split: %d of %d users have fewer than %d interactions and stay in train only",
            len(short_users),
            len(sequences),
            MIN_INTERACTIONS,
        )
    return LeaveLastOutSplit(
        train=train,
        validation_items=validation_items,
        test_items=test_items,
        short_users=np.array(short_users, dtype=np.int64),
    )
