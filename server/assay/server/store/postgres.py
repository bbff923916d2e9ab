"""The shared store: every replica's state in one PostgreSQL database (15 or newer).

Choices, and why:

* **psycopg 3 with the synchronous ``psycopg_pool.ConnectionPool``, called from
  threads.** The Store interface is synchronous because SQLite's is, and the
  server already calls it only from worker threads (``asyncio.to_thread``, the
  job runners); one interface keeps one set of job/lease rules (_jobs.py) for
  both engines. An async pool would need a second implementation of every rule
  and would still be called from threads by the code that is synchronous. The
  pool bounds connections per server (``data.pool_max``) and a call waits at
  most ``data.connect_timeout_s`` for one before UnavailableError.
* **The lease clock is the database's** (``now()``, the transaction's start):
  replicas whose clocks disagree still agree on when a lease runs out, and
  every timestamp a write stores comes from the same clock.
* **JSON is ``text``, not ``jsonb``**: the server never queries inside a spec or
  report, and text keeps exactly the bytes SQLite keeps (key order, and
  NUL escapes, which jsonb refuses), so both engines return identical
  documents. Timestamps are ``double precision`` seconds since the epoch, as in
  the records, for the same reason.
* **Arrays are ``bytea``, not large objects**: a unit's or a profile's ``.npz``
  lives in its row, so it is written, replaced, replicated and deleted (with its
  job, by ``ON DELETE CASCADE``) in the same transaction as the row, with no
  orphaned objects to clean up and nothing special for pg_dump or permissions.
  One bytea value holds up to 1 GiB, but it travels as hex text (twice its
  size) and the server refuses to build a value over 1 GiB, so a blob over
  ~512 MB could be written and never read back; both engines therefore refuse
  blobs over MAX_BLOB_BYTES (256 MiB) with InvalidArgumentError. Profiles and
  units are megabytes, far below that, so they are not chunked.
* **Migrations** are the numbered files in migrations/postgres/, recorded in a
  ``schema_migrations`` table and applied at start inside one transaction that
  holds ``pg_advisory_xact_lock``: replicas starting together apply them once.
  A database with a newer schema is refused.

Connections are checked when the pool hands them out, so after a database
restart a dropped connection is replaced rather than failing a call; a call
that still fails (the database is down) raises StoreUnavailableError, which a
running job treats as "leave the job live for a takeover", never as a failure.
"""

from __future__ import annotations

import contextlib
import functools
import math
import zlib
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from assay.server.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    StoreUnavailableError,
)
from assay.server.store import _migrations
from assay.server.store._catalog import CatalogMixin
from assay.server.store._jobs import JobsMixin
from assay.server.store._sql import Cursor, Tx
from assay.server.store.urls import redact

MIGRATIONS = _migrations.load("postgres")
SCHEMA_VERSION = len(MIGRATIONS)
"""Schema version this code writes, the highest in ``schema_migrations``."""

_MIGRATION_LOCK = zlib.crc32(b"assay.store.migrations")
_CREATE_LOCK = zlib.crc32(b"assay.store.create")
"""Advisory lock keys: schema changes, and creates that check the pending cap."""


@functools.lru_cache(maxsize=256)
def _dialect(sql: str) -> str:
    """The shared ``?`` placeholders as psycopg's ``%s`` (a literal ``%`` escaped)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _Tx:
    """A statement runner on one pooled connection; the clock read once, at first use."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        self._now: float | None = None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self._conn.execute(_dialect(sql), params)

    def now(self) -> float:
        if self._now is None:
            # clock_timestamp(), not now(): now() is when the transaction began, so a
            # lease computed after waiting on a row lock would come out shortened.
            sql = "SELECT extract(epoch FROM clock_timestamp())::float8"
            row = self._conn.execute(sql).fetchone()
            assert row is not None
            self._now = float(row[0])
        return self._now


class PostgresStore(JobsMixin, CatalogMixin):
    """Store in a PostgreSQL database, shared by every replica that names it."""

    FOR_UPDATE = " FOR UPDATE"
    UNIT_ORDER = "seq"

    def __init__(self, url: str, *, pool_max: int = 8, connect_timeout_s: float = 5.0) -> None:
        """Connects, applies any missing migrations and opens the pool; blocks.

        Raises:
            UnavailableError: The server cannot be reached within ``connect_timeout_s``.
            FailedPreconditionError: The database's schema is newer than this code knows.
        """
        self._url, self._redacted = url, redact(url)
        self._timeout_s = connect_timeout_s
        # libpq takes whole seconds and treats less than 2 as 2.
        connect: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(2, math.ceil(connect_timeout_s)),
        }
        with self._unavailable("cannot reach"):
            with psycopg.connect(url, **connect) as conn:
                migrate(conn, SCHEMA_VERSION)
            self._pool: ConnectionPool[Any] = ConnectionPool(
                url,
                min_size=1,
                max_size=pool_max,
                kwargs=connect,
                timeout=connect_timeout_s,
                open=False,
                name="assay-store",
                # A connection the server dropped (restart, failover) is replaced at
                # checkout instead of failing the call it was handed to.
                check=ConnectionPool.check_connection,
            )
            try:
                self._pool.open(wait=True, timeout=connect_timeout_s)
            except BaseException:
                self._pool.close()  # or its workers go on trying to connect
                raise
        self._closed = False

    @property
    def url(self) -> str:
        """See Store.url (the password replaced by ``***``)."""
        return self._redacted

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextlib.contextmanager
    def _unavailable(self, what: str) -> Iterator[None]:
        """Connection failures become UnavailableError, unstorable values InvalidArgumentError."""
        try:
            yield
        except psycopg.DataError as exc:
            raise InvalidArgumentError(f"value cannot be stored: {exc}") from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            message = f"{what} the PostgreSQL store {self._redacted}: {exc}"
            raise StoreUnavailableError(message) from exc

    @contextlib.contextmanager
    def _connection(self, transaction: bool) -> Iterator[Tx]:
        if self._closed:
            raise FailedPreconditionError(f"store {self._redacted} is closed")
        with (
            self._unavailable("cannot use"),
            self._pool.connection(timeout=self._timeout_s) as conn,
        ):
            if not transaction:
                yield _Tx(conn)
                return
            with conn.transaction():
                yield _Tx(conn)

    def _write(self) -> contextlib.AbstractContextManager[Tx]:
        return self._connection(transaction=True)

    def _read(self) -> contextlib.AbstractContextManager[Tx]:
        return self._connection(transaction=False)

    def _serialise_creates(self, tx: Tx) -> None:
        """Creates that check the cap take turns (the lock ends with the transaction)."""
        tx.execute("SELECT pg_advisory_xact_lock(?)", (_CREATE_LOCK,))

    def ping(self) -> None:
        """See Store.ping: one round trip on a pooled connection."""
        try:
            with self._read() as tx:
                tx.execute("SELECT 1").fetchone()
        except FailedPreconditionError as exc:  # closed
            raise StoreUnavailableError(str(exc)) from exc

    def close(self) -> None:
        """See Store.close; closing twice is harmless, later calls fail."""
        if not getattr(self, "_closed", True):
            self._closed = True
            self._pool.close()


def migrate(conn: psycopg.Connection[Any], target: int) -> None:
    """Brings the database to schema ``target`` under the migration lock.

    Used at start (target = SCHEMA_VERSION) and by tests that build an older
    schema. ``conn`` must be in autocommit mode; all happens in one transaction.

    Raises:
        FailedPreconditionError: The database is at a newer version than this code knows.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version integer PRIMARY KEY, name text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
        current = int(row[0]) if row is not None else 0
        if current > SCHEMA_VERSION:
            raise FailedPreconditionError(
                f"the PostgreSQL store has schema version {current}, newer than version "
                f"{SCHEMA_VERSION} that this server understands; upgrade the server"
            )
        for migration in MIGRATIONS[current:target]:
            for statement in migration.statements:
                conn.execute(statement.encode())  # bytes: run as written, no placeholders
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
