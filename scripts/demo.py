"""Run the platform end to end on the real data: ingest, import, train, serve.

Starts a real Celery worker and a gunicorn web server on 127.0.0.1, then:

1. uploads the 39 real clips and waits for their embeddings (visual, text, audio);
2. requests the videos most similar to ``vas-dog-1`` over REST;
3. imports MicroLens-50k and waits for the workers to embed its 19,220 titles;
4. trains the tenant's fusion and ranking models;
5. requests private recommendations over REST for a few MicroLens users, showing
   the epsilon spent and the budget left, until one user's budget runs out and the
   response becomes non-personalised.

Every process it starts is stopped at the end, also on failure or Ctrl-C.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "recsys_platform.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LOG_FORMAT", "text")
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

CLIPS_TENANT = "demo-clips"
MICROLENS_TENANT = "demo-microlens"
PYTHON = sys.executable


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def manage(*args: str) -> None:
    subprocess.run([PYTHON, "manage.py", *args], cwd=REPO, check=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], log_name: str) -> subprocess.Popen:
    log_dir = REPO / "var" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / log_name, "ab")
    return subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def get_json(url: str, key: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"Api-Key {key}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        return {"http_status": error.code, **json.load(error)}


def wait_for_server(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/health/live", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"The web server at {base} did not start within {timeout} s; see var/logs/web.log")


def wait_for_videos(tenant, timeout: float = 3600) -> None:
    from tqdm import tqdm

    from videos.models import Video, VideoStatus

    total = Video.objects.filter(tenant=tenant).count()
    deadline = time.monotonic() + timeout
    with tqdm(total=total, desc="Embedding titles", unit="video") as bar:
        while True:
            done = Video.objects.filter(tenant=tenant).exclude(
                status__in=[VideoStatus.PENDING, VideoStatus.PROCESSING]).count()
            bar.update(done - bar.n)
            if done >= total:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"{total - done} videos were not embedded within {timeout:.0f} s")
            time.sleep(2)


def check_clips(tenant) -> None:
    import csv

    from videos.models import Video, VideoStatus

    with open(settings.RECSYS_DATA_DIR / "clips" / "clips.csv", newline="", encoding="utf-8") as handle:
        manifest = {row["clip_id"]: row for row in csv.DictReader(handle)}
    problems, notes = [], []
    for video in Video.objects.filter(tenant=tenant, external_id__in=manifest):
        row = manifest[video.external_id]
        expected_missing = set()
        if row["audio"] == "NO_AUDIO":
            expected_missing.add("audio")
        if not row["title"].strip():
            expected_missing.add("text")
        if video.modality_reasons.get("audio") == "silent_audio":
            # The manifest lists the track's codec; a track of digital silence is
            # present but carries no audio embedding, by design.
            expected_missing.add("audio")
            notes.append(f"{video.external_id}: its audio track is silent, so it has no audio embedding")
        if video.status == VideoStatus.FAILED:
            problems.append(f"{video.external_id} failed: {video.status_reason}")
        elif set(video.modality_reasons) != expected_missing:
            problems.append(f"{video.external_id} misses {sorted(video.modality_reasons)}, "
                            f"expected {sorted(expected_missing)}")
    for note in notes:
        print(note)
    print("All clips ready or partial with the expected missing modalities." if not problems
          else "Unexpected outcomes:\n  " + "\n  ".join(problems))


def _exit_on_sigterm(signum, frame) -> None:
    # SystemExit unwinds through main's finally block, which stops the worker and
    # the web server; the default SIGTERM action would leave them running.
    raise SystemExit(f"Stopped by signal {signum}")


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    from privacy.services import get_privacy_policy, update_privacy_policy
    from users.models import AppUser, Tenant
    from users.services import create_api_key, create_tenant

    data = Path(settings.RECSYS_DATA_DIR)
    if not (data / "clips" / "clips.csv").exists():
        raise SystemExit(f"No clips under {data}; set RECSYS_DATA_DIR to the folder with clips/ and microlens-50k/.")
    broker = "Redis" if settings.CELERY_BROKER_URL.startswith("redis") else "the PostgreSQL broker table"
    print(f"Data: {data}\nDatabase: {settings.DATABASES['default']['NAME']} "
          f"({'embedded' if settings.EMBEDDED_DB else 'DATABASE_URL'}), broker: {broker}")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    worker = web = None
    try:
        step("Starting a Celery worker and the web server")
        worker = start([PYTHON, "-m", "celery", "-A", "recsys_platform", "worker", "-Q", "default,ingestion,training",
                        "--concurrency", "2", "--loglevel", "INFO", "-n", "demo@%h"], "worker.log")
        web = start([PYTHON, "-m", "gunicorn", "recsys_platform.wsgi", "-b", f"127.0.0.1:{port}", "-w", "2",
                     "--timeout", "120"], "web.log")
        wait_for_server(base)
        print(f"Worker pid {worker.pid} (log var/logs/worker.log), web {base} (log var/logs/web.log)")

        step("1. Ingesting the 39 real clips through the upload service")
        clips_tenant = Tenant.objects.filter(name=CLIPS_TENANT).first() or create_tenant(CLIPS_TENANT)
        started = time.perf_counter()
        manage("ingest_clips", str(data / "clips"), "--tenant", CLIPS_TENANT, "--wait")
        print(f"Ingestion finished in {time.perf_counter() - started:.1f} s")
        check_clips(clips_tenant)

        step("2. GET /api/v1/videos/vas-dog-1/similar/?k=3")
        _, clips_key = create_api_key(clips_tenant, label="demo")
        print(json.dumps(get_json(f"{base}/api/v1/videos/vas-dog-1/similar/?k=3", clips_key), indent=2))

        step("3. Importing MicroLens-50k")
        manage("import_microlens", str(data / "microlens-50k"), "--tenant", MICROLENS_TENANT)
        microlens = Tenant.objects.get(name=MICROLENS_TENANT)
        wait_for_videos(microlens)

        step("4. Training fusion and ranker")
        manage("train", "--tenant", MICROLENS_TENANT)

        step("5. Private recommendations over REST")
        policy = get_privacy_policy(microlens)
        update_privacy_policy(policy, changes={"epsilon": 1.0, "budget": 3.0, "mechanism": "laplace"}, actor=None)
        _, key = create_api_key(microlens, label="demo")
        users = list(AppUser.objects.filter(tenant=microlens).order_by("pk").values_list("external_id", flat=True)[:3])
        for user in users:
            body = get_json(f"{base}/api/v1/users/{user}/recommendations/?k=10", key)
            print(f"user {user}: personalised={body.get('personalised')} epsilon_spent={body.get('epsilon_spent')} "
                  f"remaining={body.get('budget', {}).get('remaining')} videos={body.get('videos')}")
        print(f"\nExhausting the budget of user {users[0]} (epsilon 1 per response, budget 3 per day):")
        for attempt in range(4):
            body = get_json(f"{base}/api/v1/users/{users[0]}/recommendations/?k=10", key)
            print(f"  request {attempt + 2}: personalised={body.get('personalised')} "
                  f"fallback_reason={body.get('fallback_reason')} epsilon_spent={body.get('epsilon_spent')} "
                  f"remaining={body.get('budget', {}).get('remaining')}")
        print(json.dumps(get_json(f"{base}/api/v1/users/{users[0]}/privacy-budget/", key), indent=2))
        print(f"\nDone. The API docs are at {base}/api/docs/ while the server runs; "
              "run `python manage.py runserver` to browse them and the admin.")
    finally:
        stop(web)
        stop(worker)


if __name__ == "__main__":
    main()
