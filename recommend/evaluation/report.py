"""Write an evaluation's results as ``results.json``, ``report.md`` and PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: plots are only written to files
from matplotlib import pyplot as plt  # noqa: E402 - the backend must be chosen first

MECHANISM_LABELS = {
    "laplace": "per-score Laplace (paper, uniform)",
    "importance_weighted": "importance-weighted Laplace (paper)",
    "user_vector": "private user vector",
}
MECHANISM_COLOURS = {"laplace": "tab:red", "importance_weighted": "tab:orange", "user_vector": "tab:blue"}
MODEL_LABELS = {
    "platform_ranker": "Platform: retrieval + Transformer ranker",
    "platform_user_vector": "Platform: retrieval by user vector only",
    "popularity": "Popularity",
    "itemknn": "Item-kNN",
    "sasrec": "SASRec-style (item IDs)",
    "random": "Random order (expected value)",
}
# Colour and line style of the reference models drawn across the privacy plots.
REFERENCE_STYLES = {"sasrec": ("grey", ":"), "popularity": ("grey", "-."), "random": ("black", "-")}
METRIC_COLUMNS = ["precision@10", "recall@10", "ndcg@10", "hit_rate@10", "precision@20", "recall@20", "ndcg@20",
                  "hit_rate@20"]
PLOT_FILES = {
    "microlens_privacy": "microlens_privacy.png",
    "youtube8m_privacy": "youtube8m_privacy.png",
    "modality_ablation": "modality_ablation.png",
}


def write_report(results: dict, out_dir: Path) -> dict[str, Path]:
    """Write results.json, the plots and report.md into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"results": out_dir / "results.json", "report": out_dir / "report.md"}
    paths["results"].write_text(json.dumps(results, indent=2, default=_json_default) + "\n", encoding="utf-8")
    paths.update(write_plots(results, out_dir))
    paths["report"].write_text(render_markdown(results), encoding="utf-8")
    return paths


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in results.json")


# ---------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------


def _finite_rows(rows: list[dict], mechanism: str) -> list[dict]:
    return sorted((r for r in rows if r["mechanism"] == mechanism and not r["non_private"]),
                  key=lambda r: r["epsilon"])


def _non_private_row(rows: list[dict], mechanism: str) -> dict | None:
    return next((r for r in rows if r["mechanism"] == mechanism and r["non_private"]), None)


def _plot_privacy(rows: list[dict], metrics: list[str], title: str, path: Path,
                  references: dict[str, dict] | None = None) -> None:
    figure, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.2), squeeze=False)
    mechanisms = list(dict.fromkeys(r["mechanism"] for r in rows))
    for axis, metric in zip(axes[0], metrics):
        plotted = []
        for mechanism in mechanisms:
            points = _finite_rows(rows, mechanism)
            colour = MECHANISM_COLOURS.get(mechanism)
            plotted += [r["metrics"][metric]["mean"] for r in points]
            if points:
                axis.errorbar(
                    [r["epsilon"] for r in points], [r["metrics"][metric]["mean"] for r in points],
                    yerr=[r["metrics"][metric]["std"] for r in points], marker="o", capsize=3, color=colour,
                    label=MECHANISM_LABELS.get(mechanism, mechanism),
                )
            reference = _non_private_row(rows, mechanism)
            if reference is not None:
                plotted.append(reference["metrics"][metric]["mean"])
                axis.axhline(reference["metrics"][metric]["mean"], color=colour, linestyle="--", linewidth=1,
                             label=f"{mechanism}: epsilon = inf (non-private)")
        for name, metric_values in (references or {}).items():
            if metric in metric_values:
                colour, style = REFERENCE_STYLES.get(name, ("grey", ":"))
                axis.axhline(metric_values[metric], color=colour, linestyle=style, linewidth=1,
                             label=MODEL_LABELS.get(name, name))
        epsilons = sorted({r["epsilon"] for r in rows if not r["non_private"]})
        axis.set_xscale("log")
        axis.set_xticks(epsilons)
        axis.set_xticklabels([f"{epsilon:g}" for epsilon in epsilons])
        axis.minorticks_off()
        # Private, non-private and random values span several orders of magnitude.
        axis.set_yscale("log", nonpositive="clip")
        # An error bar reaching zero would stretch the axis to the smallest float; the
        # axis stops just below the smallest positive value instead.
        positive = [value for value in plotted if value > 0]
        if positive:
            axis.set_ylim(bottom=min(positive) / 3)
        axis.set_xlabel("charged epsilon per response (log scale)")
        axis.set_ylabel(f"{metric} (log scale)")
        axis.grid(True, alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.14, 1, 0.95))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_ablation(results: dict, path: Path) -> None:
    groups = []
    for dataset, label in (("youtube8m", "YouTube-8M"), ("microlens", "MicroLens-50k")):
        part = results.get(dataset) or {}
        if "ablation" in part:
            groups.append((label, part["ablation"]))
    metrics = ["precision@10", "recall@10", "ndcg@10"]
    figure, axes = plt.subplots(1, len(groups), figsize=(6.5 * len(groups), 4.5), squeeze=False)
    for axis, (label, rows) in zip(axes[0], groups):
        width = 0.8 / len(metrics)
        for index, metric in enumerate(metrics):
            positions = [i + (index - (len(metrics) - 1) / 2) * width for i in range(len(rows))]
            axis.bar(positions, [r["metrics"][metric] for r in rows], width=width, label=metric)
        axis.set_xticks(range(len(rows)))
        axis.set_xticklabels([_wrap(r["variant"]) for r in rows], fontsize=7)
        axis.set_title(f"{label}: retrieval by the exact user vector")
        axis.legend(fontsize=8)
        axis.grid(True, axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _wrap(text: str, width: int = 18) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join(lines + [line])


def write_plots(results: dict, out_dir: Path) -> dict[str, Path]:
    """Write the privacy curves and the modality ablation as PNG files; return their paths."""
    paths = {}
    microlens = results["microlens"]
    if any(not r["non_private"] for r in microlens["privacy"]):
        path = out_dir / PLOT_FILES["microlens_privacy"]
        baselines = {name: microlens["non_private"][name] for name in ("sasrec", "popularity", "random")
                     if name in microlens["non_private"]}
        _plot_privacy(microlens["privacy"], ["precision@10", "recall@10", "ndcg@10"],
                      "MicroLens-50k: metrics at 10 against charged epsilon (mean and std over repetitions)",
                      path, baselines)
        paths["microlens_privacy"] = path
    youtube8m = results.get("youtube8m") or {}
    if any(not r["non_private"] for r in youtube8m.get("privacy", [])):
        path = out_dir / PLOT_FILES["youtube8m_privacy"]
        references = {"random": youtube8m["non_private"]["random"]} if "random" in youtube8m["non_private"] else None
        _plot_privacy(youtube8m["privacy"], ["precision@10", "recall@10", "ndcg@10"],
                      "YouTube-8M, label-simulated users: metrics at 10 against charged epsilon", path, references)
        paths["youtube8m_privacy"] = path
    path = out_dir / PLOT_FILES["modality_ablation"]
    _plot_ablation(results, path)
    paths["modality_ablation"] = path
    return paths


# ---------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------


def _number(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def _epsilon(value) -> str:
    if value == "inf" or (isinstance(value, float) and math.isinf(value)):
        return "inf (non-private)"
    return f"{value:g}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _metric_table(models: dict[str, dict], labels: dict[str, str] = MODEL_LABELS) -> str:
    rows = [[labels.get(name, name)] + [_number(metrics.get(column)) for column in METRIC_COLUMNS]
            for name, metrics in models.items()]
    return _table(["model"] + METRIC_COLUMNS, rows)


def _mean_std(summary: dict) -> str:
    if len(summary.get("values", [])) <= 1:
        return _number(summary["mean"])
    return f"{summary['mean']:.4f} ± {summary['std']:.4f}"


def _privacy_table(rows: list[dict]) -> str:
    header = ["mechanism", "charged ε", "ε on ũ", "ε on scores", "paper's nominal ε per score", "precision@10",
              "recall@10", "NDCG@10", "NDCG@20", "NDCG@10 / same scorer at ε = inf"]
    body = []
    ordered = sorted(rows, key=lambda r: (r["mechanism"], math.inf if r["non_private"] else r["epsilon"]))
    for row in ordered:
        metrics = row["metrics"]
        reference = row.get("non_private_ndcg@10")
        ratio = f"{100 * metrics['ndcg@10']['mean'] / reference:.0f}%" if reference else None
        body.append([
            row["mechanism"], _epsilon(row["epsilon"]),
            _number(row.get("epsilon_user_vector"), 3), _number(row.get("epsilon_scores"), 3),
            _number(row.get("nominal_epsilon_per_score"), 5),
            _mean_std(metrics["precision@10"]), _mean_std(metrics["recall@10"]), _mean_std(metrics["ndcg@10"]),
            _mean_std(metrics["ndcg@20"]), ratio or "–",
        ])
    return _table(header, body)


def _uniform_against_importance(rows: list[dict]) -> str:
    laplace = {r["epsilon"]: r for r in _finite_rows(rows, "laplace")}
    weighted = {r["epsilon"]: r for r in _finite_rows(rows, "importance_weighted")}
    common = sorted(set(laplace) & set(weighted))
    if not common:
        return "Not run: pass both laplace and importance_weighted in --mechanisms."
    body = []
    for epsilon in common:
        uniform_ndcg = laplace[epsilon]["metrics"]["ndcg@10"]
        weighted_ndcg = weighted[epsilon]["metrics"]["ndcg@10"]
        difference = weighted_ndcg["mean"] - uniform_ndcg["mean"]
        spread = math.hypot(uniform_ndcg["std"], weighted_ndcg["std"])
        verdict = "tie (within one std)" if abs(difference) <= spread else (
            "importance-weighted better" if difference > 0 else "uniform better")
        body.append([
            f"{epsilon:g}", _number(laplace[epsilon]["nominal_epsilon_per_score"], 5),
            _number(laplace[epsilon]["score_scale"], 1),
            _number(weighted[epsilon].get("score_scale"), 1) + " / w_j",
            _mean_std(uniform_ndcg), _mean_std(weighted_ndcg), f"{difference:+.4f}", verdict,
        ])
    return _table(["charged ε", "paper's nominal ε per score (uniform)", "uniform noise scale b",
                   "importance-weighted scale b_j", "uniform NDCG@10", "importance-weighted NDCG@10",
                   "difference", "verdict"], body)


def _target_lines(rows: list[dict], reference_ndcg: float) -> list[str]:
    lines = []
    for mechanism in dict.fromkeys(r["mechanism"] for r in rows):
        reached = [r["epsilon"] for r in _finite_rows(rows, mechanism)
                   if r["metrics"]["ndcg@10"]["mean"] >= 0.9 * reference_ndcg]
        if reached:
            lines.append(f"- `{mechanism}` keeps 90% of the non-private NDCG@10 ({reference_ndcg:.4f}) from "
                         f"charged epsilon {min(reached):g} on (of the epsilons evaluated).")
        else:
            lines.append(f"- `{mechanism}` keeps 90% of the non-private NDCG@10 ({reference_ndcg:.4f}) at none "
                         "of the evaluated epsilons.")
    return lines


def _verdict_against_sasrec(non_private: dict, candidates_key: str | None, modalities: list[str]) -> str:
    platform = non_private.get("platform_ranker", {}).get("ndcg@10")
    sasrec = non_private.get("sasrec", {}).get("ndcg@10")
    popularity = non_private.get("popularity", {}).get("ndcg@10")
    if platform is None or sasrec is None:
        return ""
    content = ("the text embedding of its title, the only modality here" if modalities == ["text"]
               else f"its {', '.join(modalities)} embeddings")
    parts = []
    if platform > sasrec:
        parts.append(f"The platform's non-private NDCG@10 ({platform:.4f}) is above the SASRec-style baseline's "
                     f"({sasrec:.4f}).")
    else:
        parts.append(
            f"**The platform's non-private NDCG@10 ({platform:.4f}) does not beat the SASRec-style baseline "
            f"({sasrec:.4f}).** Reasons visible in these results: the platform sees each item only through its "
            f"content ({content}), while SASRec learns an ID embedding per item from who watched it, which "
            "captures co-consumption that content does not describe; and the ranker can only reorder the "
            "candidates that the content-based user vector retrieved"
        )
        if candidates_key:
            hit = non_private["platform_ranker"][candidates_key]
            parts[-1] += (f" (the test item is among them for {100 * hit:.1f}% of users, which bounds every metric "
                          "of the ranker).")
        else:
            parts[-1] += "."
    if popularity is not None:
        relation = "above" if platform > popularity else "not above"
        parts.append(f"Against popularity ({popularity:.4f}) the platform is {relation}.")
    return " ".join(parts)


def render_markdown(results: dict) -> str:
    """Return report.md: how the run was made, then every table, with the plots linked."""
    config = results["config"]
    machine = results["machine"]
    microlens = results["microlens"]
    lines = [
        f"# Evaluation of tenant `{config['tenant']}`",
        "",
        f"Run started {results['started_at']}; wall time {results['wall_seconds']:.0f} s "
        f"({results['wall_seconds'] / 60:.1f} min).",
        "",
        "## How this was run",
        "",
        f"- Command: `{results['command']}`",
        f"- MicroLens-50k: tenant `{microlens['tenant']}` (imported with `import_microlens`, titles embedded by the "
        f"workers); {microlens['data']['catalogue_items']} servable items, {microlens['data']['users']} users, "
        f"{microlens['data']['interactions']} interactions ({microlens['data']['dropped_interactions']} dropped "
        "because their video is not servable).",
    ]
    youtube8m = results.get("youtube8m") or {}
    if "skipped" in youtube8m:
        lines.append(f"- YouTube-8M: skipped ({youtube8m['skipped']}).")
    else:
        lines.append(f"- YouTube-8M: tenant `{youtube8m['tenant']}` (video-level features imported with "
                     f"`import_youtube8m` from `{config.get('youtube8m_dir') or 'RECSYS_DATA_DIR/youtube8m'}`), "
                     f"{youtube8m['data']['catalogue_items']} videos.")
    lines += [
        f"- Seed {config['seed']}. Users: a fixed sample of {microlens['data']['sample_users']} of the "
        f"{microlens['data']['evaluated_users']} MicroLens users with 3 or more interactions, drawn with "
        f"numpy's `default_rng({config['seed']})`; the platform's runs and the baselines use the same sample.",
        f"- Privacy runs: {config['repetitions']} repetitions per (mechanism, epsilon), each with "
        "`NoiseSampler.seeded` per response; tables show the mean ± sample standard deviation over repetitions.",
        f"- Serving parameters: history length L = {config['history_length']}, candidates C = "
        f"{config['n_candidates']}, share of epsilon on the user vector rho = {config['retrieval_fraction']}, "
        "released list k = 20 (metrics at 10 read its first 10 items).",
        f"- Training (in memory, on the train part only; the tenant's models are not touched): fusion "
        f"{config['fusion_epochs']} epoch(s), ranker {config['ranker_epochs']} epoch(s). SASRec: at most "
        f"{config['sasrec_epochs']} epochs or {config['sasrec_max_seconds']:g} s (ran "
        f"{microlens.get('sasrec_epochs')} epochs). Item-kNN: {config['knn_neighbours']} neighbours, shrinkage "
        f"{config['knn_shrinkage']:g}.",
        f"- Machine: {machine['cpu_model']}, {machine['cores']} cores, {machine['memory_gib']} GiB memory, "
        f"torch {machine['torch']} with {config['torch_threads']} thread(s); load average at start "
        f"{machine['load_average_1_5_15_min_at_start']}, at the end {machine.get('load_average_1_5_15_min_at_end')} "
        "(the machine is shared, so times vary between runs).",
        "",
        "Time per step (seconds):",
        "",
        _table(["step", "seconds"], [[name, f"{seconds:.1f}"] for name, seconds in results["timings"].items()]),
        "",
        "## MicroLens-50k: platform and baselines, non-private",
        "",
        "Leave-last-out: each user's last item is the test item and the one before it the validation item; "
        "models learn from the rest. Every servable item is ranked (full ranking, no sampled negatives) and the "
        "user's train and validation items are excluded. Relevant: the test item only.",
        "",
        _metric_table(microlens["non_private"]),
        "",
    ]
    candidates_key = next((key for key in microlens["non_private"].get("platform_ranker", {})
                           if key.startswith("candidate_")), None)
    if candidates_key:
        hit = microlens["non_private"]["platform_ranker"][candidates_key]
        lines += [f"The test item is among the platform's {config['n_candidates']} retrieved candidates for "
                  f"{100 * hit:.1f}% of the sampled users (`{candidates_key}`).", ""]
    lines += [_verdict_against_sasrec(microlens["non_private"], candidates_key, microlens["data"]["modalities"]), ""]
    if microlens.get("baselines_all_users"):
        lines += [
            f"Baselines on all {microlens['data']['evaluated_users']} evaluated users (a check of the sample):",
            "",
            _metric_table(microlens["baselines_all_users"]),
            "",
        ]

    reference = max((microlens["non_private"][name]["ndcg@10"] for name in ("platform_ranker", "platform_user_vector")
                     if name in microlens["non_private"]), default=None)
    lines += [
        "## MicroLens-50k: privacy at equal charged epsilon",
        "",
        "Each mechanism is built with `build_mechanism(name, epsilon)` for the same epsilon, which is the "
        "epsilon charged to the ledger for one response, a proven bound under the unit of privacy (one "
        "interaction of one user). The response releases the top 20 list; the metrics at 10 use its first "
        "10 items, so they cost nothing more. For `laplace`, the column \"paper's nominal ε per score\" is "
        "sensitivity / noise scale, the epsilon that the paper's per-score calibration would state for the same "
        "noise; releasing the top 20 of C scores costs more than that, and the ledger charges the true cost. "
        "The last column divides by the NDCG@10 that the same scorer reaches without noise (the rows with "
        "epsilon = inf): the retrieval + ranker pipeline for `laplace` and `importance_weighted`, retrieval "
        "by the user vector for `user_vector`.",
        "",
        _privacy_table(microlens["privacy"]),
        "",
    ]
    if any(not r["non_private"] for r in microlens["privacy"]):
        lines += [f"![MicroLens privacy curves]({PLOT_FILES['microlens_privacy']})", ""]
    lines += [
        "### The paper's uniform noise against its importance-weighted noise",
        "",
        "Both noise the ranker's scores of the same candidates after spending rho * epsilon on the same "
        "privatised user vector (the runs share their random numbers, so they release the same ũ). Uniform "
        "noise is Lap(b) on every score with b = min(k (2 Δ + γ), C Δ) / ε_s; importance-weighted noise is "
        "Lap(Δ / (ε_s w_j)) with w_j = |<ũ, v_j>| / Σ_l |<ũ, v_l>|.",
        "",
        _uniform_against_importance(microlens["privacy"]),
        "",
    ]
    if reference:
        lines += ["### Against the target of 90% of the non-private NDCG@10", ""]
        lines += [
            f"Reference: the better of the platform's two non-private scorers, NDCG@10 = {reference:.4f}.",
            "",
            *_target_lines(microlens["privacy"], reference),
        ]
        lines.append("")

    lines += ["## Modality ablation", ""]
    if "ablation" in youtube8m:
        lines += [
            "Retrieval by the exact (non-private) user vector, so the ranking depends on the item embeddings "
            "alone. YouTube-8M, simulated users (see below):",
            "",
            _ablation_table(youtube8m["ablation"]),
            "",
        ]
    lines += [
        f"MicroLens-50k has titles only (modalities present: {', '.join(microlens['data']['modalities'])}): no "
        "visual or audio embedding exists for its items, so its ablation can only compare the default fusion "
        "(a fixed random projection of the text embedding) with the learned one:",
        "",
        _ablation_table(microlens["ablation"]),
        "",
        f"![Modality ablation]({PLOT_FILES['modality_ablation']})",
        "",
    ]

    if "skipped" not in youtube8m:
        lines += _youtube8m_section(youtube8m)
    lines += _latency_section(results.get("latency") or {})
    lines += [
        "## Protocol notes",
        "",
        "- Each private response follows `recommend.serving.recommend_for_user`: the user vector of the last L "
        "interactions (event weights of serving), `privatise_user_vector`, the C candidates with the largest "
        "<ũ, v>, then the ranker's scores and `select_top_k` with importance |<ũ, v_j>| (`laplace`, "
        "`importance_weighted`), or the order by <ũ, v_j> (`user_vector`, as serving does). Differences from "
        "serving: retrieval is an exact numpy search instead of the HNSW index, candidates exclude the user's "
        "seen items (serving does so only when the policy's `exclude_seen` is on, which reads the raw history "
        "outside the mechanism), and samplers are seeded instead of drawing from `secrets`.",
        "- Non-private rows (epsilon = inf) use the exact user vector: `laplace` and `importance_weighted` tend to "
        "the retrieval + ranker pipeline, `user_vector` to retrieval by the user vector alone.",
        "- Users are a seeded sample, so every model is compared on the same users; the baselines on all users "
        "show how far the sample is from the whole population.",
        "",
    ]
    return "\n".join(lines)


def _ablation_table(rows: list[dict]) -> str:
    return _table(
        ["variant", "modalities", "precision@10", "recall@10", "NDCG@10", "hit_rate@10", "NDCG@20"],
        [[r["variant"], ", ".join(r["modalities"]), _number(r["metrics"]["precision@10"]),
          _number(r["metrics"]["recall@10"]), _number(r["metrics"]["ndcg@10"]), _number(r["metrics"]["hit_rate@10"]),
          _number(r["metrics"]["ndcg@20"])] for r in rows],
    )


def _youtube8m_section(youtube8m: dict) -> list[str]:
    data = youtube8m["data"]
    return [
        "## YouTube-8M with users simulated from labels",
        "",
        "YouTube-8M has no users. " + youtube8m["simulation"]["description"],
        "",
        f"{data['train_users']} simulated users train the fusion (visual and audio) and the ranker; "
        f"{data['test_users']} other simulated users are evaluated ({data['eligible_labels']} eligible labels, "
        f"history length {data['mean_history_length']:.1f} on average, {data['mean_relevant_items']:.0f} relevant "
        f"videos on average, at least {data['min_relevant_items']}). Precision@k is the share of the top k that "
        "carries one of the user's labels; recall@k divides the hits by all relevant videos, so it is at most "
        "k / (number of relevant videos).",
        "",
        _metric_table(youtube8m["non_private"]),
        "",
        _privacy_table(youtube8m["privacy"]),
        "",
        f"![YouTube-8M privacy curves]({PLOT_FILES['youtube8m_privacy']})",
        "",
    ]


def _latency_section(latency: dict) -> list[str]:
    lines = ["## Serving latency per privacy level", ""]
    if "skipped" in latency:
        return lines + [f"Not measured: {latency['skipped']}.", ""]
    body = [[row["mechanism"], f"{row['epsilon']:g}", str(row["calls"]), str(row["personalised"]),
             f"{row['p50_ms']:.1f}", f"{row['p95_ms']:.1f}", f"{row['p99_ms']:.1f}", f"{row['max_ms']:.1f}"]
            for row in latency["rows"]]
    return lines + [
        f"`recommend_for_user(tenant, user, k={latency['k']})` against the database, {latency['users_per_cell']} "
        "users per row that had spent nothing in the current budget window (so no privatised vector was reused), "
        f"after {latency['warmup_calls']} warm-up calls. Each call includes the history read, the mechanism, HNSW "
        "retrieval, the active ranker and the ledger write, and left a ledger row with a request id starting "
        f"`{latency['request_id_prefix']}`. The tenant's policy was set per row and restored to "
        f"{latency['policy_restored']} afterwards (C = {latency['n_candidates']}, L = {latency['history_length']}, "
        f"exclude_seen = {latency['exclude_seen']}). With {latency['users_per_cell']} calls per row, p99 is close "
        "to the maximum.",
        "",
        _table(["mechanism", "charged ε", "calls", "personalised", "p50 ms", "p95 ms", "p99 ms", "max ms"], body),
        "",
    ]
