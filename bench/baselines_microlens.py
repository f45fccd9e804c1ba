"""Evaluate the baseline recommenders on MicroLens-50k with leave-last-out splits.

Protocol: each user's last item is the test item and the one before it the validation
item. Models are fit on the remaining (train) items. The input history is the train
items for validation, and the train items plus the validation item for test. Every item of the
catalogue is ranked (full ranking, no sampled negatives) and the items the model saw
for that user are excluded. Metrics average over users with at least 3 interactions.

Run from the repository root::

    .venv/bin/python bench/baselines_microlens.py --models popularity itemknn sasrec

Runtime is bounded by --sasrec-max-seconds for training plus the scoring passes
(one minute or less per model per split on two CPU cores for 50,000 users).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from recommend.evaluation.baselines import (  # noqa: E402 - needs the repository root on sys.path
    ItemKNNRecommender,
    PopularityRecommender,
    Recommender,
    SASRecRecommender,
    recommend_top_k,
)
from recommend.evaluation.metrics import evaluate_rankings  # noqa: E402
from recommend.evaluation.microlens import read_microlens  # noqa: E402
from recommend.evaluation.splits import LeaveLastOutSplit, leave_last_out_split  # noqa: E402

logger = logging.getLogger("bench.baselines_microlens")

MODELS = ("popularity", "itemknn", "sasrec")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    # A relative RECSYS_DATA_DIR is taken from the repository root, as the tests do.
    default_data = REPO_ROOT / os.environ.get("RECSYS_DATA_DIR", "../shared/data") / "microlens-50k"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir", type=Path, default=default_data, help="directory with the MicroLens-50k pairs and titles files"
    )
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS), help="models to evaluate")
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 20], help="ranking cutoffs k")
    parser.add_argument(
        "--max-users", type=int, default=None, help="evaluate a random subset of this many users (default: all)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for SASRec and the user subset")
    parser.add_argument("--score-batch-size", type=int, default=512, help="users scored per batch")
    parser.add_argument("--skip-validation", action="store_true", help="evaluate the test items only")

    # Defaults chosen by NDCG@10 on the MicroLens-50k validation items, from few settings:
    # item-kNN neighbours 20-1000 with shrinkage 0-200, and SASRec batch 128 at learning
    # rate 2e-3 against batch 256 at 3e-3.
    parser.add_argument("--knn-neighbours", type=int, default=400, help="neighbours kept per item")
    parser.add_argument("--knn-shrinkage", type=float, default=50.0, help="shrinkage term of the cosine denominator")

    parser.add_argument("--sasrec-epochs", type=int, default=90, help="maximum SASRec training epochs")
    parser.add_argument(
        "--sasrec-max-seconds",
        type=float,
        default=500.0,
        help="stop SASRec training after the first epoch that ends past this many seconds",
    )
    parser.add_argument("--sasrec-batch-size", type=int, default=256, help="SASRec sequences per training batch")
    parser.add_argument("--sasrec-learning-rate", type=float, default=3e-3, help="SASRec Adam learning rate")
    parser.add_argument("--sasrec-max-len", type=int, default=50, help="SASRec maximum sequence length")
    parser.add_argument("--sasrec-hidden", type=int, default=64, help="SASRec embedding and hidden size")
    parser.add_argument("--sasrec-blocks", type=int, default=2, help="SASRec self-attention blocks")
    parser.add_argument("--sasrec-heads", type=int, default=1, help="SASRec attention heads")
    parser.add_argument("--sasrec-dropout", type=float, default=0.2, help="SASRec dropout rate")

    # One thread by default: SASRec's small per-step tensors gain little from a second one,
    # and on a busy 2-core VM two OpenMP threads took 74 s per epoch against 6.7 s for one.
    parser.add_argument(
        "--torch-threads", type=int, default=1, help="torch intra-op threads for this run; 0 keeps torch's default"
    )
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON to this file")
    return parser.parse_args(argv)


def fit_model(name: str, split: LeaveLastOutSplit, n_items: int, args: argparse.Namespace) -> Recommender:
    if name == "popularity":
        return PopularityRecommender().fit(split.train, n_items)
    if name == "itemknn":
        return ItemKNNRecommender().fit(
            split.train, n_items, neighbours=args.knn_neighbours, shrinkage=args.knn_shrinkage
        )
    return SASRecRecommender().fit(
        split.train,
        n_items,
        epochs=args.sasrec_epochs,
        max_len=args.sasrec_max_len,
        hidden=args.sasrec_hidden,
        blocks=args.sasrec_blocks,
        heads=args.sasrec_heads,
        dropout=args.sasrec_dropout,
        seed=args.seed,
        batch_size=args.sasrec_batch_size,
        learning_rate=args.sasrec_learning_rate,
        max_seconds=args.sasrec_max_seconds,
    )


def evaluate(
    model: Recommender, histories: list[np.ndarray], targets: np.ndarray, ks: list[int], batch_size: int
) -> dict[str, float]:
    ranked = recommend_top_k(model, histories, max(ks), batch_size=batch_size)
    return evaluate_rankings(ranked, [{int(item)} for item in targets], ks=ks)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.torch_threads > 0:
        # This script owns its process, so setting the thread count here affects no library caller.
        torch.set_num_threads(args.torch_threads)

    data = read_microlens(args.data_dir)
    split = leave_last_out_split(data.sequences)
    users = split.evaluated_users
    if args.max_users is not None and args.max_users < len(users):
        users = np.sort(np.random.default_rng(args.seed).choice(users, size=args.max_users, replace=False))
    validation_histories = [split.validation_history(user) for user in users]
    test_histories = [split.test_history(user) for user in users]
    logger.info("Evaluating %d users over %d items", len(users), data.n_items)

    results: dict[str, dict] = {}
    for name in args.models:
        started = time.monotonic()
        model = fit_model(name, split, data.n_items, args)
        fit_seconds = time.monotonic() - started

        entry: dict = {"fit_seconds": round(fit_seconds, 1)}
        if isinstance(model, SASRecRecommender):
            entry["epochs"] = len(model.epoch_losses)
            entry["final_loss"] = round(model.epoch_losses[-1], 4)
        if not args.skip_validation:
            entry["validation"] = evaluate(
                model, validation_histories, split.validation_items[users], args.ks, args.score_batch_size
            )
        started = time.monotonic()
        entry["test"] = evaluate(model, test_histories, split.test_items[users], args.ks, args.score_batch_size)
        entry["test_seconds"] = round(time.monotonic() - started, 1)
        results[name] = entry
        logger.info("%s done: fit %.1f s, test %s", name, fit_seconds, entry["test"])

    k = min(args.ks)
    print(f"\nMicroLens-50k leave-last-out, full ranking over {data.n_items} items, {len(users)} users (test split)")
    print(f"{'model':<12} {'NDCG@' + str(k):>9} {'recall@' + str(k):>10} {'HR@' + str(k):>8} {'fit s':>8}")
    for name, entry in results.items():
        test = entry["test"]
        print(
            f"{name:<12} {test[f'ndcg@{k}']:>9.4f} {test[f'recall@{k}']:>10.4f} "
            f"{test[f'hit_rate@{k}']:>8.4f} {entry['fit_seconds']:>8.1f}"
        )

    if args.output is not None:
        report = {"args": {key: str(value) for key, value in vars(args).items()}, "results": results}
        args.output.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
