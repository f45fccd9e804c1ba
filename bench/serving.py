"""Serving benchmark: latency and throughput of GET /api/v1/users/{id}/recommendations/?k=10.

The first run builds a tenant of 100,000 videos from the real YouTube-8M vectors
(bench/dataset.py describes the enlargement), and later runs reuse it. The tenant
has 2,000 simulated users with 20 to 50 interactions each, a ranker trained on
those histories and activated, and a privacy policy whose budget covers the whole
run. Then, for each mechanism
(laplace, importance_weighted, user_vector), it runs the web app under gunicorn on
127.0.0.1 and measures, with bench/loadgen.py:

- one client sending requests back to back (latency without queueing);
- a closed-loop run with --concurrency clients (the throughput the server sustains);
- open-loop runs at --rate requests per second (the target) and at half the
  sustained throughput (latency when busy but not saturated).

In the same run it times the bare pgvector HNSW query (k=10, the same hnsw.ef_search,
the same Unix socket, the users' privatised vectors) as the floor, and reports
p99(serving) / p99(bare). Every response goes through authentication, the policy,
retrieval, ranking, noise and the ledger write.

Usage (from the repository root):
    .venv/bin/python bench/serving.py [--rebuild] [--server-configs sync:2:1,sync:3:1,gthread:2:4]
"""

import argparse
import json
import shlex
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import loadgen  # noqa: E402
from bench.common import (  # noqa: E402
    BENCH_DB_DIR,
    BENCH_TENANT,
    CACHE_DIR,
    REPO_ROOT,
    RESULTS_DIR,
    LoadAverageSampler,
    bench_environment,
    child_pids,
    descendants,
    latency_summary,
    machine_facts,
    migrate,
    now_iso,
    postgres_pids,
    process_cpu_seconds,
    process_memory_kib,
    setup_django,
    write_result,
)

MECHANISMS = ("laplace", "importance_weighted", "user_vector")
HOST = "127.0.0.1"
DATASET_SPEC_VERSION = 1


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=100_000, help="videos of the tenant (default 100000)")
    parser.add_argument("--users", type=int, default=2_000, help="simulated users (default 2000)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the tenant even if it matches")
    parser.add_argument("--db-dir", type=Path, default=BENCH_DB_DIR, help="embedded PostgreSQL data folder")
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("RECSYS_DATA_DIR", REPO_ROOT.parent / "shared" / "data")),
                        help="shared data folder holding youtube8m/")
    parser.add_argument("--mechanisms", default=",".join(MECHANISMS), help="comma-separated mechanisms")
    parser.add_argument(
        "--server-configs", default="sync:2:1,sync:3:1,gthread:2:4",
        help="gunicorn configurations to compare, CLASS:WORKERS:THREADS, comma-separated; the one with the "
        "highest closed-loop throughput is used for every mechanism",
    )
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop rate in requests per second")
    parser.add_argument("--concurrency", type=int, default=8, help="clients of the closed-loop run")
    parser.add_argument("--sequential-requests", type=int, default=600, help="requests of the one-client run")
    parser.add_argument("--load-requests", type=int, default=3000, help="requests of each loaded run")
    parser.add_argument("--run-seconds", type=float, default=30.0, help="time limit of each run in seconds")
    parser.add_argument("--bare-queries", type=int, default=2000, help="bare HNSW queries timed")
    parser.add_argument("--profile", action="store_true", help="also write a cProfile of the serving path")
    parser.add_argument(
        "--ef-variants", default="400",
        help="also run the laplace mechanism with RECOMMEND_HNSW_EF_SEARCH set to each of these values, "
        "comma-separated (default 400, where retrieval reaches 0.99 recall); empty to skip",
    )
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------
# Data set
# ---------------------------------------------------------------------------


def _spec(arguments) -> dict:
    from bench.dataset import NOISE

    return {"version": DATASET_SPEC_VERSION, "videos": arguments.videos, "users": arguments.users,
            "noise": NOISE, "seed": 0}


def prepare_dataset(arguments) -> dict:
    """Build the benchmark tenant unless the database already contains the same one; return its facts."""
    from django.db import connection

    from users.models import AppUser, Tenant
    from videos.models import Video

    spec_path = CACHE_DIR / f"serving-dataset-{arguments.db_dir.name}.json"
    if spec_path.exists() and not arguments.rebuild:
        stored = json.loads(spec_path.read_text())
        tenant = Tenant.objects.filter(name=BENCH_TENANT).first()
        if (stored["spec"] == _spec(arguments) and tenant is not None
                and Video.objects.filter(tenant=tenant).count() == arguments.videos
                and AppUser.objects.filter(tenant=tenant, external_id__startswith="bench-user-").count()
                == arguments.users):
            stored["reused"] = True
            return stored

    from bench import dataset
    from users.services import create_tenant

    started = time.perf_counter()
    catalogue = dataset.build_catalogue(arguments.videos, arguments.data_dir)
    catalogue_s = time.perf_counter() - started
    rows = np.arange(arguments.videos)
    histories = dataset.simulate_histories(catalogue, rows, arguments.users)
    with connection.cursor() as cursor:
        dataset.truncate_product_tables(cursor)
    tenant = create_tenant(BENCH_TENANT)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX IF EXISTS {dataset.HNSW_INDEX}")
        started = time.perf_counter()
        dataset.copy_videos(cursor, tenant.pk, catalogue, rows, first_id=1, external_prefix="y8m-",
                            popularity=dataset.interaction_counts(histories, rows))
        dataset.reset_sequence(cursor, "videos_video")
        counts = dataset.copy_users_and_interactions(cursor, tenant.pk, histories, row_to_id=lambda row: row + 1)
        copy_s = time.perf_counter() - started
        hnsw_s = dataset.build_hnsw_index(cursor)
    ranker = train_and_activate_ranker(tenant.pk, catalogue.fused[rows], histories)
    facts = {
        "spec": _spec(arguments), "tenant_id": tenant.pk, "catalogue_s": round(catalogue_s, 1),
        "copy_s": round(copy_s, 1), "hnsw_build_s": round(hnsw_s, 1), **counts, "ranker": ranker,
        "built_at": now_iso(), "reused": False,
    }
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(json.dumps(facts, indent=2))
    return facts


def train_and_activate_ranker(tenant_id: int, fused: np.ndarray, histories: list[np.ndarray]) -> dict:
    """Train the SequenceRanker for one epoch on the simulated histories, store it and activate it.

    The fusion stays the default one: ``train_tenant_models`` would also retrain it and
    rewrite all fused embeddings, which the benchmark does not need.
    """
    import torch

    from recommend import artifacts
    from recommend.models import ModelKind, ModelVersion
    from recommend.training import TrainingConfig, activate_version, train_ranker

    config = TrainingConfig(ranker_epochs=1)
    previous = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    started = time.perf_counter()
    try:
        ranker, metrics = train_ranker(fused, histories, config, progress=False)
    finally:
        torch.set_num_threads(previous)
    metrics["training_seconds"] = round(time.perf_counter() - started, 1)
    version = ModelVersion.objects.create(
        tenant_id=tenant_id, kind=ModelKind.RANKER,
        version=ModelVersion.objects.filter(tenant_id=tenant_id, kind=ModelKind.RANKER).count() + 1,
        artifact=artifacts.serialize_state({"config": ranker.config(), "weights": ranker.state_dict()}),
        config=vars(config), metrics=metrics,
    )
    activate_version(version)
    return {"label": version.label, **metrics}


def set_policy(tenant, mechanism: str) -> dict:
    """Give the tenant a policy with ``mechanism``, epsilon 1 and a budget no run can exhaust."""
    from privacy.models import PrivacyPolicy
    from privacy.services import create_privacy_policy, update_privacy_policy

    values = {"mechanism": mechanism, "epsilon": 1.0, "budget": 1_000_000.0, "n_candidates": 100, "max_k": 50,
              "history_length": 50, "exclude_seen": False}
    policy = PrivacyPolicy.objects.filter(tenant=tenant).first()
    if policy is None:
        policy = create_privacy_policy(tenant, values=values)
    else:
        policy = update_privacy_policy(policy, changes=values)
    return {name: getattr(policy, name) for name in values}


# ---------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_server(config: str, db_dir: Path, **environment: str) -> tuple[subprocess.Popen, int]:
    """Start gunicorn with ``CLASS:WORKERS:THREADS`` on a free loopback port and wait for /health/live."""
    worker_class, workers, threads = config.split(":")
    port = _free_port()
    command = [
        str(Path(sys.executable).parent / "gunicorn"), "recsys_platform.wsgi:application",
        f"--bind={HOST}:{port}", f"--workers={workers}", f"--worker-class={worker_class}",
        f"--threads={threads}", "--timeout=60", "--log-level=warning",
    ]
    # The server logs at the production default (INFO, one JSON line per response) into
    # a file, so that logging is part of what is measured.
    environment = bench_environment(db_dir, LOG_LEVEL="INFO", **environment)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with open(RESULTS_DIR / f"gunicorn-{config.replace(':', '-')}.log", "ab") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=environment, stdout=log, stderr=log,
                                   start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with code {process.returncode}; see its log in {RESULTS_DIR}")
        try:
            connection = loadgen.http.client.HTTPConnection(HOST, port, timeout=2)
            connection.request("GET", "/health/live")
            if connection.getresponse().status == 200:
                return process, port
        except OSError:
            pass
        time.sleep(0.3)
    stop_server(process)
    raise RuntimeError(f"gunicorn did not respond to /health/live within 90 s; see its log in {RESULTS_DIR}")


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def worker_memory(process: subprocess.Popen) -> list[dict]:
    return [{"pid": pid, **process_memory_kib(pid)} for pid in child_pids(process.pid)]


# ---------------------------------------------------------------------------
# Bare HNSW floor
# ---------------------------------------------------------------------------


def privatised_query_vectors(tenant, user_ids: list[str], count: int) -> list[str]:
    """Return the users' privatised unit vectors (laplace plan, epsilon 1) as pgvector literals."""
    from privacy.mechanisms import build_mechanism
    from privacy.sampling import NoiseSampler
    from recommend.retrieval import user_history, vector_literal
    from users.models import EVENT_WEIGHTS, AppUser

    mechanism = build_mechanism("laplace", 1.0, history_length=50)
    plan = mechanism.plan(k=10, n_candidates=100)
    sampler = NoiseSampler.secure()
    users = {u.external_id: u.pk for u in AppUser.objects.filter(tenant=tenant, external_id__in=set(user_ids))}
    vectors = []
    for external_id in user_ids[:count]:
        embeddings, events, _ = user_history(users[external_id], 50)
        weights = np.array([EVENT_WEIGHTS.get(e, 1.0) for e in events])
        vector = mechanism.privatise_user_vector(embeddings, weights, plan, sampler)
        vectors.append(vector_literal((vector / np.linalg.norm(vector)).astype(np.float32)))
    return vectors


def time_bare_hnsw(vectors: list[str], ef_search: int, queries: int) -> list[float]:
    """Time ``SELECT id ... ORDER BY fused_embedding <=> q LIMIT 10`` on a new connection, one at a time."""
    import psycopg
    from django.conf import settings

    database = settings.DATABASES["default"]
    latencies = []
    with psycopg.connect(host=database["HOST"], dbname=database["NAME"], user=database["USER"],
                         autocommit=True) as connection:
        connection.execute("SELECT set_config('hnsw.ef_search', %s, false)", [str(ef_search)])
        sql = "SELECT id FROM videos_video ORDER BY fused_embedding <=> %s::vector LIMIT 10"
        for vector in vectors[:50]:
            connection.execute(sql, [vector]).fetchall()  # warm-up, not timed
        for number in range(queries):
            started = time.perf_counter()
            connection.execute(sql, [vectors[number % len(vectors)]]).fetchall()
            latencies.append(time.perf_counter() - started)
    return latencies


# ---------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------


def _paths(user_ids: list[str], seed: int):
    order = np.random.default_rng(seed).integers(0, len(user_ids), size=100_000)

    def path(number: int) -> str:
        return f"/api/v1/users/{user_ids[order[number % len(order)]]}/recommendations/?k=10"

    return path


def _summarise(result: loadgen.LoadResult) -> dict:
    return {
        **latency_summary(result.latencies), "throughput_rps": round(result.throughput, 1),
        "elapsed_s": round(result.elapsed_s, 2), "sent": result.sent, "statuses": dict(result.statuses),
        "errors": dict(result.errors), "personalised": result.personalised,
        "zero_epsilon_responses": result.zero_epsilon,
    }


def measure_mechanism(arguments, config: str, headers: dict, user_ids: list[str], seed: int,
                      **environment: str) -> dict:
    """Start a server, warm it up, and run the one-client, open-loop and closed-loop runs."""
    process, port = start_server(config, arguments.db_dir, **environment)
    try:
        workers = int(config.split(":")[1]) * int(config.split(":")[2])
        loadgen.run_closed(HOST, port, _paths(user_ids, seed + 1), headers, concurrency=workers,
                           max_requests=40 * workers, max_seconds=60)
        runs = {}
        with LoadAverageSampler() as load:
            runs["sequential"] = _summarise(loadgen.run_closed(
                HOST, port, _paths(user_ids, seed + 2), headers, concurrency=1,
                max_requests=arguments.sequential_requests, max_seconds=arguments.run_seconds))
            groups = {"web": descendants(process.pid), "postgresql": postgres_pids(arguments.db_dir),
                      "load_generator": [os.getpid()]}
            cpu_before = {name: process_cpu_seconds(pids) for name, pids in groups.items()}
            closed = loadgen.run_closed(
                HOST, port, _paths(user_ids, seed + 3), headers, concurrency=arguments.concurrency,
                max_requests=arguments.load_requests, max_seconds=arguments.run_seconds)
            runs["closed_loop"] = _summarise(closed)
            runs["closed_loop"]["concurrency"] = arguments.concurrency
            # CPU per response of each process group during the closed-loop run: from it
            # follows what the server alone would sustain on the two cores it shares here
            # with the load generator.
            runs["closed_loop"]["cpu_ms_per_response"] = {
                name: round(1000 * (process_cpu_seconds(pids) - cpu_before[name]) / max(len(closed.latencies), 1), 3)
                for name, pids in groups.items()
            }
            runs["open_loop_target"] = _summarise(loadgen.run_open(
                HOST, port, _paths(user_ids, seed + 4), headers, rate=arguments.rate,
                max_requests=arguments.load_requests, max_seconds=arguments.run_seconds / 2))
            runs["open_loop_target"]["rate_rps"] = arguments.rate
            # Half the sustained throughput: the latency of a server that is busy but not saturated.
            half = max(round(runs["closed_loop"]["throughput_rps"] / 2), 1)
            runs["open_loop_half"] = _summarise(loadgen.run_open(
                HOST, port, _paths(user_ids, seed + 5), headers, rate=half,
                max_requests=arguments.load_requests, max_seconds=arguments.run_seconds / 2))
            runs["open_loop_half"]["rate_rps"] = half
        runs["load_average"] = load.summary()
        runs["web_workers_memory_kib"] = worker_memory(process)
    finally:
        stop_server(process)
    return runs


def pick_server_config(arguments, headers: dict, user_ids: list[str]) -> dict:
    """Return each configuration's closed-loop result (laplace) and the one with the highest throughput."""
    trials = {}
    for config in arguments.server_configs.split(","):
        process, port = start_server(config, arguments.db_dir)
        try:
            workers = int(config.split(":")[1]) * int(config.split(":")[2])
            loadgen.run_closed(HOST, port, _paths(user_ids, 7), headers, concurrency=workers,
                               max_requests=40 * workers, max_seconds=60)
            result = loadgen.run_closed(HOST, port, _paths(user_ids, 8), headers, concurrency=arguments.concurrency,
                                        max_requests=arguments.load_requests // 2,
                                        max_seconds=arguments.run_seconds / 2)
            trials[config] = {**_summarise(result), "load_average_1m": round(os.getloadavg()[0], 2)}
        finally:
            stop_server(process)
    best = max(trials, key=lambda c: (trials[c]["throughput_rps"], -trials[c].get("p99_ms", 1e9)))
    return {"trials": trials, "chosen": best}


def main(argv=None) -> dict:
    arguments = parse_arguments(argv)
    migrate(arguments.db_dir)
    setup_django(arguments.db_dir)

    from django.conf import settings
    from django.db import connection

    from users.models import AppUser, Tenant
    from users.services import create_api_key

    started = time.perf_counter()
    dataset_facts = prepare_dataset(arguments)
    print(f"data set ready in {time.perf_counter() - started:.0f} s: {json.dumps(dataset_facts)}", flush=True)
    tenant = Tenant.objects.get(name=BENCH_TENANT)
    _, raw_key = create_api_key(tenant, label="serving benchmark")
    headers = {"Authorization": f"Api-Key {raw_key}"}
    user_ids = list(AppUser.objects.filter(tenant=tenant, external_id__startswith="bench-user-")
                    .order_by("id").values_list("external_id", flat=True))

    set_policy(tenant, "laplace")
    connection.close()
    choice = pick_server_config(arguments, headers, user_ids)
    print(f"server configurations: {json.dumps(choice)}", flush=True)

    vectors = privatised_query_vectors(tenant, user_ids, count=500)
    results = {"command": shlex.join(["bench/serving.py", *(argv or sys.argv[1:])]), "date": now_iso(),
               "machine": machine_facts(), "dataset": dataset_facts, "server_choice": choice, "mechanisms": {}}
    for index, mechanism in enumerate(arguments.mechanisms.split(",")):
        policy = set_policy(tenant, mechanism)
        ef_search = max(policy["n_candidates"], settings.RECOMMEND_HNSW_EF_SEARCH)
        bare = latency_summary(time_bare_hnsw(vectors, ef_search=ef_search, queries=arguments.bare_queries))
        connection.close()
        runs = measure_mechanism(arguments, choice["chosen"], headers, user_ids, seed=100 * index)
        runs["bare_hnsw"] = bare
        runs["policy"] = policy
        runs["ef_search"] = ef_search
        runs["p99_ratio_sequential"] = round(runs["sequential"]["p99_ms"] / bare["p99_ms"], 2)
        results["mechanisms"][mechanism] = runs
        print(f"{mechanism}: {json.dumps(runs)}", flush=True)

    # The same laplace runs with a larger hnsw.ef_search: what the retrieval benchmark's
    # recall target costs in serving latency and throughput.
    results["ef_variants"] = {}
    policy = set_policy(tenant, "laplace")
    for ef_search in [int(value) for value in arguments.ef_variants.split(",") if value.strip()]:
        bare = latency_summary(time_bare_hnsw(vectors, ef_search=max(policy["n_candidates"], ef_search),
                                              queries=arguments.bare_queries))
        connection.close()
        runs = measure_mechanism(arguments, choice["chosen"], headers, user_ids, seed=1000 + ef_search,
                                 RECOMMEND_HNSW_EF_SEARCH=str(ef_search))
        runs.update(bare_hnsw=bare, policy=policy, ef_search=max(policy["n_candidates"], ef_search),
                    p99_ratio_sequential=round(runs["sequential"]["p99_ms"] / bare["p99_ms"], 2))
        results["ef_variants"][str(ef_search)] = runs
        print(f"laplace with ef_search {ef_search}: {json.dumps(runs)}", flush=True)
    write_result("serving", results)
    return results


if __name__ == "__main__":
    main()
