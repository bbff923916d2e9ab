"""SQLite plumbing for SqliteJobStore: opening, schema, rows to records.

Kept apart from the store so that store.py reads as the job rules alone.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from assay.server.errors import ErrorCode, FailedPreconditionError, NotFoundError
from assay.server.store.records import JobRecord, JobState

SCHEMA_VERSION = 2
"""Schema version this code writes, kept in SQLite's ``user_version``."""

BUSY_TIMEOUT_MS = 10_000
"""How long a write waits for another process's write before failing."""

JOB_COLUMNS = (
    "id, kind, state, spec, created_at, updated_at, done, total, stage, error, attempts, error_code"
)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        spec TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        done INTEGER NOT NULL,
        total INTEGER NOT NULL,
        stage TEXT NOT NULL,
        error TEXT,
        attempts INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, created_at)",
    "CREATE INDEX IF NOT EXISTS jobs_by_kind ON jobs (kind, created_at)",
    """CREATE TABLE IF NOT EXISTS units (
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        meta TEXT NOT NULL,
        arrays BLOB NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (job_id, key))""",
    """CREATE TABLE IF NOT EXISTS results (
        job_id TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
        json TEXT NOT NULL)""",
)
"""Version 1 of the schema; later versions are _MIGRATIONS applied on top."""

_MIGRATIONS: dict[int, tuple[str, ...]] = {
    # The status code of a failed job's error (ErrorCode value), NULL before.
    2: ("ALTER TABLE jobs ADD COLUMN error_code TEXT",),
}


def open_database(path: Path) -> sqlite3.Connection:
    """Opens the job database at ``path``, creating or checking its schema.

    The connection is in autocommit mode (callers issue BEGIN/COMMIT), may be
    used from any thread (callers serialise it), and runs in WAL mode with
    ``synchronous=NORMAL``, which keeps every commit across a process crash.

    Raises:
        FailedPreconditionError: The schema is newer than SCHEMA_VERSION, WAL is
            unavailable, or the file is not an SQLite database.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    conn.row_factory = sqlite3.Row
    try:
        _configure(conn, path)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise FailedPreconditionError(f"cannot open job database {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _configure(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    _check_version(conn, path)  # Before anything is written to a file we may not own.
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise FailedPreconditionError(
            f"job database {path} cannot use WAL journaling (got {mode!r}); "
            "put it on a local filesystem"
        )
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("BEGIN IMMEDIATE")  # Two processes opening a new file at once: one creates.
    try:
        version = _check_version(conn, path)
        if version < 1:
            for statement in _SCHEMA:
                conn.execute(statement)
        for target in range(max(version, 1) + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[target]:
                conn.execute(statement)
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _check_version(conn: sqlite3.Connection, path: Path) -> int:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise FailedPreconditionError(
            f"job database {path} has schema version {version}, newer than version "
            f"{SCHEMA_VERSION} that this server understands; upgrade the server or use "
            "another database file"
        )
    return version


def not_found(job_id: str) -> NotFoundError:
    """Builds the error every store method raises for an unknown job id."""
    return NotFoundError(f"no job with id {job_id!r}")


def to_record(row: sqlite3.Row) -> JobRecord:
    """Turns a row selected with JOB_COLUMNS into a JobRecord."""
    return JobRecord(
        id=row["id"],
        kind=row["kind"],
        state=JobState(row["state"]),
        spec=json.loads(row["spec"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        done=row["done"],
        total=row["total"],
        stage=row["stage"],
        error=row["error"],
        attempts=row["attempts"],
        error_code=_error_code(row["error_code"]),
    )


def _error_code(value: str | None) -> ErrorCode | None:
    """The stored code; None for none, or one a newer server wrote that this one lacks."""
    known = {code.value: code for code in ErrorCode}
    return None if value is None else known.get(value)


def get_job(conn: sqlite3.Connection, job_id: str) -> JobRecord:
    """Reads one job.

    Raises:
        NotFoundError: No job has this id.
    """
    row = conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise not_found(job_id)
    return to_record(row)


def get_live_job(conn: sqlite3.Connection, job_id: str, change: str) -> JobRecord:
    """Reads a job that is about to change, refusing one that has ended.

    Raises:
        NotFoundError: No job has this id.
        FailedPreconditionError: The job is in a terminal state, which is final.
    """
    job = get_job(conn, job_id)
    if job.state.terminal:
        raise FailedPreconditionError(f"job {job_id} is {job.state}; it cannot be {change}")
    return job
