"""Import MicroLens-50k users, items (with titles) and interactions for a tenant."""

import csv
from datetime import datetime, timedelta, timezone as dt_timezone
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from tqdm import tqdm

from users.models import AppUser, Tenant
from users.services import create_tenant
from videos.models import Video, VideoStatus

PAIRS_FILE = "MicroLens-50k_pairs.tsv"
TITLES_FILE = "MicroLens-50k_titles.csv"
TEXT_BATCH = 256

# MicroLens-50k has no timestamps, only the order of each user's interactions. Each
# user's i-th interaction is dated EPOCH + i minutes: the order is kept, the absolute
# times mean nothing, and times of different users are not comparable.
EPOCH = datetime(2023, 1, 1, tzinfo=dt_timezone.utc)


class Command(BaseCommand):
    help = "Import MicroLens-50k (pairs and titles) as videos without media, users and interactions."

    def add_arguments(self, parser):
        parser.add_argument("directory", type=Path, help=f"Folder with {PAIRS_FILE} and {TITLES_FILE}.")
        parser.add_argument("--tenant", required=True, help="Tenant name; created if it does not exist.")
        parser.add_argument("--limit-users", type=int, default=None, help="Import only the first N users.")
        parser.add_argument("--no-embed", action="store_true", help="Do not enqueue text embedding tasks.")

    def handle(self, *args, directory: Path, tenant, limit_users, no_embed, **options):
        pairs_path, titles_path = directory / PAIRS_FILE, directory / TITLES_FILE
        for path in (pairs_path, titles_path):
            if not path.is_file():
                raise CommandError(f"{path} not found; pass the folder that contains the MicroLens-50k files.")
        tenant_obj = Tenant.objects.filter(name=tenant).first() or create_tenant(tenant)

        titles = self._read_titles(titles_path)
        sequences = self._read_pairs(pairs_path, limit_users)
        unknown = {item for _, items in sequences for item in items} - titles.keys()
        if unknown:
            raise CommandError(f"{len(unknown)} items of {PAIRS_FILE} have no title row, e.g. {sorted(unknown)[:3]}.")

        new_videos = self._import_videos(tenant_obj, titles)
        new_users, interactions = self._import_interactions(tenant_obj, sequences)
        self.stdout.write(
            f"Tenant {tenant}: {new_videos} new videos, {new_users} new users, {interactions} new interactions "
            f"({len(titles)} items and {len(sequences)} users in the files)."
        )
        if not no_embed:
            queued = self._enqueue_text_embeddings(tenant_obj)
            self.stdout.write(f"Queued text embedding of {queued} videos for the workers.")

    def _read_titles(self, path: Path) -> dict[str, str]:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None or [h.strip() for h in header[:2]] != ["item", "title"]:
                raise CommandError(f"{path} must start with the header 'item,title'; got {header!r}.")
            return {row[0].strip(): (row[1] if len(row) > 1 else "") for row in reader if row}

    def _read_pairs(self, path: Path, limit: int | None) -> list[tuple[str, list[str]]]:
        sequences = []
        with open(path, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                user, _, items = line.rstrip("\n").partition("\t")
                if not items:
                    raise CommandError(f"{path}:{line_number}: expected 'user<TAB>item item ...'.")
                sequences.append((user.strip(), items.split()))
                if limit is not None and len(sequences) >= limit:
                    break
        return sequences

    def _import_videos(self, tenant, titles: dict[str, str]) -> int:
        existing = set(Video.objects.filter(tenant=tenant).values_list("external_id", flat=True))
        new = [Video(tenant=tenant, external_id=item, title=title, status=VideoStatus.PENDING)
               for item, title in titles.items() if item not in existing]
        for start in tqdm(range(0, len(new), 5000), desc="Videos", unit="batch", disable=not new):
            Video.objects.bulk_create(new[start:start + 5000], ignore_conflicts=True)
        return len(new)

    def _import_interactions(self, tenant, sequences) -> tuple[int, int]:
        existing_users = set(AppUser.objects.filter(tenant=tenant).values_list("external_id", flat=True))
        todo = [(user, items) for user, items in sequences if user not in existing_users]
        if not todo:
            return 0, 0
        video_pk = dict(Video.objects.filter(tenant=tenant).values_list("external_id", "pk"))
        total = 0
        with transaction.atomic():
            AppUser.objects.bulk_create([AppUser(tenant=tenant, external_id=u) for u, _ in todo], batch_size=5000)
            user_pk = dict(AppUser.objects.filter(tenant=tenant, external_id__in=[u for u, _ in todo])
                           .values_list("external_id", "pk"))
            with connection.cursor() as cursor, cursor.cursor.copy(
                "COPY users_interaction (tenant_id, user_id, video_id, event_type, occurred_at, created_at) "
                "FROM STDIN"
            ) as copy:
                now = datetime.now(dt_timezone.utc)
                for user, items in tqdm(todo, desc="Interactions", unit="user"):
                    for position, item in enumerate(items):
                        copy.write_row((tenant.pk, user_pk[user], video_pk[item], "view",
                                        EPOCH + timedelta(minutes=position), now))
                        total += 1
            with connection.cursor() as cursor:
                cursor.execute(
                    "UPDATE users_appuser u SET history_version = c.n FROM "
                    "(SELECT user_id, count(*) AS n FROM users_interaction WHERE tenant_id = %s GROUP BY user_id) c "
                    "WHERE u.id = c.user_id", [tenant.pk])
                cursor.execute(
                    "UPDATE videos_video v SET popularity = c.n FROM "
                    "(SELECT video_id, count(*) AS n FROM users_interaction WHERE tenant_id = %s "
                    "AND event_type <> 'skip' GROUP BY video_id) c WHERE v.id = c.video_id", [tenant.pk])
        return len(todo), total

    def _enqueue_text_embeddings(self, tenant) -> int:
        from workers.tasks import embed_video_texts_task

        pending = list(Video.objects.filter(tenant=tenant, media="", status=VideoStatus.PENDING)
                       .order_by("pk").values_list("pk", flat=True))
        for start in range(0, len(pending), TEXT_BATCH):
            embed_video_texts_task.delay(pending[start:start + TEXT_BATCH])
        return len(pending)
