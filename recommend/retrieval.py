"""Candidate retrieval from the pgvector HNSW index on the fused embedding.

Filters: the tenant, servable videos, and optionally videos the user has not
interacted with. pgvector 0.8's iterative index scan (``hnsw.iterative_scan``) keeps
walking the graph until enough rows pass the filters; if the index still yields too
few (a tenant whose videos are a sliver of the table, or a user who has seen almost
everything), an exact scan over the filtered rows fills the request.
"""

from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import connection, transaction

from videos.models import SERVABLE_STATUSES

_SERVABLE = [str(s) for s in SERVABLE_STATUSES]

# pgvector 0.8's iterative scan mode for serving: relaxed_order keeps walking the graph
# until enough rows pass the filters, and the rows are re-sorted by exact distance here.
SERVING_ITERATIVE_SCAN = "relaxed_order"

_FILTERS = """
    v.tenant_id = %(tenant)s
    AND v.status = ANY(%(statuses)s)
    AND v.fused_embedding IS NOT NULL
"""
_NOT_SEEN = """
    AND NOT EXISTS (
        SELECT 1 FROM users_interaction i WHERE i.user_id = %(user)s AND i.video_id = v.id
    )
"""


@dataclass
class Candidates:
    video_ids: np.ndarray  # (C,) primary keys
    external_ids: list[str]
    embeddings: np.ndarray  # (C, FUSED_DIM)
    used_exact_fallback: bool


def parse_vector(value) -> np.ndarray:
    """Parse a pgvector value as returned by a raw cursor ('[1,2,3]' text) into float32."""
    if isinstance(value, str):
        return np.array(value[1:-1].split(","), dtype=np.float32)
    return np.asarray(value, np.float32)


def unpack_vectors(values: list[bytes]) -> np.ndarray:
    """Decode ``vector_send(column)`` values into a (n, d) float32 array.

    pgvector's binary form is int16 d, int16 unused, then d big-endian float32. Reading
    it costs about a tenth of parsing the text form ('[0.1,...]') of the same vectors,
    on the server (no float formatting) and here (no float parsing).
    """
    if not values:
        return np.zeros((0, 0), np.float32)
    dimensions = int.from_bytes(values[0][:2], "big")
    packed = b"".join(memoryview(value)[4:] for value in values)
    return np.frombuffer(packed, dtype=">f4").reshape(len(values), dimensions).astype(np.float32)


def vector_literal(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{float(x):.7g}" for x in vector) + "]"


def retrieve_candidates(
    tenant_id: int,
    query: np.ndarray,
    count: int,
    *,
    exclude_seen_by: int | None = None,
    ef_search: int = 100,
    iterative_scan: str = "relaxed_order",
    exact: bool = False,
) -> Candidates:
    """Return up to ``count`` nearest servable videos of the tenant by cosine distance."""
    params = {"tenant": tenant_id, "statuses": _SERVABLE, "user": exclude_seen_by,
              "query": vector_literal(query), "limit": count}
    filters = _FILTERS + (_NOT_SEEN if exclude_seen_by is not None else "")
    used_exact = exact
    rows = []
    if not exact:
        rows = _index_scan(filters, params, (max(ef_search, count), iterative_scan))
    if exact or len(rows) < count:
        with transaction.atomic(), connection.cursor() as cursor:
            rows = _exact(cursor, filters, params)
        used_exact = True
    if not rows:
        return Candidates(np.zeros(0, np.int64), [], np.zeros((0, len(query)), np.float32), used_exact)
    embeddings = unpack_vectors([r[2] for r in rows])
    order = np.argsort(-(embeddings @ query), kind="stable")
    rows = [rows[i] for i in order]
    return Candidates(
        video_ids=np.array([r[0] for r in rows], np.int64),
        external_ids=[r[1] for r in rows],
        embeddings=embeddings[order],
        used_exact_fallback=used_exact,
    )


def apply_session_search_settings(sender, connection, **kwargs) -> None:
    """Set the HNSW search settings serving uses as the new connection's session defaults.

    Connected to ``connection_created``. Django opens a connection in autocommit mode,
    so the settings outlive this statement. A query whose settings match them needs no
    transaction and no SET of its own: three round trips fewer per recommendation.
    """
    if connection.vendor != "postgresql":
        return
    defaults = (settings.RECOMMEND_HNSW_EF_SEARCH, SERVING_ITERATIVE_SCAN)
    connection.hnsw_session_settings = None
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('hnsw.ef_search', %s, false), set_config('hnsw.iterative_scan', %s, false)",
                       [str(defaults[0]), defaults[1]])
    connection.hnsw_session_settings = defaults


def _index_scan(filters: str, params: dict, search_settings: tuple[int, str]) -> list:
    sql = (f"SELECT v.id, v.external_id, vector_send(v.fused_embedding) FROM videos_video v WHERE {filters} "
           "ORDER BY v.fused_embedding <=> %(query)s::vector LIMIT %(limit)s")
    if getattr(connection, "hnsw_session_settings", None) == search_settings:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    ef_search, iterative_scan = search_settings
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('hnsw.ef_search', %s, true), set_config('hnsw.iterative_scan', %s, true)",
                       [str(ef_search), iterative_scan])
        cursor.execute(sql, params)
        return cursor.fetchall()


def _exact(cursor, filters: str, params: dict) -> list:
    # With index scans off for this transaction the planner cannot use the HNSW index
    # (it has no bitmap scan), so this is an exact scan over the rows that pass the
    # filters, ranked by a top-N sort. A MATERIALIZED CTE would do the same but first
    # copies every filtered row, vectors included, which spills to disk for a large tenant.
    cursor.execute("SELECT set_config('enable_indexscan', 'off', true)")
    cursor.execute(
        f"SELECT v.id, v.external_id, vector_send(v.fused_embedding) FROM videos_video v WHERE {filters} "
        "ORDER BY v.fused_embedding <=> %(query)s::vector LIMIT %(limit)s",
        params,
    )
    return cursor.fetchall()


def popular_videos(tenant_id: int, count: int) -> list[str]:
    """Return the external ids of the tenant's most interacted servable videos, newest first on ties."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT external_id FROM videos_video WHERE tenant_id = %s AND status = ANY(%s) "
            "AND fused_embedding IS NOT NULL ORDER BY popularity DESC, created_at DESC, id DESC LIMIT %s",
            [tenant_id, _SERVABLE, count],
        )
        return [row[0] for row in cursor.fetchall()]


def user_history(user_id: int, length: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return the fused embeddings (oldest first), event types and video ids of the last interactions."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT vector_send(v.fused_embedding), i.event_type, v.external_id FROM users_interaction i "
            "JOIN videos_video v ON v.id = i.video_id "
            "WHERE i.user_id = %s AND v.fused_embedding IS NOT NULL "
            "ORDER BY i.occurred_at DESC, i.id DESC LIMIT %s",
            [user_id, length],
        )
        rows = cursor.fetchall()[::-1]
    if not rows:
        return np.zeros((0, 0), np.float32), np.zeros(0, object), []
    embeddings = unpack_vectors([r[0] for r in rows])
    return embeddings, np.array([r[1] for r in rows], object), [r[2] for r in rows]
