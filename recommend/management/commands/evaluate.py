"""Evaluate a tenant's recommendations, baselines and privacy mechanisms offline."""

import math
import shlex
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from recommend.evaluation.report import write_report
from recommend.evaluation.runner import ALL_MECHANISMS, EvaluationConfig, EvaluationError, run_evaluation

HELP = """\
Evaluate the tenant imported by import_microlens (its titles embedded by the workers) and
write report.md, PNG plots and results.json into --out.

Protocol: leave-last-out split, full ranking over every servable item with the user's
seen items excluded, precision, recall, NDCG and hit rate at 10 and 20. The platform's
fusion and ranker are trained in memory on the train part (the tenant's active models
are not changed) and compared with popularity, item-kNN and SASRec-style baselines on
the same sampled users. Each privacy mechanism runs the serving algorithm at each
charged epsilon. YouTube-8M (imported into --youtube8m-tenant if that tenant has no
videos) adds a modality ablation and users simulated from labels. Latency is measured
through the real serving path when the tenant has active trained models: those calls
charge fresh users' budgets and write ledger rows with request ids starting "eval-".

With the defaults, one run took 13 minutes on a 2-core virtual machine shared with other
jobs, and 42 minutes with --users 5000 --youtube8m-users 2000 under heavier load (see
docs/results.md).
"""


def parse_epsilons(text: str) -> list[float]:
    """Parse "0.5,1,2,5,inf" into floats; inf is the non-private reference."""
    values = []
    for part in text.split(","):
        part = part.strip()
        try:
            value = float(part)
        except ValueError:
            raise CommandError(f"--epsilons must be numbers or inf separated by commas; got {part!r}") from None
        if math.isnan(value):
            raise CommandError("--epsilons must not contain nan")
        values.append(value)
    return values


def _command_line(options) -> str:
    """Return the command as typed, or a reconstruction when called through call_command."""
    if len(sys.argv) > 1 and sys.argv[1] == "evaluate":
        return " ".join(shlex.quote(argument) for argument in ["python", "manage.py", *sys.argv[1:]])
    epsilons = ",".join(f"{value:g}" for value in options["epsilons"])
    return (f"call_command('evaluate', tenant={options['tenant']!r}, epsilons={epsilons!r}, "
            f"out={str(options['out'])!r}, ...)")


class Command(BaseCommand):
    help = HELP

    def create_parser(self, prog_name, subcommand, **kwargs):
        from argparse import RawDescriptionHelpFormatter

        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.formatter_class = RawDescriptionHelpFormatter
        return parser

    def add_arguments(self, parser):
        defaults = EvaluationConfig(tenant="default", epsilons=[1.0])
        parser.add_argument("--tenant", required=True, help="Tenant with the MicroLens-50k interactions.")
        parser.add_argument("--epsilons", required=True, type=parse_epsilons,
                            help="Charged epsilons per response, comma-separated; inf adds the non-private "
                            "reference, e.g. 0.5,1,2,5,inf.")
        parser.add_argument("--out", required=True, type=Path, help="Folder for report.md, the plots and results.json.")

        parser.add_argument("--youtube8m-tenant", default=None,
                            help="Tenant with the YouTube-8M videos (default: <tenant>-yt8m); imported if empty.")
        parser.add_argument("--youtube8m-dir", type=Path, default=None,
                            help="YouTube-8M TFRecord folder to import from (default: RECSYS_DATA_DIR/youtube8m).")
        parser.add_argument("--skip-youtube8m", action="store_true", help="Leave out the YouTube-8M part.")
        parser.add_argument("--skip-latency", action="store_true", help="Leave out the serving latency part.")

        parser.add_argument("--users", type=int, default=defaults.users,
                            help="MicroLens users sampled for the platform and the baselines "
                            f"(default {defaults.users}).")
        parser.add_argument("--youtube8m-users", type=int, default=defaults.youtube8m_users,
                            help=f"Simulated YouTube-8M users evaluated (default {defaults.youtube8m_users}).")
        parser.add_argument("--youtube8m-train-users", type=int, default=defaults.youtube8m_train_users,
                            help="Simulated YouTube-8M users the models learn from "
                            f"(default {defaults.youtube8m_train_users}).")
        parser.add_argument("--repetitions", type=int, default=defaults.repetitions,
                            help=f"Noise repetitions per mechanism and epsilon (default {defaults.repetitions}).")
        parser.add_argument("--seed", type=int, default=defaults.seed, help=f"Random seed (default {defaults.seed}).")
        parser.add_argument("--mechanisms", default=",".join(ALL_MECHANISMS),
                            help=f"Comma-separated mechanisms (default {','.join(ALL_MECHANISMS)}).")

        parser.add_argument("--history-length", type=int, default=defaults.history_length,
                            help=f"L, interactions in the user vector (default {defaults.history_length}).")
        parser.add_argument("--candidates", type=int, default=defaults.n_candidates,
                            help=f"C, candidates retrieved per response (default {defaults.n_candidates}).")
        parser.add_argument("--retrieval-fraction", type=float, default=defaults.retrieval_fraction,
                            help="Share of epsilon spent on the user vector by the mechanisms that also noise "
                            f"scores (default {defaults.retrieval_fraction}).")

        parser.add_argument("--fusion-epochs", type=int, default=defaults.fusion_epochs,
                            help=f"Fusion training epochs (default {defaults.fusion_epochs}, as the train command).")
        parser.add_argument("--ranker-epochs", type=int, default=defaults.ranker_epochs,
                            help=f"Ranker training epochs (default {defaults.ranker_epochs}, as the train command).")
        parser.add_argument("--sasrec-epochs", type=int, default=defaults.sasrec_epochs,
                            help=f"Maximum SASRec epochs (default {defaults.sasrec_epochs}).")
        parser.add_argument("--sasrec-max-seconds", type=float, default=defaults.sasrec_max_seconds,
                            help="Stop SASRec after the first epoch that ends past this many seconds "
                            f"(default {defaults.sasrec_max_seconds:g}).")
        parser.add_argument("--no-baselines-all-users", action="store_true",
                            help="Rank the baselines for the sampled users only, not also for every user.")

        parser.add_argument("--latency-users", type=int, default=defaults.latency_users,
                            help=f"Serving calls per mechanism and epsilon (default {defaults.latency_users}).")
        parser.add_argument("--torch-threads", type=int, default=defaults.torch_threads,
                            help=f"Torch threads (default {defaults.torch_threads}).")

    def handle(self, *args, **options):
        mechanisms = tuple(name.strip() for name in options["mechanisms"].split(",") if name.strip())
        try:
            config = EvaluationConfig(
                tenant=options["tenant"], epsilons=options["epsilons"],
                youtube8m_tenant=options["youtube8m_tenant"], youtube8m_dir=options["youtube8m_dir"],
                skip_youtube8m=options["skip_youtube8m"], skip_latency=options["skip_latency"],
                users=options["users"], youtube8m_users=options["youtube8m_users"],
                youtube8m_train_users=options["youtube8m_train_users"], repetitions=options["repetitions"],
                seed=options["seed"], mechanisms=mechanisms, history_length=options["history_length"],
                n_candidates=options["candidates"], retrieval_fraction=options["retrieval_fraction"],
                fusion_epochs=options["fusion_epochs"], ranker_epochs=options["ranker_epochs"],
                sasrec_epochs=options["sasrec_epochs"], sasrec_max_seconds=options["sasrec_max_seconds"],
                baselines_all_users=not options["no_baselines_all_users"], latency_users=options["latency_users"],
                torch_threads=options["torch_threads"], progress=options["verbosity"] > 0,
                command=_command_line(options),
            )
            results = run_evaluation(config)
        except EvaluationError as error:
            raise CommandError(str(error)) from None

        paths = write_report(results, options["out"])
        self.stdout.write(f"Wrote {paths['report']} and {paths['results']} in {results['wall_seconds']:.0f} s.")
        platform = results["microlens"]["non_private"]["platform_ranker"]["ndcg@10"]
        self.stdout.write(f"MicroLens NDCG@10, non-private platform: {platform:.4f}")
