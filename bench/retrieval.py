"""Retrieval benchmark: recall@100 of the filtered HNSW search against exact search.

The filtered search is the product's: tenant, servable status, optionally not seen by
the user, ordered by cosine distance on the fused embedding (recommend.retrieval).
For each hnsw.ef_search and hnsw.iterative_scan setting it runs that SQL and compares
the rows with the exact scan over the same filters (``retrieve_candidates(...,
exact=True)``, the reference), reporting mean recall@100, how many queries got
fewer than 100 rows, and the latency. It also runs ``retrieve_candidates`` as serving
calls it (ef_search = max(ef, 100), relaxed_order, exact fallback when the index
yields too few rows).

Cases:

- 100,000 videos, one tenant (the serving benchmark's data set, built if missing);
- the same table, users who have seen the 1,000 nearest videos of their query and
  exclude_seen on (the filter removes most of what the index finds first);
- with --million: 1,000,000 videos in a separate database folder, split between a
  tenant of 900,000 and a selective tenant of 100,000 (10% of the table).

Queries are users' vectors u (the mean of their history, as the mechanisms compute
it) and the privatised vectors ũ that serving actually searches with (Laplace noise
at epsilon 1, history length 50), both normalised.

Usage (from the repository root):
    .venv/bin/python bench/retrieval.py [--million] [--queries 100]
"""

import argparse
import json
import shlex
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    BENCH_DB_DIR,
    BENCH_MILLION_DB_DIR,
    BENCH_TENANT,
    CACHE_DIR,
    REPO_ROOT,
    LoadAverageSampler,
    latency_summary,
    machine_facts,
    migrate,
    now_iso,
    setup_django,
    write_result,
)

K = 100
HEAVY_VIEWER_SEEN = 1000


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--million", action="store_true",
                        help="run the 1,000,000-video case (builds var/bench-pgdata-1m once; about 20 minutes)")
    parser.add_argument("--million-only", action="store_true", help="run only the 1,000,000-video case")
    parser.add_argument("--queries", type=int, default=100, help="queries per query kind (default 100)")
    parser.add_argument("--ef", default="40,100,200,400", help="hnsw.ef_search values, comma-separated")
    parser.add_argument("--modes", default="off,relaxed_order,strict_order", help="hnsw.iterative_scan values")
    parser.add_argument("--heavy-viewers", type=int, default=20, help="users of the seen-many case")
    parser.add_argument("--index-variant", metavar="PARAMETERS",
                        help="also measure the 100,000-video case with the index rebuilt WITH (PARAMETERS), "
                        "e.g. 'm = 16, ef_construction = 200'; the product's index is rebuilt afterwards")
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("RECSYS_DATA_DIR", REPO_ROOT.parent / "shared" / "data")),
                        help="shared data folder holding youtube8m/")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------
# Queries
# ---------------------------------------------------------------------------


def query_vectors(histories: list[np.ndarray], weights: list[np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Return normalised user vectors u and privatised vectors ũ (laplace plan, epsilon 1, L = 50)."""
    from privacy.mechanisms import build_mechanism, compute_user_vector
    from privacy.sampling import NoiseSampler

    mechanism = build_mechanism("laplace", 1.0, history_length=50)
    plan = mechanism.plan(k=10, n_candidates=K)
    # A seeded sampler makes the queries repeatable; serving uses NoiseSampler.secure().
    sampler = NoiseSampler.seeded(seed)
    clean, noisy = [], []
    for embeddings, weight in zip(histories, weights):
        clean.append(compute_user_vector(embeddings[-50:], weight[-50:], 50))
        noisy.append(mechanism.privatise_user_vector(embeddings[-50:], weight[-50:], plan, sampler))
    result = {}
    for name, vectors in (("user_vector", clean), ("privatised_vector", noisy)):
        matrix = np.array(vectors, np.float64)
        result[name] = (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)
    return result


# ---------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------


def hnsw_search(cursor, tenant_id: int, query: np.ndarray, ef: int, mode: str, exclude_seen_by=None) -> list[int]:
    """Run the product's filtered HNSW query with exactly these settings; return the video ids."""
    from recommend.retrieval import _FILTERS, _NOT_SEEN, _SERVABLE, vector_literal

    filters = _FILTERS + (_NOT_SEEN if exclude_seen_by is not None else "")
    cursor.execute("BEGIN")
    cursor.execute("SELECT set_config('hnsw.ef_search', %s, true), set_config('hnsw.iterative_scan', %s, true)",
                   [str(ef), mode])
    cursor.execute(
        f"SELECT v.id FROM videos_video v WHERE {filters} ORDER BY v.fused_embedding <=> %(query)s::vector "
        "LIMIT %(limit)s",
        {"tenant": tenant_id, "statuses": _SERVABLE, "user": exclude_seen_by, "query": vector_literal(query),
         "limit": K},
    )
    ids = [row[0] for row in cursor.fetchall()]
    cursor.execute("COMMIT")
    return ids


def exact_ids(tenant_id: int, queries: np.ndarray, exclude: list | None = None) -> tuple[list[set], list[float]]:
    from recommend.retrieval import retrieve_candidates

    truth, seconds = [], []
    for index, query in enumerate(queries):
        started = time.perf_counter()
        candidates = retrieve_candidates(tenant_id, query, K, exact=True,
                                         exclude_seen_by=exclude[index] if exclude else None)
        seconds.append(time.perf_counter() - started)
        truth.append(set(candidates.video_ids.tolist()))
    return truth, seconds


def sweep(tenant_id: int, queries: np.ndarray, truth: list[set], efs, modes, exclude: list | None = None) -> list:
    """Measure recall@100, short results and latency for every (ef_search, iterative_scan) pair."""
    import psycopg
    from django.conf import settings

    database = settings.DATABASES["default"]
    rows = []
    with psycopg.connect(host=database["HOST"], dbname=database["NAME"], user=database["USER"],
                         autocommit=True) as connection, connection.cursor() as cursor:
        for query in queries[:10]:  # warm the index pages; not timed
            hnsw_search(cursor, tenant_id, query, 100, "relaxed_order")
        for ef in efs:
            for mode in modes:
                recalls, seconds, short = [], [], 0
                for index, query in enumerate(queries):
                    started = time.perf_counter()
                    ids = hnsw_search(cursor, tenant_id, query, ef, mode, exclude[index] if exclude else None)
                    seconds.append(time.perf_counter() - started)
                    expected = truth[index]
                    recalls.append(len(expected.intersection(ids)) / len(expected) if expected else 1.0)
                    short += len(ids) < min(K, len(expected))
                rows.append({"ef_search": ef, "iterative_scan": mode, "recall_at_100": round(float(np.mean(recalls)), 4),
                             "min_recall": round(float(np.min(recalls)), 4), "queries_short": short,
                             **latency_summary(seconds)})
    return rows


def serving_path(tenant_id: int, queries: np.ndarray, truth: list[set], exclude: list | None = None) -> dict:
    """Measure retrieve_candidates as serving calls it: recall, exact fallbacks and latency."""
    from django.conf import settings

    from recommend.retrieval import retrieve_candidates

    recalls, seconds, fallbacks, short = [], [], 0, 0
    for index, query in enumerate(queries):
        started = time.perf_counter()
        candidates = retrieve_candidates(tenant_id, query, K, ef_search=settings.RECOMMEND_HNSW_EF_SEARCH,
                                         exclude_seen_by=exclude[index] if exclude else None)
        seconds.append(time.perf_counter() - started)
        ids = set(candidates.video_ids.tolist())
        expected = truth[index]
        recalls.append(len(expected & ids) / len(expected) if expected else 1.0)
        fallbacks += candidates.used_exact_fallback
        short += len(ids) < min(K, len(expected))
    return {"recall_at_100": round(float(np.mean(recalls)), 4), "min_recall": round(float(np.min(recalls)), 4),
            "exact_fallbacks": fallbacks, "queries_short": short, **latency_summary(seconds)}


def run_case(name: str, tenant_id: int, queries: dict, efs, modes, exclude=None) -> dict:
    print(f"{name}: exact reference ...", flush=True)
    case = {"name": name, "tenant_id": tenant_id, "query_kinds": {}}
    for kind, vectors in queries.items():
        truth, exact_seconds = exact_ids(tenant_id, vectors, exclude)
        case["query_kinds"][kind] = {
            "queries": len(vectors),
            "exact": latency_summary(exact_seconds),
            "sweep": sweep(tenant_id, vectors, truth, efs, modes, exclude),
            "serving_path": serving_path(tenant_id, vectors, truth, exclude),
        }
        print(f"{name} / {kind}: {json.dumps(case['query_kinds'][kind]['serving_path'])}", flush=True)
    return case


# ---------------------------------------------------------------------------
# 100,000 videos (the serving data set)
# ---------------------------------------------------------------------------


def hundred_thousand(arguments, efs, modes) -> dict:
    from bench import serving
    from recommend.retrieval import user_history
    from users.models import EVENT_WEIGHTS, AppUser, Tenant

    facts = serving.prepare_dataset(serving.parse_arguments([]))
    tenant = Tenant.objects.get(name=BENCH_TENANT)
    users = list(AppUser.objects.filter(tenant=tenant, external_id__startswith="bench-user-")
                 .order_by("id")[: arguments.queries])
    histories, weights = [], []
    for user in users:
        embeddings, events, _ = user_history(user.pk, 50)
        histories.append(embeddings)
        weights.append(np.array([EVENT_WEIGHTS.get(e, 1.0) for e in events]))
    queries = query_vectors(histories, weights, seed=11)
    result = {"dataset": facts, "cases": [run_case("100k videos, one tenant", tenant.pk, queries, efs, modes)]}

    heavy_queries, heavy_users = heavy_viewers(tenant, queries["privatised_vector"][: arguments.heavy_viewers])
    result["cases"].append(run_case(
        f"100k videos, user has seen the {HEAVY_VIEWER_SEEN} nearest videos (exclude_seen)", tenant.pk,
        {"privatised_vector": heavy_queries}, efs, modes, exclude=heavy_users))
    result["index"] = index_facts()
    if arguments.index_variant:
        result["index_variant"] = index_variant(arguments.index_variant, tenant.pk, queries, efs)
    return result


def index_variant(parameters: str, tenant_id: int, queries: dict, efs) -> dict:
    """Rebuild the HNSW index WITH (parameters), sweep it, then rebuild the product's index."""
    from django.db import connection

    from bench import dataset

    definition = f"USING hnsw (fused_embedding vector_cosine_ops) WITH ({parameters})"
    try:
        with connection.cursor() as cursor:
            build_s = dataset.build_hnsw_index(cursor, definition=definition)
        facts = {"parameters": parameters, "hnsw_build_s": round(build_s, 1), **index_facts()}
        case = run_case(f"100k videos, one tenant, index WITH ({parameters})", tenant_id, queries, efs,
                        ["relaxed_order"])
    finally:
        with connection.cursor() as cursor:
            dataset.build_hnsw_index(cursor)
    return {"index": facts, "case": case}


def heavy_viewers(tenant, queries: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Create (once) one user per query who has interacted with its 1,000 nearest videos."""
    from django.db import connection
    from django.utils import timezone

    from recommend.retrieval import retrieve_candidates
    from users.models import AppUser, Interaction

    user_ids = []
    for index, query in enumerate(queries):
        user, created = AppUser.objects.get_or_create(tenant=tenant, external_id=f"bench-heavy-viewer-{index:03d}")
        if created or not Interaction.objects.filter(user=user).exists():
            nearest = retrieve_candidates(tenant.pk, query, HEAVY_VIEWER_SEEN, exact=True).video_ids
            now = timezone.now()
            Interaction.objects.bulk_create([
                Interaction(tenant=tenant, user=user, video_id=int(video_id), event_type="view", occurred_at=now)
                for video_id in nearest
            ])
        user_ids.append(user.pk)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE users_interaction")
    return queries, user_ids


def index_facts() -> dict:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_relation_size('video_fused_hnsw_cosine'), pg_relation_size('videos_video'), "
                       "(SELECT count(*) FROM videos_video)")
        index_bytes, table_bytes, rows = cursor.fetchone()
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        pgvector = cursor.fetchone()[0]
        cursor.execute("SHOW server_version")
        server = cursor.fetchone()[0]
    return {"index_mib": round(index_bytes / 2**20, 1), "table_mib": round(table_bytes / 2**20, 1), "rows": rows,
            "pgvector": pgvector, "postgresql": server}


# ---------------------------------------------------------------------------
# 1,000,000 videos (separate database folder)
# ---------------------------------------------------------------------------

MILLION = 1_000_000
SELECTIVE_SHARE = 0.10


def million(arguments, efs, modes) -> dict:
    from django.db import connection

    from bench import dataset
    from users.models import Tenant
    from users.services import create_tenant

    spec_path = CACHE_DIR / "retrieval-million.json"
    catalogue = dataset.build_catalogue(MILLION, arguments.data_dir)
    permutation = np.random.default_rng(5).permutation(MILLION)
    selective_rows = np.sort(permutation[: int(SELECTIVE_SHARE * MILLION)])
    bulk_rows = np.sort(permutation[int(SELECTIVE_SHARE * MILLION):])

    facts = json.loads(spec_path.read_text()) if spec_path.exists() else None
    bulk = Tenant.objects.filter(name="bench-bulk").first()
    if facts is None or bulk is None:
        with connection.cursor() as cursor:
            dataset.truncate_product_tables(cursor)
            cursor.execute(f"DROP INDEX IF EXISTS {dataset.HNSW_INDEX}")
        selective = create_tenant("bench-selective")
        bulk = create_tenant("bench-bulk")
        started = time.perf_counter()
        with connection.cursor() as cursor:
            dataset.copy_videos(cursor, selective.pk, catalogue, selective_rows, first_id=1, external_prefix="y8m-")
            dataset.copy_videos(cursor, bulk.pk, catalogue, bulk_rows, first_id=len(selective_rows) + 1,
                                external_prefix="y8m-")
            dataset.reset_sequence(cursor, "videos_video")
            copy_s = time.perf_counter() - started
            # Bounded: PostgreSQL cancels a build that needs more than 40 minutes, and the run fails.
            cursor.execute("SET statement_timeout = '40min'")
            hnsw_s = dataset.build_hnsw_index(cursor, maintenance_work_mem="2GB", parallel_workers=1)
            cursor.execute("SET statement_timeout = 0")
        facts = {"videos": MILLION, "selective_tenant_videos": len(selective_rows), "copy_s": round(copy_s, 1),
                 "hnsw_build_s": round(hnsw_s, 1), "maintenance_work_mem": "2GB",
                 "max_parallel_maintenance_workers": 1, "built_at": now_iso()}
        spec_path.write_text(json.dumps(facts, indent=2))
    selective = Tenant.objects.get(name="bench-selective")

    histories = dataset.simulate_histories(catalogue, selective_rows, arguments.queries, seed=21)
    embeddings = [catalogue.fused[h] for h in histories]
    weights = [np.ones(len(h)) for h in histories]
    queries = query_vectors(embeddings, weights, seed=12)
    cases = [
        run_case("1M videos, tenant of 900k (90% of the table)", bulk.pk, queries, efs, modes),
        run_case("1M videos, selective tenant of 100k (10% of the table)", selective.pk, queries, efs, modes),
    ]
    return {"dataset": facts, "cases": cases, "index": index_facts()}


def main(argv=None) -> dict:
    arguments = parse_arguments(argv)
    efs = [int(value) for value in arguments.ef.split(",")]
    modes = arguments.modes.split(",")
    results = {"command": shlex.join(["bench/retrieval.py", *(argv if argv is not None else sys.argv[1:])]),
               "date": now_iso(), "machine": machine_facts(), "k": K}
    with LoadAverageSampler() as load:
        if not arguments.million_only:
            migrate(BENCH_DB_DIR)
            setup_django(BENCH_DB_DIR)
            results["hundred_thousand"] = hundred_thousand(arguments, efs, modes)
            write_result("retrieval", results)
        if arguments.million or arguments.million_only:
            if arguments.million_only:
                migrate(BENCH_MILLION_DB_DIR)
                setup_django(BENCH_MILLION_DB_DIR)
                results["million"] = million(arguments, efs, modes)
            else:
                # Settings are read once per process, so the second database runs in a child.
                import subprocess

                subprocess.run([sys.executable, __file__, "--million-only", "--queries", str(arguments.queries),
                                "--ef", arguments.ef, "--modes", arguments.modes], check=True, cwd=REPO_ROOT)
    results["load_average"] = load.summary()
    if arguments.million_only:
        write_result("retrieval-million", results)
    else:
        write_result("retrieval", results)
    return results


if __name__ == "__main__":
    main()
