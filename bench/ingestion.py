"""Ingestion benchmark: per-clip extraction against decode-only, and worker throughput.

1. Runs bench/ingest_timing.py (all three modalities against decoding alone, per
   clip and in total over the 39 real clips) and keeps its JSON.
2. Throughput with real Celery workers on the Redis broker (database 12), for one and
   then two worker processes (``celery worker -Q ingestion -c 1`` each). The 39
   clips are uploaded through ``videos.services.create_video_upload``, and the batch
   is timed from the first upload until every video is ready, partial or failed. Before the timed
   batch each worker set processes a few short clips, so model loading is not timed.
3. The resident memory (RSS and PSS) of each worker's pool child after the batch,
   models loaded.

Uploads go to var/bench-media and rows to the benchmark database, tenant
"bench-ingestion", whose videos are deleted before each batch.

Usage (from the repository root):
    .venv/bin/python bench/ingestion.py [--repeats 3] [--workers 1,2] [--skip-timing]
"""

import argparse
import csv
import json
import shlex
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    BENCH_BROKER_URL,
    BENCH_DB_DIR,
    REPO_ROOT,
    RESULTS_DIR,
    LoadAverageSampler,
    bench_environment,
    child_pids,
    machine_facts,
    migrate,
    now_iso,
    process_memory_kib,
    setup_django,
    write_result,
)

TENANT = "bench-ingestion"
MEDIA_ROOT = REPO_ROOT / "var" / "bench-media"
WARM_UP_CLIPS_PER_WORKER = 2
BATCH_TIMEOUT_S = 1200


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("RECSYS_DATA_DIR", REPO_ROOT.parent / "shared" / "data")),
                        help="shared data folder holding clips/clips.csv")
    parser.add_argument("--repeats", type=int, default=3, help="ingest_timing.py runs per clip and step (default 3)")
    parser.add_argument("--workers", default="1,2", help="worker process counts to time, comma-separated")
    parser.add_argument("--skip-timing", action="store_true", help="skip the per-clip timing of ingest_timing.py")
    return parser.parse_args(argv)


def per_clip_timing(arguments) -> dict:
    """Run ingest_timing.py in its own process and return its rows and summary."""
    output = RESULTS_DIR / "ingest_timing.json"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(REPO_ROOT / "bench" / "ingest_timing.py"), "--data-dir", str(arguments.data_dir),
               "--repeats", str(arguments.repeats), "--json", str(output)]
    with LoadAverageSampler() as load:
        completed = subprocess.run(command, cwd=REPO_ROOT, env=bench_environment(), capture_output=True, text=True,
                                   timeout=3600)
    (RESULTS_DIR / "ingest_timing.txt").write_text(completed.stdout + completed.stderr, encoding="utf-8")
    completed.check_returncode()
    timing = json.loads(output.read_text())
    timing["load_average"] = load.summary()
    timing["command"] = f"bench/ingest_timing.py --repeats {arguments.repeats} --json var/bench-results/ingest_timing.json"
    return timing


# ---------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------


def worker_environment() -> dict:
    return bench_environment(RECSYS_MEDIA_ROOT=str(MEDIA_ROOT), LOG_LEVEL="WARNING")


def start_workers(count: int, run: str) -> list[subprocess.Popen]:
    """Start ``count`` Celery workers (one pool process each) on the ingestion queue."""
    workers = []
    for index in range(count):
        log = open(RESULTS_DIR / f"celery-{run}-{index}.log", "ab")  # noqa: SIM115 - closed with the process
        command = [sys.executable, "-m", "celery", "-A", "recsys_platform", "worker", "-Q", "ingestion", "-c", "1",
                   "-n", f"bench-ingestion-{run}-{index}@%h", "--without-gossip", "--without-mingle",
                   "--loglevel", "WARNING"]
        workers.append(subprocess.Popen(command, cwd=REPO_ROOT, env=worker_environment(), stdout=log, stderr=log,
                                        start_new_session=True))
    return workers


def wait_until_ready(names: list[str], timeout_s: float = 120) -> None:
    from recsys_platform.celery import app

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        replies = app.control.ping(destination=names, timeout=1.0)
        answered = {name for reply in replies for name in reply}
        if set(names) <= answered:
            return
        time.sleep(0.5)
    raise RuntimeError(f"workers {names} did not respond to a ping within {timeout_s} s; see {RESULTS_DIR}/celery-*.log")


def stop_workers(workers: list[subprocess.Popen]) -> None:
    for process in workers:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in workers:
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def upload(tenant, clips: list[dict], clips_dir: Path, prefix: str) -> list[int]:
    from django.core.files import File

    from videos.services import create_video_upload

    ids = []
    for clip in clips:
        path = clips_dir / clip["file"]
        with path.open("rb") as handle:
            video = create_video_upload(tenant=tenant, uploaded_file=File(handle, name=str(path)),
                                        title=clip["title"], external_id=f"{prefix}-{clip['clip_id']}")
        ids.append(video.pk)
    return ids


def wait_done(ids: list[int], timeout_s: float) -> dict:
    """Poll until every video is ready, partial or failed; return the status counts."""
    from videos.models import Video, VideoStatus

    waiting = {VideoStatus.PENDING, VideoStatus.PROCESSING}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        statuses = list(Video.objects.filter(pk__in=ids).values_list("status", flat=True))
        if not any(status in waiting for status in statuses):
            return {status: statuses.count(status) for status in set(statuses)}
        time.sleep(0.25)
    raise RuntimeError(f"{len(ids)} videos were not processed within {timeout_s} s; see {RESULTS_DIR}/celery-*.log")


def throughput(count: int, clips: list[dict], clips_dir: Path) -> dict:
    """Time the 39 clips through ``count`` worker processes; return clips per minute and memory."""
    from recsys_platform.celery import app
    from users.services import create_tenant
    from videos.models import Video

    tenant = create_tenant(TENANT)
    Video.objects.filter(tenant=tenant).delete()
    with app.connection_for_write() as connection:
        connection.default_channel.queue_purge("ingestion")
    run = f"{count}w"
    workers = start_workers(count, run)
    try:
        wait_until_ready([f"bench-ingestion-{run}-{index}@{os.uname().nodename}" for index in range(count)])
        shortest = sorted(clips, key=lambda clip: float(clip["duration_s"]))[: WARM_UP_CLIPS_PER_WORKER * count]
        wait_done(upload(tenant, shortest, clips_dir, f"warm-{run}"), BATCH_TIMEOUT_S)

        with LoadAverageSampler(interval_s=2.0) as load:
            started = time.perf_counter()
            ids = upload(tenant, clips, clips_dir, f"timed-{run}")
            statuses = wait_done(ids, BATCH_TIMEOUT_S)
            elapsed = time.perf_counter() - started
        memory = [{"worker": index, "pid": pid, **process_memory_kib(pid)}
                  for index, process in enumerate(workers) for pid in child_pids(process.pid)]
    finally:
        stop_workers(workers)
        # Leaves the shared benchmark table as the retrieval benchmark expects it: the
        # serving tenant's videos only.
        Video.objects.filter(tenant=tenant).delete()
    return {"workers": count, "clips": len(clips), "elapsed_s": round(elapsed, 1),
            "clips_per_minute": round(60 * len(clips) / elapsed, 1), "statuses": statuses,
            "load_average": load.summary(), "pool_children_memory_kib": memory}


def main(argv=None) -> dict:
    arguments = parse_arguments(argv)
    results = {"command": shlex.join(["bench/ingestion.py", *(argv if argv is not None else sys.argv[1:])]),
               "date": now_iso(), "machine": machine_facts(), "broker": BENCH_BROKER_URL}
    if not arguments.skip_timing:
        results["per_clip"] = per_clip_timing(arguments)
        print(f"per-clip timing: {json.dumps(results['per_clip']['summary'])}", flush=True)

    migrate(BENCH_DB_DIR)
    os.environ["RECSYS_MEDIA_ROOT"] = str(MEDIA_ROOT)
    setup_django(BENCH_DB_DIR)
    clips_dir = arguments.data_dir / "clips"
    with (clips_dir / "clips.csv").open(newline="", encoding="utf-8") as handle:
        clips = list(csv.DictReader(handle))
    results["throughput"] = []
    for count in (int(value) for value in arguments.workers.split(",")):
        run = throughput(count, clips, clips_dir)
        results["throughput"].append(run)
        print(f"{count} worker(s): {json.dumps(run)}", flush=True)
    if len(results["throughput"]) >= 2:
        first, last = results["throughput"][0], results["throughput"][-1]
        results["speed_up"] = round(last["clips_per_minute"] / first["clips_per_minute"], 2)
    write_result("ingestion", results)
    return results


if __name__ == "__main__":
    main()
