"""Audit the tenant's privacy mechanisms: empirical lower bounds on epsilon against the charge."""

import logging
import math
import secrets
import sys

import numpy as np
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from privacy.audit import (
    AUDIT_SHAPES,
    AuditResult,
    build_scenario,
    run_audit,
    synthetic_item_embeddings,
    under_noised_copy,
)
from privacy.mechanisms import MECHANISMS, build_mechanism
from privacy.models import USER_VECTOR_DIM
from privacy.sampling import NoiseSampler
from privacy.services import get_privacy_policy
from users.models import Tenant

logger = logging.getLogger(__name__)

# Fewer ready videos than this and the histories are built from synthetic vectors.
MIN_REAL_VIDEOS = 20
# Embeddings read from the tenant; enough to find a strongly changing pair.
MAX_VIDEOS_READ = 2000
SYNTHETIC_ITEMS = 512
CONTROL_FACTOR = 10.0


class Command(BaseCommand):
    help = (
        "Run each privacy mechanism of the tenant's policy many times on two neighbouring "
        "histories, estimate an empirical lower bound on its epsilon, and check it against "
        "the charged epsilon. A copy with 10 times too little noise is audited as a control "
        "and must fail. Exits non-zero if a mechanism fails or a detectable control passes."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="Tenant name whose policy and videos are used.")
        parser.add_argument(
            "--runs", type=int, default=6000,
            help="Runs per history and mechanism (default 6000); 30% choose the events, the rest measure them.",
        )
        parser.add_argument(
            "--mechanism", choices=[*sorted(MECHANISMS), "all"], default="all",
            help="Mechanism to audit at the policy's epsilon (default: all).",
        )
        parser.add_argument(
            "--seed", type=int, default=None,
            help="Seed for a reproducible audit; without it the noise comes from the secure sampler.",
        )
        parser.add_argument(
            "--alpha", type=float, default=0.01,
            help="Probability that a bound is wrong (default 0.01), shared by the events measured.",
        )
        parser.add_argument("--no-control", action="store_true", help="Skip the under-noised controls.")

    def handle(self, *args, tenant, runs, mechanism, seed, alpha, no_control, **options):
        if runs < 20:
            raise CommandError(f"--runs must be at least 20; got {runs}")
        if not 0 < alpha < 1:
            raise CommandError(f"--alpha must be between 0 and 1; got {alpha}")
        tenant_obj = Tenant.objects.filter(name=tenant).first()
        if tenant_obj is None:
            raise CommandError(f"No tenant named {tenant!r}; create it first or check the name.")
        policy = get_privacy_policy(tenant_obj)

        rng = np.random.default_rng(seed if seed is not None else secrets.randbits(64))
        sampler = NoiseSampler.seeded(seed) if seed is not None else NoiseSampler.secure()
        items = self._item_embeddings(tenant_obj, rng)
        names = sorted(MECHANISMS) if mechanism == "all" else [mechanism]

        results: list[AuditResult] = []
        for name in names:
            audited = build_mechanism(
                name,
                policy.epsilon,
                retrieval_fraction=policy.retrieval_fraction,
                history_length=policy.history_length,
            )
            k, n_candidates = AUDIT_SHAPES[name]
            scenario = build_scenario(
                items, history_length=policy.history_length, n_candidates=n_candidates, k=k, rng=rng
            )
            variants = [(audited, name, False)]
            if not no_control:
                variants.append((under_noised_copy(audited, CONTROL_FACTOR), f"{name} (noise / 10, control)", True))
            for variant, label, is_control in variants:
                with tqdm(total=2 * runs, desc=label, unit="run", file=sys.stderr, leave=False) as bar:
                    results.append(
                        run_audit(
                            variant, scenario, runs=runs, sampler=sampler, alpha=alpha,
                            label=label, is_control=is_control, progress=bar.update,
                        )
                    )

        self._print_table(results, policy, runs, alpha)
        self._exit_status(results)

    def _item_embeddings(self, tenant, rng: np.random.Generator) -> np.ndarray:
        from videos.models import SERVABLE_STATUSES, Video

        vectors = list(
            Video.objects.filter(tenant=tenant, status__in=SERVABLE_STATUSES, fused_embedding__isnull=False)
            .order_by("id")
            .values_list("fused_embedding", flat=True)[:MAX_VIDEOS_READ]
        )
        if len(vectors) >= MIN_REAL_VIDEOS:
            self.stdout.write(f"Using the fused embeddings of {len(vectors)} ready videos of tenant {tenant.name}.")
            return np.asarray(vectors, dtype=np.float64)
        self.stderr.write(
            self.style.WARNING(
                f"Tenant {tenant.name} has {len(vectors)} ready videos with a fused embedding, fewer than "
                f"{MIN_REAL_VIDEOS}; auditing with {SYNTHETIC_ITEMS} synthetic unit vectors instead."
            )
        )
        return synthetic_item_embeddings(SYNTHETIC_ITEMS, USER_VECTOR_DIM, rng)

    def _print_table(self, results: list[AuditResult], policy, runs: int, alpha: float) -> None:
        self.stdout.write(
            f"\nPolicy: epsilon {policy.epsilon:g} per response, retrieval fraction "
            f"{policy.retrieval_fraction:g}, history length {policy.history_length}; {runs} runs per "
            f"history; bounds hold with probability {1 - alpha:g}.\n"
        )
        self.stdout.write(
            "| mechanism | charged epsilon | empirical lower bound | largest detectable | event | result |"
        )
        self.stdout.write("|---|---|---|---|---|---|")
        for result in results:
            self.stdout.write(
                f"| {result.label} | {result.charged_epsilon:.4g} | {result.epsilon_lower_bound:.4g} | "
                f"{result.max_detectable_epsilon:.3g} | {result.event} "
                f"(P[E | H] = {result.probability:.4f}, P[E | H'] = {result.neighbour_probability:.4f}) | "
                f"{_verdict(result)} |"
            )

    def _exit_status(self, results: list[AuditResult]) -> None:
        failed = [r.label for r in results if not r.is_control and r.violates]
        undetected = [
            r.label for r in results
            if r.is_control and not r.violates and r.max_detectable_epsilon > r.charged_epsilon
        ]
        inconclusive = [
            r.label for r in results
            if r.is_control and not r.violates and r.max_detectable_epsilon <= r.charged_epsilon
        ]
        if inconclusive:
            self.stderr.write(
                self.style.WARNING(
                    "No audit with this many runs can show an epsilon above the charged one for: "
                    f"{', '.join(inconclusive)}; raise --runs for the control to mean anything."
                )
            )
        if failed:
            logger.warning("Privacy audit failed for %s", ", ".join(failed))
            raise CommandError(
                f"Privacy audit FAILED for {', '.join(failed)}: an empirical lower bound exceeds the "
                "charged epsilon, so the charge is not an upper bound on the privacy loss."
            )
        if undetected:
            raise CommandError(
                f"The under-noised control was not detected for {', '.join(undetected)}, so the passing "
                "results are not evidence; raise --runs."
            )
        self.stdout.write(self.style.SUCCESS("Privacy audit passed."))


def _verdict(result: AuditResult) -> str:
    if not result.is_control:
        return "FAIL" if result.violates else "pass"
    if result.violates:
        return "detected (expected)"
    if result.max_detectable_epsilon <= result.charged_epsilon or math.isinf(result.charged_epsilon):
        return "inconclusive"
    return "NOT DETECTED"
