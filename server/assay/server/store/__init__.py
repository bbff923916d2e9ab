"""All server state behind one interface: jobs, units, reports, leases, profiles, datasets.

`Store` is the interface (see base.py for its rules); ``data.url`` picks the
implementation through `open_store`: SQLite (sqlite.py) for one machine,
PostgreSQL (postgres.py, imported only when asked for, as psycopg is an extra)
for replicas.
"""

from __future__ import annotations

import logging
from pathlib import Path

from assay.server.errors import ConfigError
from assay.server.store.base import LeaseLostError, Store
from assay.server.store.records import (
    DatasetRecord,
    JobRecord,
    JobState,
    ProfileEntry,
    StoredProfile,
    Unit,
    UploadEvent,
)
from assay.server.store.sqlite import SqliteStore
from assay.server.store.urls import parse, redact

log = logging.getLogger(__name__)

DEFAULT_SQLITE_NAME = "assay.sqlite3"
LEGACY_SQLITE_NAME = "jobs.sqlite3"
"""Where servers before the one store kept their jobs (data.dir/jobs.sqlite3)."""


def default_url(data_dir: Path) -> str:
    """The store a server uses when ``data.url`` is not set.

    ``sqlite:///<data_dir>/assay.sqlite3``; but when that file does not exist
    and an older server's ``jobs.sqlite3`` does, that file is adopted in place
    (its schema is upgraded when opened, its jobs kept). In place rather than
    renamed: a WAL database is three files that cannot be renamed together
    atomically, and an older server still running on the folder would go on
    writing to the old names.
    """
    default, legacy = data_dir / DEFAULT_SQLITE_NAME, data_dir / LEGACY_SQLITE_NAME
    if not default.exists() and legacy.exists():
        log.info("using the existing job database %s in place of %s", legacy, default)
        return f"sqlite:///{legacy}"
    return f"sqlite:///{default}"


def open_store(url: str, *, pool_max: int = 8, connect_timeout_s: float = 5.0) -> Store:
    """Opens the store ``url`` names, creating or upgrading its schema; blocks.

    Args:
        url: ``sqlite:///ABSOLUTE/PATH`` or ``postgresql://USER@HOST:PORT/DB``.
        pool_max: Most connections a PostgreSQL store opens.
        connect_timeout_s: How long PostgreSQL calls wait for a connection.

    Raises:
        ConfigError: The URL is not a store URL, or it is a PostgreSQL URL and
            psycopg is not installed.
        UnavailableError: The PostgreSQL server cannot be reached.
        FailedPreconditionError: The schema is newer than this server knows.
    """
    parsed = parse(url)
    if parsed.path is not None:
        return SqliteStore(parsed.path)
    try:
        from assay.server.store.postgres import PostgresStore
    except ImportError as exc:
        raise ConfigError(
            f"data.url {redact(url)!r} is a PostgreSQL store, which needs psycopg: "
            f"pip install 'assay[postgres]' ({exc})"
        ) from exc
    return PostgresStore(url, pool_max=pool_max, connect_timeout_s=connect_timeout_s)


__all__ = [
    "DatasetRecord",
    "JobRecord",
    "JobState",
    "LeaseLostError",
    "ProfileEntry",
    "SqliteStore",
    "Store",
    "StoredProfile",
    "Unit",
    "UploadEvent",
    "default_url",
    "open_store",
]
