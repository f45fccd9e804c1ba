"""Profile the serving path in one process: queries per request and where the time goes.

For each mechanism, it sends --requests GET /api/v1/users/{id}/recommendations/?k=10
through Django's test client (middleware, authentication, view, serving, ledger
write; no HTTP server), counts the SQL statements of one request, times every
request, and profiles a second batch with cProfile. The serving benchmark's data
set must exist (run bench/serving.py first).

Usage (from the repository root):
    .venv/bin/python bench/profile_serving.py [--requests 100]
"""

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    BENCH_DB_DIR,
    BENCH_TENANT,
    RESULTS_DIR,
    latency_summary,
    machine_facts,
    now_iso,
    setup_django,
    write_result,
)

MECHANISMS = ("laplace", "importance_weighted", "user_vector")
# Groups of functions whose cumulative time the report shows, by where they live.
STAGES = {
    "ranker (torch)": "recommend/ranker.py:",
    "noise sampler": "privacy/sampling.py:",
    "retrieval SQL and decoding": "recommend/retrieval.py:",
    "ledger write (spend_privacy_budget)": "privacy/services.py:",
    "authentication": "users/authentication.py:",
}


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100, help="requests timed and profiled per mechanism")
    return parser.parse_args(argv)


def stage_times(stats: pstats.Stats, requests: int) -> dict:
    """Return the cumulative milliseconds per request of the first function of each stage."""
    result = {}
    for stage, marker in STAGES.items():
        best = 0.0
        for (filename, line, name), (_, _, _, cumulative, _) in stats.stats.items():
            if marker in f"{filename}:" and cumulative > best:
                best = cumulative
        result[stage] = round(1000 * best / requests, 2)
    return result


def main(argv=None) -> dict:
    arguments = parse_arguments(argv)
    setup_django(BENCH_DB_DIR)

    from django.db import connection, reset_queries
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from bench.serving import set_policy
    from users.models import AppUser, Tenant
    from users.services import create_api_key

    tenant = Tenant.objects.get(name=BENCH_TENANT)
    _, raw_key = create_api_key(tenant, label="serving profile")
    client = Client(HTTP_AUTHORIZATION=f"Api-Key {raw_key}")
    users = list(AppUser.objects.filter(tenant=tenant, external_id__startswith="bench-user-")
                 .order_by("id").values_list("external_id", flat=True))
    results = {"command": "bench/profile_serving.py", "date": now_iso(), "machine": machine_facts(),
               "mechanisms": {}}
    text = io.StringIO()
    for mechanism in MECHANISMS:
        set_policy(tenant, mechanism)
        for user in users[:20]:  # loads the ranker and warms the caches; not counted
            client.get(f"/api/v1/users/{user}/recommendations/?k=10")

        with CaptureQueriesContext(connection) as queries:
            response = client.get(f"/api/v1/users/{users[21]}/recommendations/?k=10")
        assert response.status_code == 200, response.content
        statements = [query["sql"].split()[0].upper() for query in queries.captured_queries]
        reset_queries()

        seconds = []
        for user in users[100:100 + arguments.requests]:
            started = time.perf_counter()
            client.get(f"/api/v1/users/{user}/recommendations/?k=10")
            seconds.append(time.perf_counter() - started)

        profile = cProfile.Profile()
        profile.enable()
        for user in users[300:300 + arguments.requests]:
            client.get(f"/api/v1/users/{user}/recommendations/?k=10")
        profile.disable()
        stats = pstats.Stats(profile)
        results["mechanisms"][mechanism] = {
            "statements_per_request": len(statements),
            "statements": statements,
            "in_process": latency_summary(seconds),
            "stages_ms_per_request": stage_times(stats, arguments.requests),
        }
        text.write(f"==== {mechanism}: {len(statements)} SQL statements per request\n")
        pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(25)
    write_result("profile", results)
    (RESULTS_DIR / "profile.txt").write_text(text.getvalue(), encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
