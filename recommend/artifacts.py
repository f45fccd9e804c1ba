"""Load the active model versions of a tenant, cached per process.

Serving must pick up a newly activated version without a restart, yet must not read
a model artifact from the database on every request. Each process keeps the loaded
model and re-checks which version is active at most every ``RECHECK_S`` seconds, with
one indexed query.
"""

import io
import threading
import time

import torch

from recommend.models import ModelKind, ModelVersion

RECHECK_S = 2.0

_lock = threading.Lock()
# (tenant_id, kind) -> (checked_at, version_id or None, loaded object or None)
_cache: dict[tuple[int, str], tuple[float, int | None, object]] = {}


def load_active(tenant_id: int, kind: str, loader):
    """Return ``loader(ModelVersion)`` for the tenant's active version, or None.

    ``loader`` turns a ModelVersion into the object serving uses; it runs once per
    version per process.
    """
    key = (tenant_id, kind)
    now = time.monotonic()
    cached = _cache.get(key)
    if cached is not None and now - cached[0] < RECHECK_S:
        return cached[2]

    active_id = (
        ModelVersion.objects.filter(tenant_id=tenant_id, kind=kind, is_active=True)
        .values_list("id", flat=True)
        .first()
    )
    if cached is not None and cached[1] == active_id:
        with _lock:
            _cache[key] = (now, active_id, cached[2])
        return cached[2]

    loaded = None
    if active_id is not None:
        version = ModelVersion.objects.get(pk=active_id)
        loaded = loader(version)
    with _lock:
        _cache[key] = (now, active_id, loaded)
    return loaded


def forget(tenant_id: int | None = None) -> None:
    """Drop cached models (all, or one tenant's) so the next call reloads them."""
    with _lock:
        for key in list(_cache):
            if tenant_id is None or key[0] == tenant_id:
                del _cache[key]


def serialize_state(payload: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def deserialize_state(data: bytes) -> dict:
    return torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)


__all__ = ["ModelKind", "load_active", "forget", "serialize_state", "deserialize_state"]
