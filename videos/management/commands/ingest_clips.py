"""Upload a folder of clips through the same service as the REST API."""

import csv
import time
from pathlib import Path

from django.core.files import File
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from users.models import Tenant
from users.services import create_tenant
from videos.errors import BrokerUnavailable, DuplicateVideo, InvalidMedia, UploadTooLarge
from videos.models import Video, VideoStatus
from videos.services import create_video_upload, enqueue_extraction

VIDEO_SUFFIXES = {".mp4", ".webm", ".mkv", ".mov", ".m4v", ".avi"}
FINAL_STATUSES = {VideoStatus.READY, VideoStatus.PARTIAL, VideoStatus.FAILED}


class Command(BaseCommand):
    help = "Upload every clip of DIR (or of a manifest CSV) for a tenant, and optionally wait for extraction."

    def add_arguments(self, parser):
        parser.add_argument("directory", type=Path, help="Folder that contains the clips.")
        parser.add_argument(
            "--manifest", type=Path,
            help="CSV with columns clip_id, file, title (optional: description, tags). "
            "Default: DIR/clips.csv if present, else every video file in DIR.",
        )
        parser.add_argument("--tenant", required=True, help="Tenant name; created if it does not exist.")
        parser.add_argument("--wait", action="store_true", help="Wait until every clip is processed and report it.")
        parser.add_argument("--timeout", type=float, default=1800, help="Seconds to wait with --wait (default 1800).")

    def handle(self, *args, directory: Path, manifest, tenant, wait, timeout, **options):
        if not directory.is_dir():
            raise CommandError(f"{directory} is not a folder; pass the folder that contains the clips.")
        entries = self._entries(directory, manifest)
        if not entries:
            raise CommandError(f"No clips found in {directory}; expected video files or a clips.csv manifest.")
        tenant_obj = Tenant.objects.filter(name=tenant).first() or create_tenant(tenant)

        rejected = self._upload(tenant_obj, directory, entries)
        if wait:
            self._wait(tenant_obj, [e["clip_id"] for e in entries if e["clip_id"] not in rejected], timeout)

    def _entries(self, directory: Path, manifest: Path | None) -> list[dict]:
        manifest = manifest or (directory / "clips.csv")
        if manifest.exists():
            with open(manifest, newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
            missing = {"clip_id", "file"} - set(rows[0].keys() if rows else [])
            if missing:
                raise CommandError(f"{manifest} lacks the column(s) {', '.join(sorted(missing))}.")
            return [
                {
                    "clip_id": row["clip_id"],
                    "file": row["file"],
                    "title": row.get("title") or "",
                    "description": row.get("description") or "",
                    "tags": [t.strip() for t in (row.get("tags") or "").split(",") if t.strip()],
                }
                for row in rows
            ]
        return [
            {"clip_id": path.stem, "file": path.name, "title": "", "description": "", "tags": []}
            for path in sorted(directory.iterdir())
            if path.suffix.lower() in VIDEO_SUFFIXES
        ]

    def _upload(self, tenant, directory: Path, entries: list[dict]) -> set[str]:
        rejected = set()
        counts = {"uploaded": 0, "already present": 0, "rejected": 0}
        for entry in tqdm(entries, desc="Uploading clips", unit="clip"):
            path = directory / entry["file"]
            if not path.is_file():
                self.stderr.write(f"{entry['clip_id']}: file {path} not found; skipped")
                rejected.add(entry["clip_id"])
                counts["rejected"] += 1
                continue
            try:
                with open(path, "rb") as handle:
                    create_video_upload(
                        tenant=tenant,
                        uploaded_file=File(handle, name=str(path)),
                        title=entry["title"],
                        description=entry["description"],
                        tags=entry["tags"],
                        external_id=entry["clip_id"],
                    )
                counts["uploaded"] += 1
            except DuplicateVideo:
                counts["already present"] += 1
                self._requeue_if_pending(tenant, entry["clip_id"])
            except (InvalidMedia, UploadTooLarge) as error:
                self.stderr.write(f"{entry['clip_id']}: rejected ({error.detail.code}): {error.detail}")
                rejected.add(entry["clip_id"])
                counts["rejected"] += 1
            except BrokerUnavailable:
                raise CommandError(
                    "The Celery broker is unavailable, so no more clips can be queued; start it "
                    "(CELERY_BROKER_URL) and run the command again: clips already uploaded are kept."
                ) from None
        self.stdout.write(", ".join(f"{value} {name}" for name, value in counts.items()))
        return rejected

    def _requeue_if_pending(self, tenant, clip_id: str) -> None:
        # A clip left pending by an interrupted earlier run has no task in the queue.
        video = Video.objects.filter(tenant=tenant, external_id=clip_id, status=VideoStatus.PENDING).first()
        if video is not None:
            enqueue_extraction(video.pk)

    def _wait(self, tenant, clip_ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with tqdm(total=len(clip_ids), desc="Extracting", unit="clip") as bar:
            done = 0
            while True:
                statuses = dict(
                    Video.objects.filter(tenant=tenant, external_id__in=clip_ids).values_list("external_id", "status")
                )
                finished = sum(1 for s in statuses.values() if s in FINAL_STATUSES)
                bar.update(finished - done)
                done = finished
                if finished == len(clip_ids):
                    break
                if time.monotonic() > deadline:
                    raise CommandError(
                        f"{len(clip_ids) - finished} clips were not processed within {timeout:.0f} s; "
                        "is a worker running (celery -A recsys_platform worker)?"
                    )
                time.sleep(1.0)
        self._report(tenant, clip_ids)

    def _report(self, tenant, clip_ids: list[str]) -> None:
        videos = Video.objects.filter(tenant=tenant, external_id__in=clip_ids).order_by("external_id")
        self.stdout.write(f"\n{'clip':28} {'status':9} {'modalities':22} missing")
        for video in videos:
            missing = ", ".join(f"{m}={code}" for m, code in sorted(video.modality_reasons.items()))
            if video.status == VideoStatus.FAILED:
                missing = f"{video.status_reason}: {video.status_message}"
            self.stdout.write(
                f"{video.external_id:28} {video.status:9} {','.join(video.modalities_present):22} {missing}"
            )
        summary = {}
        for video in videos:
            summary[video.status] = summary.get(video.status, 0) + 1
        self.stdout.write("Totals: " + ", ".join(f"{n} {s}" for s, n in sorted(summary.items())))
