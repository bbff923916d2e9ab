"""The embedded store: every piece of server state in one SQLite file.

The database runs in WAL mode with ``synchronous=NORMAL``: a committed
transaction is in the WAL file when the commit returns, so it survives the
process being killed (even by SIGKILL). Only an OS crash or power loss can drop
the last few commits, and the file stays consistent even then.

One connection serves every thread, serialised by a lock; each write is one
``BEGIN IMMEDIATE`` transaction, so other processes on the same file wait (up
to BUSY_TIMEOUT_MS) rather than fail, and a check-then-write (the pending cap,
a lease) can never interleave with another writer. SQLite's lease clock is
``time.time()``: every process sharing the file shares the machine's clock.

The schema is the numbered files in migrations/sqlite/, its version kept in
``PRAGMA user_version`` (2 was the last version before this module; such files
upgrade in place and keep their jobs). A file with a newer version is refused
before anything is written to it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from assay.server.errors import FailedPreconditionError, StoreUnavailableError
from assay.server.store import _migrations
from assay.server.store._catalog import CatalogMixin
from assay.server.store._jobs import JobsMixin
from assay.server.store._sql import Cursor

MIGRATIONS = _migrations.load("sqlite")
SCHEMA_VERSION = len(MIGRATIONS)
"""Schema version this code writes, kept in SQLite's ``user_version``."""

BUSY_TIMEOUT_MS = 10_000
"""How long a write waits for another process's write before failing."""


class _Tx:
    """A transaction on the shared connection; the clock is read once, at first use."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._now: float | None = None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self._conn.execute(sql, params)

    def now(self) -> float:
        if self._now is None:
            self._now = time.time()
        return self._now


class SqliteStore(JobsMixin, CatalogMixin):
    """Store in one SQLite file, safe to share between threads and processes."""

    def __init__(self, path: Path) -> None:
        """Opens (creating it and its folders if needed) the store at ``path``.

        Raises:
            FailedPreconditionError: The file has a newer schema than this code
                knows, cannot use WAL, or is not an SQLite database.
        """
        self._path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = open_database(self._path)

    @property
    def url(self) -> str:
        """See Store.url."""
        return f"sqlite:///{self._path}"

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self, mode: str) -> Iterator[_Tx]:
        with self._lock:
            if self._conn is None:
                raise FailedPreconditionError(f"store {self.url} is closed")
            conn = self._conn
            try:
                conn.execute(f"BEGIN {mode}")
                try:
                    yield _Tx(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    raise StoreUnavailableError(f"store {self.url} is busy: {exc}") from exc
                raise

    def _write(self) -> contextlib.AbstractContextManager[_Tx]:
        return self._transaction("IMMEDIATE")

    def _read(self) -> contextlib.AbstractContextManager[_Tx]:
        return self._transaction("DEFERRED")

    def ping(self) -> None:
        """See Store.ping: reads the file's header."""
        try:
            with self._read() as tx:
                tx.execute("PRAGMA user_version").fetchone()
        except (sqlite3.Error, FailedPreconditionError) as exc:
            raise StoreUnavailableError(f"store {self.url} does not answer: {exc}") from exc

    def close(self) -> None:
        """See Store.close; closing twice is harmless, later calls fail."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def open_database(path: Path) -> sqlite3.Connection:
    """Opens the database at ``path``, creating or upgrading its schema.

    The connection is in autocommit mode (callers issue BEGIN/COMMIT), may be
    used from any thread (callers serialise it), and runs in WAL mode with
    ``synchronous=NORMAL``.

    Raises:
        FailedPreconditionError: The schema is newer than SCHEMA_VERSION, WAL is
            unavailable, or the file is not an SQLite database.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    try:
        _configure(conn, path)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise FailedPreconditionError(f"cannot open store database {path}: {exc}") from exc
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
            f"store database {path} cannot use WAL journaling (got {mode!r}); "
            "put it on a local filesystem"
        )
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("BEGIN IMMEDIATE")  # Two processes opening a new file at once: one migrates.
    try:
        migrate(conn, _check_version(conn, path), SCHEMA_VERSION)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def migrate(conn: sqlite3.Connection, current: int, target: int) -> None:
    """Applies migrations ``current+1..target`` and records ``target``; inside a transaction."""
    for migration in MIGRATIONS[current:target]:
        for statement in migration.statements:
            conn.execute(statement)
    if current < target:
        conn.execute(f"PRAGMA user_version = {target}")


def _check_version(conn: sqlite3.Connection, path: Path) -> int:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise FailedPreconditionError(
            f"store database {path} has schema version {version}, newer than version "
            f"{SCHEMA_VERSION} that this server understands; upgrade the server or use "
            "another database file"
        )
    return version
