"""Benchmark catalogues built from the real YouTube-8M vectors, enlarged to any size.

The shared data contains about 14,500 real YouTube-8M videos (video-level ``mean_rgb``,
1024 floats, and ``mean_audio``, 128 floats). A catalogue of N videos keeps every
real video once and adds N - 14,547 synthetic ones. Each synthetic video is:

    x = lam * x_a + (1 - lam) * x_b + sigma * ||x_a|| / sqrt(d) * g,   lam ~ U(0.5, 1),

per modality (d = 1024 visual, 128 audio), where a is a random real video, b a
random real video that shares one of a's labels, g a standard Gaussian vector and
sigma = NOISE (0.2). It carries a's labels. The fused embedding is the default
fusion of ``recommend.fusion`` (two modalities present, no text, as the
``import_youtube8m`` command stores these videos): each modality projected by its
fixed random projection, L2-normalised, averaged with equal weights and normalised.
``fused_matrix`` computes it for a whole chunk at once and is checked against
``fuse_embeddings`` row by row on a sample.

With sigma = 0.2 alone a copy has cosine 0.98 to its source, far closer than a real
video's nearest neighbour (median cosine 0.51), which would make the catalogue a
set of tight clumps; the mixture with a same-label video spreads the synthetic
videos between real ones.

Rows are written with COPY, without the modality vectors (serving and retrieval read
only the fused embedding), and the HNSW index is built after the load.
"""

import io
import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from bench.common import CACHE_DIR

NOISE = 0.2
REAL_VIDEO_COUNT = 14_547
VISUAL_EXTRACTOR = "youtube8m-mean-rgb/1"
AUDIO_EXTRACTOR = "youtube8m-mean-audio/1"
HNSW_INDEX = "video_fused_hnsw_cosine"
# The product's index definition (videos.models.Video.Meta.indexes).
HNSW_DEFINITION = "USING hnsw (fused_embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
EVENT_TYPES = ("view", "like", "complete", "share", "skip")
EVENT_PROBABILITIES = (0.60, 0.15, 0.20, 0.03, 0.02)
_CHUNK = 20_000


@dataclass
class RealVideos:
    """The real YouTube-8M videos, in file order."""

    ids: list[str]
    labels: list[list[int]]
    visual: np.ndarray  # (R, 1024) float32
    audio: np.ndarray  # (R, 128) float32


@dataclass
class Catalogue:
    """Fused embeddings of N videos; the first rows are the real videos themselves."""

    fused: np.ndarray  # (N, 128) float32, unit norm
    source: np.ndarray  # (N,) index of the real video whose labels a row carries
    real: RealVideos

    def __len__(self) -> int:
        return len(self.source)

    def labels_of(self, row: int) -> list[int]:
        return self.real.labels[int(self.source[row])]


def read_real_videos(directory: Path) -> RealVideos:
    """Read every video of the YouTube-8M video-level TFRecord files in ``directory``."""
    from videos.youtube8m import iter_video_level_features

    files = sorted(Path(directory).glob("*.tfrecord"))
    if not files:
        raise FileNotFoundError(f"no *.tfrecord files in {directory}; set RECSYS_DATA_DIR to the shared data folder")
    ids, labels, visual, audio = [], [], [], []
    for path in files:
        for video in iter_video_level_features(path):
            ids.append(video.id)
            labels.append(list(video.labels))
            visual.append(video.mean_rgb)
            audio.append(video.mean_audio)
    return RealVideos(ids=ids, labels=labels, visual=np.array(visual), audio=np.array(audio))


def fused_matrix(visual: np.ndarray, audio: np.ndarray) -> np.ndarray:
    """Return the default fusion of rows with a visual and an audio vector, shape (n, 128)."""
    from recommend.fusion import default_projection

    projected_visual = visual @ default_projection(VISUAL_EXTRACTOR, visual.shape[1]).T
    projected_audio = audio @ default_projection(AUDIO_EXTRACTOR, audio.shape[1]).T
    projected_visual /= np.linalg.norm(projected_visual, axis=1, keepdims=True)
    projected_audio /= np.linalg.norm(projected_audio, axis=1, keepdims=True)
    # Weights 1/3 each, renormalised over the two present modalities: 1/2 each.
    fused = 0.5 * projected_visual + 0.5 * projected_audio
    return (fused / np.linalg.norm(fused, axis=1, keepdims=True)).astype(np.float32)


def check_fusion(visual: np.ndarray, audio: np.ndarray, fused: np.ndarray, sample: int = 200) -> float:
    """Compare ``fused`` with ``fuse_embeddings`` on the first rows; raise if they differ."""
    from recommend.fusion import fuse_embeddings

    extractors = {"visual": VISUAL_EXTRACTOR, "audio": AUDIO_EXTRACTOR}
    worst = 0.0
    for row in range(min(sample, len(fused))):
        reference = fuse_embeddings({"visual": visual[row], "audio": audio[row]}, extractors)
        worst = max(worst, float(np.max(np.abs(reference - fused[row]))))
    if worst > 1e-5:
        raise AssertionError(f"batched fusion differs from fuse_embeddings by {worst}; fix fused_matrix")
    return worst


def _label_index(real: RealVideos) -> dict[int, np.ndarray]:
    members: dict[int, list[int]] = {}
    for row, labels in enumerate(real.labels):
        for label in labels:
            members.setdefault(label, []).append(row)
    return {label: np.array(rows) for label, rows in members.items()}


def _synthetic_chunk(real: RealVideos, members: dict[int, np.ndarray], count: int, rng) -> tuple:
    first = rng.integers(0, len(real.ids), size=count)
    second = np.empty(count, np.int64)
    for i, a in enumerate(first):
        labels = real.labels[a]
        if labels:
            candidates = members[labels[rng.integers(0, len(labels))]]
            second[i] = candidates[rng.integers(0, len(candidates))]
        else:
            second[i] = a
    mix = rng.uniform(0.5, 1.0, size=(count, 1)).astype(np.float32)
    parts = []
    for matrix in (real.visual, real.audio):
        base = mix * matrix[first] + (1 - mix) * matrix[second]
        scale = NOISE * np.linalg.norm(matrix[first], axis=1, keepdims=True) / np.sqrt(matrix.shape[1])
        parts.append(base + scale * rng.standard_normal(base.shape, dtype=np.float32))
    return first, parts[0], parts[1]


def build_catalogue(total: int, data_dir: Path, seed: int = 0, use_cache: bool = True) -> Catalogue:
    """Return a catalogue of ``total`` videos (at least the real ones), cached under var/bench-cache."""
    real = read_real_videos(data_dir / "youtube8m")
    if total < len(real.ids):
        raise ValueError(f"total must be at least the {len(real.ids)} real videos; got {total}")
    cache = CACHE_DIR / f"catalogue-{total}-seed{seed}-noise{NOISE}.npz"
    if use_cache and cache.exists():
        stored = np.load(cache)
        return Catalogue(fused=stored["fused"], source=stored["source"], real=real)

    fused = np.empty((total, 128), np.float32)
    source = np.empty(total, np.int64)
    real_count = len(real.ids)
    fused[:real_count] = fused_matrix(real.visual, real.audio)
    check_fusion(real.visual, real.audio, fused[:real_count])
    source[:real_count] = np.arange(real_count)

    rng = np.random.default_rng(seed)
    members = _label_index(real)
    for start in range(real_count, total, _CHUNK):
        count = min(_CHUNK, total - start)
        first, visual, audio = _synthetic_chunk(real, members, count, rng)
        fused[start:start + count] = fused_matrix(visual, audio)
        if start == real_count:
            check_fusion(visual, audio, fused[start:start + count])
        source[start:start + count] = first
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.savez(cache, fused=fused, source=source)
    return Catalogue(fused=fused, source=source, real=real)


# ---------------------------------------------------------------------------
# Loading into PostgreSQL
# ---------------------------------------------------------------------------

_VIDEO_COLUMNS = (
    "id, tenant_id, external_id, title, description, tags, labels, media, has_audio, status, status_reason, "
    "status_message, modality_reasons, attempts, visual_extractor, text_extractor, audio_extractor, "
    "fused_embedding, fusion_version, popularity, created_at, updated_at, processed_at"
)
_STATUS_MESSAGE = "text: YouTube-8M features carry no text; the title is derived from the labels."


def _vector_text(vector: np.ndarray) -> str:
    # repr of the float64 value of each float32 round-trips to the same float32.
    return "[" + ",".join(map(repr, vector.astype(np.float64).tolist())) + "]"


def copy_videos(cursor, tenant_id: int, catalogue: Catalogue, rows: np.ndarray, first_id: int,
                external_prefix: str, popularity: np.ndarray | None = None) -> int:
    """COPY the given catalogue rows as servable videos of a tenant, ids from ``first_id``; return the count.

    ``popularity`` is aligned with ``rows`` (interaction counts); it is written here
    because updating it later would add every updated row to the HNSW index again.
    """
    from recommend.fusion import DEFAULT_FUSION_VERSION

    now = datetime.now(timezone.utc)
    rng = np.random.default_rng(first_id)
    ages = rng.uniform(0, 30 * 86400, size=len(rows))
    sql = f"COPY videos_video ({_VIDEO_COLUMNS}) FROM STDIN"
    for start in range(0, len(rows), _CHUNK):
        buffer = io.StringIO()
        for offset in range(start, min(start + _CHUNK, len(rows))):
            row = int(rows[offset])
            labels = catalogue.labels_of(row)
            created = (now - timedelta(seconds=float(ages[offset]))).isoformat()
            fields = (
                str(first_id + offset), str(tenant_id), f"{external_prefix}{row:07d}", "", "", "[]",
                json.dumps(labels), "", "t", "partial", "missing_modality", _STATUS_MESSAGE,
                '{"text": "no_text"}', "1", VISUAL_EXTRACTOR, "", AUDIO_EXTRACTOR,
                _vector_text(catalogue.fused[row]), DEFAULT_FUSION_VERSION,
                str(int(popularity[offset])) if popularity is not None else "0", created, created, created,
            )
            buffer.write("\t".join(fields))
            buffer.write("\n")
        with cursor.copy(sql) as copy:
            copy.write(buffer.getvalue())
    return len(rows)


def build_hnsw_index(cursor, maintenance_work_mem: str = "1GB", parallel_workers: int = 1,
                     definition: str = HNSW_DEFINITION) -> float:
    """(Re)build the product's HNSW index on the fused embedding; return the build time in seconds.

    ``maintenance_work_mem`` must fit the whole graph, because otherwise pgvector switches
    to a much slower build. ``parallel_workers`` is max_parallel_maintenance_workers, and
    the leader builds too, so 1 uses both cores of a 2-core machine. ``definition``
    replaces the product's index parameters, to compare other builds.
    """
    cursor.execute(f"DROP INDEX IF EXISTS {HNSW_INDEX}")
    cursor.execute("SELECT set_config('maintenance_work_mem', %s, false)", [maintenance_work_mem])
    cursor.execute("SELECT set_config('max_parallel_maintenance_workers', %s, false)", [str(parallel_workers)])
    started = time.perf_counter()
    cursor.execute(f"CREATE INDEX {HNSW_INDEX} ON videos_video {definition}")
    elapsed = time.perf_counter() - started
    cursor.execute("ANALYZE videos_video")
    return elapsed


def truncate_product_tables(cursor) -> None:
    """Empty every tenant's rows in the benchmark database (never the development one)."""
    cursor.execute("TRUNCATE users_tenant CASCADE")


def reset_sequence(cursor, table: str) -> None:
    cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT coalesce(max(id), 1) FROM {table}))")


def simulate_histories(catalogue: Catalogue, rows: np.ndarray, users: int, seed: int = 1,
                       min_length: int = 20, max_length: int = 50) -> list[np.ndarray]:
    """Return one history (catalogue rows, oldest first) per simulated user.

    YouTube-8M has no users, so they are simulated from labels: each user follows one
    to three labels of the tenant's videos, and 80% of their interactions are videos
    with one of those labels, the rest any video of the tenant.
    """
    rng = np.random.default_rng(seed)
    by_label: dict[int, list[int]] = {}
    for row in rows:
        for label in catalogue.labels_of(int(row)):
            by_label.setdefault(label, []).append(int(row))
    labels = np.array([label for label, members in by_label.items() if len(members) >= 20])
    weights = np.array([len(by_label[label]) for label in labels], np.float64)
    weights /= weights.sum()
    histories = []
    for _ in range(users):
        interests = rng.choice(labels, size=rng.integers(1, 4), replace=False, p=weights)
        pool = np.unique(np.concatenate([by_label[label] for label in interests]))
        length = int(rng.integers(min_length, max_length + 1))
        from_interests = rng.random(length) < 0.8
        history = np.where(
            from_interests, pool[rng.integers(0, len(pool), size=length)], rows[rng.integers(0, len(rows), size=length)]
        )
        histories.append(history.astype(np.int64))
    return histories


def interaction_counts(histories: list[np.ndarray], rows: np.ndarray) -> np.ndarray:
    """Return how often each of ``rows`` occurs in the histories (the videos' popularity)."""
    counts = np.bincount(np.concatenate(histories), minlength=int(rows.max()) + 1)
    return counts[rows]


def copy_users_and_interactions(cursor, tenant_id: int, histories: list[np.ndarray], row_to_id,
                                seed: int = 2) -> dict:
    """COPY one user per history and one interaction per history item; return counts.

    Interactions are spread over the last seven days, oldest first, with event types
    drawn from EVENT_PROBABILITIES. ``copy_videos`` writes the popularity that
    ``interaction_counts`` returns for these histories.
    """
    rng = np.random.default_rng(seed)
    now = datetime.now(timezone.utc)
    cursor.execute("SELECT coalesce(max(id), 0) FROM users_appuser")
    first_user = cursor.fetchone()[0] + 1
    users = io.StringIO()
    interactions = io.StringIO()
    interaction_id = 1
    for index, history in enumerate(histories):
        user_id = first_user + index
        users.write(f"{user_id}\t{tenant_id}\tbench-user-{index:05d}\t{now.isoformat()}\t{len(history)}\n")
        offsets = np.sort(rng.uniform(0, 7 * 86400, size=len(history)))[::-1]
        events = rng.choice(len(EVENT_TYPES), size=len(history), p=EVENT_PROBABILITIES)
        for row, offset, event in zip(history, offsets, events):
            occurred = (now - timedelta(seconds=float(offset))).isoformat()
            interactions.write(
                f"{interaction_id}\t{tenant_id}\t{user_id}\t{row_to_id(int(row))}\t{EVENT_TYPES[event]}\t"
                f"{rng.uniform(1, 30):.1f}\t{occurred}\t{occurred}\n"
            )
            interaction_id += 1
    with cursor.copy("COPY users_appuser (id, tenant_id, external_id, created_at, history_version) FROM STDIN") as copy:
        copy.write(users.getvalue())
    with cursor.copy(
        "COPY users_interaction (id, tenant_id, user_id, video_id, event_type, watch_seconds, occurred_at, "
        "created_at) FROM STDIN"
    ) as copy:
        copy.write(interactions.getvalue())
    reset_sequence(cursor, "users_appuser")
    reset_sequence(cursor, "users_interaction")
    cursor.execute("ANALYZE users_interaction")
    cursor.execute("ANALYZE users_appuser")
    return {"users": len(histories), "interactions": interaction_id - 1}
