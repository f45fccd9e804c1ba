"""Offline evaluation of recommenders: data loading, splits, metrics and baselines.

The baselines live in ``recommend.evaluation.baselines`` and are not imported here,
because importing them loads torch.
"""

from recommend.evaluation.metrics import evaluate_rankings, hit_rate_at_k, ndcg_at_k, precision_at_k, recall_at_k
from recommend.evaluation.microlens import MicroLensData, MicroLensFormatError, read_microlens
from recommend.evaluation.splits import LeaveLastOutSplit, leave_last_out_split

__all__ = [
    "LeaveLastOutSplit",
    "MicroLensData",
    "MicroLensFormatError",
    "evaluate_rankings",
    "hit_rate_at_k",
    "leave_last_out_split",
    "ndcg_at_k",
    "precision_at_k",
    "read_microlens",
    "recall_at_k",
]
