"""What the SQLite and PostgreSQL stores share: one transaction seam, rows to records.

Both engines run the same SQL (written with ``?`` placeholders; the PostgreSQL
transaction turns them into ``%s``), so the job, lease and profile rules are
written once, in _jobs.py and _catalog.py, and cannot drift apart. An engine
supplies transactions, its clock and the two places where the dialects differ
(row locks and how concurrent creates are serialised).
"""

from __future__ import annotations

import abc
import contextlib
import json
from collections.abc import Sequence
from typing import Any, Protocol

from assay.server.errors import ErrorCode, FailedPreconditionError, NotFoundError
from assay.server.store.base import LeaseLostError
from assay.server.store.records import JobRecord, JobState

JOB_COLUMNS = (
    "id, kind, state, spec, created_at, updated_at, done, total, stage, error, attempts, "
    "error_code, owner, lease_until"
)
"""The columns every job query selects, in the order to_record reads them."""

MAX_BLOB_BYTES = 256 * 1024 * 1024
"""Largest arrays blob either engine stores in one value: PostgreSQL sends bytea
as hex text (twice the size) and cannot build a value over 1 GiB, so a larger
blob could be written but never read back."""


class Cursor(Protocol):
    """The part of a DB-API cursor the stores use."""

    @property
    def rowcount(self) -> int:
        """Rows changed by the last statement."""
        ...

    def fetchone(self) -> Any:
        """The next row, or None."""
        ...

    def fetchall(self) -> Sequence[Any]:
        """Every remaining row."""
        ...


class Tx(Protocol):
    """One open transaction."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """Runs one statement written with ``?`` placeholders."""
        ...

    def now(self) -> float:
        """The store's clock in seconds since the epoch, fixed for the transaction."""
        ...


class SqlBase(abc.ABC):
    """An engine: transactions plus the few dialect differences."""

    FOR_UPDATE = ""
    """Suffix that locks a selected row until commit (SQLite locks the whole file)."""

    UNIT_ORDER = "rowid"
    """Column that orders units as first stored."""

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """Where the store is, any password removed."""

    @abc.abstractmethod
    def _write(self) -> contextlib.AbstractContextManager[Tx]:
        """A read-write transaction, committed when the block ends without error."""

    @abc.abstractmethod
    def _read(self) -> contextlib.AbstractContextManager[Tx]:
        """A read-only transaction."""

    def _serialise_creates(self, tx: Tx) -> None:
        """Makes concurrent creates take turns, so the pending cap holds.

        SQLite needs nothing: every write transaction holds the file's write lock.
        """
        del tx

    def _get_job(self, tx: Tx, job_id: str, lock: bool = False) -> JobRecord:
        """Reads one job, locking its row when ``lock``.

        Raises:
            NotFoundError: No job has this id.
        """
        suffix = self.FOR_UPDATE if lock else ""
        row = tx.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?{suffix}", (job_id,))
        found = row.fetchone()
        if found is None:
            raise not_found(job_id)
        return to_record(found)

    def _live_job(self, tx: Tx, job_id: str, change: str, owner: str | None = None) -> JobRecord:
        """Reads (and locks) a job about to change, refusing one that has ended.

        Raises:
            NotFoundError: No job has this id.
            FailedPreconditionError: The job is in a terminal state, which is final.
            LeaseLostError: ``owner`` is given and does not hold the job's lease.
        """
        job = self._get_job(tx, job_id, lock=True)
        if job.state.terminal:
            raise FailedPreconditionError(f"job {job_id} is {job.state}; it cannot be {change}")
        if owner is not None and job.owner != owner:
            raise lease_lost(job, owner)
        return job


def not_found(job_id: str) -> NotFoundError:
    """Builds the error every store method raises for an unknown job id."""
    return NotFoundError(f"no job with id {job_id!r}")


def lease_lost(job: JobRecord, owner: str) -> LeaseLostError:
    """Builds the error for a write from a replica that no longer holds the lease."""
    holder = "nobody" if job.owner is None else f"replica {job.owner!r}"
    return LeaseLostError(f"job {job.id} is no longer run by {owner!r}: {holder} holds its lease")


def to_record(row: Sequence[Any]) -> JobRecord:
    """Turns a row selected with JOB_COLUMNS into a JobRecord."""
    return JobRecord(
        id=row[0],
        kind=row[1],
        state=JobState(row[2]),
        spec=json.loads(row[3]),
        created_at=row[4],
        updated_at=row[5],
        done=row[6],
        total=row[7],
        stage=row[8],
        error=row[9],
        attempts=row[10],
        error_code=_error_code(row[11]),
        owner=row[12],
        lease_until=row[13],
    )


def _error_code(value: str | None) -> ErrorCode | None:
    """The stored code; None for none, or one a newer server wrote that this one lacks."""
    known = {code.value: code for code in ErrorCode}
    return None if value is None else known.get(value)
