"""Durable storage for long-running evaluation jobs and their finished units.

A whole-suite evaluation can run for hours, so it is a job: it gets an id at
once and stores each finished unit of work as it is produced. If the server
dies, even by ``kill -9``, the next start finds the job in ``interrupted()``
with every unit it had finished and resumes it (skipping ``unit_keys()``) or
marks it failed; finished work is never lost.

``JobStore`` is the interface the server codes against; ``SqliteJobStore`` is
the single-node implementation. A PostgreSQL one can come later behind the
same protocol, which is why payloads are strict JSON (no NaN, object keys are
strings) and arrays are plain ``.npz`` bytes rather than pickles.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import numpy.typing as npt

from assay.server.errors import ErrorCode, FailedPreconditionError, InvalidArgumentError
from assay.server.jobs._sqlite import (
    JOB_COLUMNS,
    get_job,
    get_live_job,
    not_found,
    open_database,
    to_record,
)
from assay.server.store.codec import dump_json, pack_arrays, unpack_arrays
from assay.server.store.records import JobRecord, JobState, Unit


class JobStore(Protocol):
    """Where jobs, their finished units and their final reports live.

    Every method raises NotFoundError for an unknown job id, and
    FailedPreconditionError for a change to a job already in a terminal state.
    """

    def create(self, kind: str, spec: Mapping[str, Any], total: int) -> JobRecord:
        """Stores a new PENDING job and returns it with its fresh id."""
        ...

    def get(self, job_id: str) -> JobRecord:
        """Returns the job as last stored."""
        ...

    def list(
        self,
        kind: str | None = None,
        states: Iterable[JobState] | None = None,
        limit: int = 100,
        before: tuple[float, str] | None = None,
    ) -> builtins.list[JobRecord]:
        """Returns up to ``limit`` jobs, newest first, optionally filtered.

        Jobs are ordered by (created_at, id), both descending; ``before`` is
        the (created_at, id) of the last job of the previous page, so a
        caller pages through the list without gaps or repeats.
        """
        ...

    def start(self, job_id: str) -> JobRecord:
        """Marks a PENDING or RUNNING job RUNNING and counts the attempt."""
        ...

    def progress(self, job_id: str, done: int, stage: str) -> JobRecord:
        """Records how far a live job has got."""
        ...

    def finish(
        self,
        job_id: str,
        state: JobState,
        error: str | None = None,
        error_code: ErrorCode | None = None,
    ) -> JobRecord:
        """Moves a live job to a terminal state, for good (a FAILED one with its error's code)."""
        ...

    def put_unit(
        self,
        job_id: str,
        key: str,
        meta: Mapping[str, Any],
        arrays: Mapping[str, npt.ArrayLike],
    ) -> JobRecord:
        """Stores one finished unit and counts it, atomically and idempotently."""
        ...

    def units(self, job_id: str) -> dict[str, Unit]:
        """Returns every stored unit of the job by key."""
        ...

    def unit_keys(self, job_id: str) -> set[str]:
        """Returns the keys of the stored units, cheaply (no payloads)."""
        ...

    def set_result(self, job_id: str, result: Mapping[str, Any]) -> None:
        """Stores (or replaces) the job's final report."""
        ...

    def result(self, job_id: str) -> dict[str, Any] | None:
        """Returns the job's final report, or None if there is none yet."""
        ...

    def interrupted(self) -> builtins.list[JobRecord]:
        """Returns the jobs left PENDING or RUNNING, oldest first."""
        ...

    def delete(self, job_id: str) -> None:
        """Removes the job with its units and report."""
        ...

    def close(self) -> None:
        """Releases the store's resources; later calls fail."""
        ...


class SqliteJobStore:
    """JobStore in one SQLite file, safe to share between threads and processes.

    The database runs in WAL mode with ``synchronous=NORMAL``: a committed
    transaction is in the WAL file when the commit returns, so it survives the
    process being killed (even by SIGKILL). Only an OS crash or power loss can
    drop the last few commits, and the file stays consistent even then.

    One connection serves every thread (the asyncio loop and worker threads),
    serialised by a lock; each write is one ``BEGIN IMMEDIATE`` transaction, so
    other processes on the same file wait (up to BUSY_TIMEOUT_MS) rather than
    fail. Calls are short, except ``units()`` which reads every array.
    """

    def __init__(self, path: Path) -> None:
        """Opens (creating it and its folders if needed) the store at ``path``.

        Raises:
            FailedPreconditionError: The file has a newer schema than this code
                knows, cannot use WAL, or is not an SQLite database.
        """
        self._path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = open_database(self._path)

    def __enter__(self) -> SqliteJobStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self, mode: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                raise FailedPreconditionError(f"job store {self._path} is closed")
            conn = self._conn
            conn.execute(f"BEGIN {mode}")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self._transaction("IMMEDIATE")

    def _read(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self._transaction("DEFERRED")

    def create(self, kind: str, spec: Mapping[str, Any], total: int) -> JobRecord:
        """See JobStore.create; ``total`` may be 0 when not known up front."""
        if not kind:
            raise InvalidArgumentError("job kind must be a non-empty string")
        if total < 0:
            raise InvalidArgumentError(f"job total must be >= 0, got {total}")
        spec_json = dump_json(spec, "job spec")
        job_id, now = uuid.uuid4().hex, time.time()
        with self._write() as conn:
            conn.execute(
                f"INSERT INTO jobs ({JOB_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, 0, ?, '', NULL, 0, NULL)",
                (job_id, kind, JobState.PENDING.value, spec_json, now, now, total),
            )
            return get_job(conn, job_id)

    def get(self, job_id: str) -> JobRecord:
        """See JobStore.get."""
        with self._read() as conn:
            return get_job(conn, job_id)

    def list(
        self,
        kind: str | None = None,
        states: Iterable[JobState] | None = None,
        limit: int = 100,
        before: tuple[float, str] | None = None,
    ) -> builtins.list[JobRecord]:
        """See JobStore.list; an empty ``states`` matches nothing."""
        if limit < 1:
            raise InvalidArgumentError(f"limit must be >= 1, got {limit}")
        where, params = ["1"], builtins.list[Any]()
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        if states is not None:
            wanted = [JobState(state).value for state in states]
            where.append(f"state IN ({', '.join('?' * len(wanted))})" if wanted else "0")
            params.extend(wanted)
        if before is not None:
            where.append("(created_at < ? OR (created_at = ? AND id < ?))")
            params.extend((before[0], before[0], before[1]))
        sql = (
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE {' AND '.join(where)} "
            "ORDER BY created_at DESC, id DESC LIMIT ?"
        )
        with self._read() as conn:
            return [to_record(row) for row in conn.execute(sql, (*params, limit))]

    def start(self, job_id: str) -> JobRecord:
        """See JobStore.start; starting a RUNNING job is how a resume is counted."""
        with self._write() as conn:
            get_live_job(conn, job_id, "started")
            conn.execute(
                "UPDATE jobs SET state = ?, attempts = attempts + 1, updated_at = ? WHERE id = ?",
                (JobState.RUNNING.value, time.time(), job_id),
            )
            return get_job(conn, job_id)

    def progress(self, job_id: str, done: int, stage: str) -> JobRecord:
        """See JobStore.progress; ``done`` replaces the stored count."""
        if done < 0:
            raise InvalidArgumentError(f"done must be >= 0, got {done}")
        with self._write() as conn:
            get_live_job(conn, job_id, "updated")
            conn.execute(
                "UPDATE jobs SET done = ?, stage = ?, updated_at = ? WHERE id = ?",
                (done, stage, time.time(), job_id),
            )
            return get_job(conn, job_id)

    def finish(
        self,
        job_id: str,
        state: JobState,
        error: str | None = None,
        error_code: ErrorCode | None = None,
    ) -> JobRecord:
        """See JobStore.finish; ``error`` says why a job FAILED or was CANCELLED."""
        state = JobState(state)
        if not state.terminal:
            raise InvalidArgumentError(f"a job can only finish in a terminal state, not {state}")
        if state is JobState.SUCCEEDED and error is not None:
            raise InvalidArgumentError("a job that SUCCEEDED cannot carry an error")
        if error_code is not None and state is not JobState.FAILED:
            raise InvalidArgumentError(f"only a FAILED job carries an error code, not {state}")
        code = None if error_code is None else ErrorCode(error_code).value
        with self._write() as conn:
            get_live_job(conn, job_id, f"moved to {state}")
            conn.execute(
                "UPDATE jobs SET state = ?, error = ?, error_code = ?, updated_at = ? WHERE id = ?",
                (state.value, error, code, time.time(), job_id),
            )
            return get_job(conn, job_id)

    def put_unit(
        self,
        job_id: str,
        key: str,
        meta: Mapping[str, Any],
        arrays: Mapping[str, npt.ArrayLike],
    ) -> JobRecord:
        """See JobStore.put_unit; a key stored before is replaced, not recounted."""
        if not key:
            raise InvalidArgumentError("unit key must be a non-empty string")
        meta_json, blob, now = (
            dump_json(meta, f"unit {key!r} meta"),
            pack_arrays(arrays),
            time.time(),
        )
        with self._write() as conn:
            get_live_job(conn, job_id, "given units")
            known = conn.execute(
                "SELECT 1 FROM units WHERE job_id = ? AND key = ?", (job_id, key)
            ).fetchone()
            conn.execute(
                "INSERT INTO units (job_id, key, meta, arrays, created_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (job_id, key) DO UPDATE SET meta = excluded.meta, "
                "arrays = excluded.arrays, created_at = excluded.created_at",
                (job_id, key, meta_json, blob, now),
            )
            conn.execute(
                "UPDATE jobs SET done = done + ?, updated_at = ? WHERE id = ?",
                (0 if known else 1, now, job_id),
            )
            return get_job(conn, job_id)

    def units(self, job_id: str) -> dict[str, Unit]:
        """See JobStore.units; in the order they were first stored."""
        with self._read() as conn:
            get_job(conn, job_id)
            rows = conn.execute(
                "SELECT key, meta, arrays, created_at FROM units WHERE job_id = ? ORDER BY rowid",
                (job_id,),
            ).fetchall()
        return {
            key: Unit(key, json.loads(meta), unpack_arrays(blob), created_at)
            for key, meta, blob, created_at in rows
        }

    def unit_keys(self, job_id: str) -> set[str]:
        """See JobStore.unit_keys."""
        with self._read() as conn:
            get_job(conn, job_id)
            rows = conn.execute("SELECT key FROM units WHERE job_id = ?", (job_id,))
            return {row[0] for row in rows}

    def set_result(self, job_id: str, result: Mapping[str, Any]) -> None:
        """See JobStore.set_result; set it before ``finish``, which freezes the job."""
        result_json = dump_json(result, "job result")
        with self._write() as conn:
            get_live_job(conn, job_id, "given a result")
            conn.execute(
                "INSERT INTO results (job_id, json) VALUES (?, ?) "
                "ON CONFLICT (job_id) DO UPDATE SET json = excluded.json",
                (job_id, result_json),
            )
            conn.execute("UPDATE jobs SET updated_at = ? WHERE id = ?", (time.time(), job_id))

    def result(self, job_id: str) -> dict[str, Any] | None:
        """See JobStore.result."""
        with self._read() as conn:
            get_job(conn, job_id)
            row = conn.execute("SELECT json FROM results WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def interrupted(self) -> builtins.list[JobRecord]:
        """See JobStore.interrupted; call it at server start, before new jobs run."""
        sql = f"SELECT {JOB_COLUMNS} FROM jobs WHERE state IN (?, ?) ORDER BY created_at, rowid"
        with self._read() as conn:
            rows = conn.execute(sql, (JobState.PENDING.value, JobState.RUNNING.value))
            return [to_record(row) for row in rows]

    def delete(self, job_id: str) -> None:
        """See JobStore.delete; cancel a live job first, or its runner fails on NotFound."""
        with self._write() as conn:
            if conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount == 0:
                raise not_found(job_id)

    def close(self) -> None:
        """See JobStore.close; closing twice is harmless."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
