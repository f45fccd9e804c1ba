"""Import YouTube-8M video-level features as videos without media ("bring your own embeddings")."""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone
from tqdm import tqdm

# The command lives in recommend/ because it needs the tenant's active fusion to
# compute each fused embedding, as the extraction workers do.
from recommend.services import fuse_video_embeddings
from users.models import Tenant
from users.services import create_tenant
from videos.models import MODALITIES, Video, VideoStatus
from videos.youtube8m import (
    MEAN_AUDIO_DIM,
    MEAN_RGB_DIM,
    ExampleDecodeError,
    TFRecordError,
    YouTube8MVideo,
    iter_video_level_features,
    read_vocabulary,
)
from workers.extractors.errors import ModalityUnavailable
from workers.extractors.vectors import check_vector

logger = logging.getLogger(__name__)

VISUAL_EXTRACTOR = "youtube8m-mean-rgb/1"
AUDIO_EXTRACTOR = "youtube8m-mean-audio/1"
VOCABULARY_FILE = "vocabulary.csv"
BATCH_SIZE = 1000

# Columns an import writes. created_at stays as first stored, and updated_at and
# processed_at change only when a video's content changes.
CONTENT_FIELDS = [
    "title", "tags", "labels", "has_audio",
    "visual_embedding", "visual_extractor", "text_embedding", "text_extractor",
    "audio_embedding", "audio_extractor", "fused_embedding", "fusion_version",
    "status", "status_reason", "status_message", "modality_reasons",
]

HELP = """\
Import YouTube-8M video-level features (TFRecord files of tf.train.Example records with
id, labels, mean_rgb and mean_audio) as videos without media for a tenant.

Each record becomes one video keyed by its YouTube-8M id: visual embedding = mean_rgb
(1024 floats, extractor youtube8m-mean-rgb/1), audio embedding = mean_audio (128
floats, extractor youtube8m-mean-audio/1), labels = the label ids, tags = the label
names from vocabulary.csv. The title is derived: the label names joined by commas.
No text modality is imported (modality reason "no_text"), so the title's label names
never reach the embeddings. The fused embedding uses the tenant's active fusion.

This is the "bring your own embeddings" path: a tenant that computes its own features
converts them into the same TFRecord layout (videos.youtube8m.build_example and
write_tfrecord write it) and imports them with this command. A vector that is not
finite or has a zero norm is rejected: the video is stored without that modality, or
skipped when neither modality is valid. A record with a missing feature or a vector
of the wrong dimension, or a corrupt file, stops the import and nothing is stored.
Rerunning the command on the same files changes nothing; changed features overwrite
the stored ones.
"""


@dataclass
class ImportCounts:
    read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    partial_vectors: int = 0
    problems: list[str] = field(default_factory=list)


class Command(BaseCommand):
    help = HELP

    def create_parser(self, prog_name, subcommand, **kwargs):
        from argparse import RawDescriptionHelpFormatter

        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.formatter_class = RawDescriptionHelpFormatter
        return parser

    def add_arguments(self, parser):
        parser.add_argument(
            "directory", type=Path, nargs="?", default=None,
            help="Folder of *.tfrecord files, or one .tfrecord file "
            "(default: RECSYS_DATA_DIR/youtube8m).",
        )
        parser.add_argument("--tenant", required=True, help="Tenant name; created if it does not exist.")
        parser.add_argument("--limit", type=int, default=None, help="Import at most N videos, in file order.")
        parser.add_argument(
            "--vocabulary", type=Path, default=None,
            help=f"Label vocabulary CSV with Index and Name columns (default: {VOCABULARY_FILE} beside "
            "the TFRecord files; without one, tags and titles stay empty).",
        )

    def handle(self, *args, directory, tenant, limit, vocabulary, **options):
        directory = directory or Path(settings.RECSYS_DATA_DIR) / "youtube8m"
        files = self._tfrecord_files(directory)
        if limit is not None and limit < 1:
            raise CommandError(f"--limit must be at least 1; got {limit}.")
        label_names = self._label_names(vocabulary or self._folder(directory) / VOCABULARY_FILE, vocabulary)
        tenant_obj = Tenant.objects.filter(name=tenant).first() or create_tenant(tenant)

        counts = ImportCounts()
        try:
            # One transaction: a corrupt file leaves the tenant as it was before the run.
            with transaction.atomic():
                self._import(tenant_obj, files, label_names, limit, counts)
        except (TFRecordError, ExampleDecodeError) as error:
            raise CommandError(f"{error}. Nothing was imported; fix or remove the file and rerun.") from None

        for problem in counts.problems[:20]:
            self.stderr.write(problem)
        if len(counts.problems) > 20:
            self.stderr.write(f"... and {len(counts.problems) - 20} more vector problems.")
        logger.info("Imported YouTube-8M features for tenant %s: %s new, %s updated, %s unchanged, %s rejected",
                    tenant_obj.pk, counts.created, counts.updated, counts.unchanged, counts.rejected)
        self.stdout.write(
            f"Tenant {tenant}: {counts.read} videos read from {len(files)} files: {counts.created} new, "
            f"{counts.updated} updated, {counts.unchanged} unchanged, {counts.rejected} rejected "
            f"(no valid vector), {counts.partial_vectors} stored without an invalid modality."
        )

    @staticmethod
    def _folder(path: Path) -> Path:
        return path if path.is_dir() else path.parent

    @staticmethod
    def _tfrecord_files(path: Path) -> list[Path]:
        if path.is_file():
            return [path]
        if not path.is_dir():
            raise CommandError(f"{path} not found; pass a folder of YouTube-8M .tfrecord files or one such file.")
        files = sorted(path.glob("*.tfrecord"))
        if not files:
            raise CommandError(f"{path} contains no *.tfrecord files; pass the folder of the video-level features.")
        return files

    @staticmethod
    def _label_names(path: Path, explicit: Path | None) -> dict[int, str]:
        if not path.is_file():
            if explicit is not None:
                raise CommandError(f"{path} not found; pass an existing vocabulary CSV or leave --vocabulary out.")
            return {}
        try:
            vocabulary = read_vocabulary(path)
        except ValueError as error:
            raise CommandError(str(error)) from None
        return {index: info.name for index, info in vocabulary.items() if info.name}

    def _import(self, tenant, files, label_names, limit, counts: ImportCounts) -> None:
        batch: list[Video] = []
        progress = tqdm(files, desc="YouTube-8M files", unit="file")
        for path in progress:
            for record in iter_video_level_features(path):
                counts.read += 1
                video = self._build_video(tenant, path, record, label_names, counts)
                if video is not None:
                    batch.append(video)
                if len(batch) >= BATCH_SIZE:
                    self._store(tenant, batch, counts)
                    batch = []
                if limit is not None and counts.read >= limit:
                    break
            progress.set_postfix(videos=counts.read)
            if limit is not None and counts.read >= limit:
                break
        progress.close()
        if batch:
            self._store(tenant, batch, counts)

    def _build_video(self, tenant, path: Path, record: YouTube8MVideo, label_names, counts) -> Video | None:
        embeddings: dict[str, np.ndarray] = {}
        missing = {"text": "no_text"}
        messages = {"text": "YouTube-8M features carry no text; the title is derived from the labels."}
        modalities = (("visual", record.mean_rgb, MEAN_RGB_DIM), ("audio", record.mean_audio, MEAN_AUDIO_DIM))
        for modality, values, dim in modalities:
            try:
                embeddings[modality] = check_vector(values, dim, modality=modality)
            except ModalityUnavailable as error:
                missing[modality] = error.code
                messages[modality] = error.message
                counts.problems.append(f"{path.name}: video {record.id!r}: {error.message}")

        extractors = {"visual": VISUAL_EXTRACTOR, "audio": AUDIO_EXTRACTOR}
        fused, fusion_version = (None, "")
        if embeddings:
            fused, fusion_version = fuse_video_embeddings(tenant.pk, embeddings, extractors)
        if fused is None:
            counts.rejected += 1
            counts.problems.append(f"{path.name}: video {record.id!r}: rejected, no valid visual or audio vector.")
            return None
        if "visual" in missing or "audio" in missing:
            counts.partial_vectors += 1

        names = [label_names[label] for label in record.labels if label in label_names]
        return Video(
            tenant=tenant,
            external_id=record.id,
            title=", ".join(names),
            tags=names,
            labels=list(record.labels),
            has_audio="audio" in embeddings,
            visual_embedding=embeddings.get("visual"),
            visual_extractor=VISUAL_EXTRACTOR if "visual" in embeddings else "",
            text_embedding=None,
            text_extractor="",
            audio_embedding=embeddings.get("audio"),
            audio_extractor=AUDIO_EXTRACTOR if "audio" in embeddings else "",
            fused_embedding=fused,
            fusion_version=fusion_version,
            # Text is never imported, so every video lacks a modality: partial.
            status=VideoStatus.PARTIAL,
            status_reason="missing_modality",
            status_message="; ".join(f"{m}: {messages[m]}" for m in MODALITIES if m in missing),
            modality_reasons={m: missing[m] for m in MODALITIES if m in missing},
        )

    def _store(self, tenant, videos: list[Video], counts: ImportCounts) -> None:
        existing = {
            row[0]: row[1:]
            for row in Video.objects.filter(tenant=tenant, external_id__in=[v.external_id for v in videos])
            .values_list("external_id", *CONTENT_FIELDS)
        }
        changed = []
        for video in videos:
            stored = existing.get(video.external_id)
            if stored is not None and _same_content(stored, video):
                counts.unchanged += 1
                continue
            if stored is None:
                counts.created += 1
            else:
                counts.updated += 1
            video.processed_at = timezone.now()
            changed.append(video)
        if changed:
            Video.objects.bulk_create(
                changed, batch_size=500, update_conflicts=True, unique_fields=["tenant", "external_id"],
                update_fields=[*CONTENT_FIELDS, "updated_at", "processed_at"],
            )


def _same_content(stored: tuple, video: Video) -> bool:
    """Return whether a stored row's content columns equal the video about to be written."""
    for name, old in zip(CONTENT_FIELDS, stored):
        new = getattr(video, name)
        if isinstance(old, np.ndarray) or isinstance(new, np.ndarray):
            if old is None or new is None or not np.array_equal(np.asarray(old, np.float32),
                                                                np.asarray(new, np.float32)):
                return False
        elif old != new:
            return False
    return True
