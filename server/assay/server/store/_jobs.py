"""The job and lease rules of the Store interface, written once for both engines.

Every write is one transaction that first reads (and, on PostgreSQL, locks)
the job's row, checks the job is live and, for a write that belongs to a run,
that the caller still holds the lease; then it changes what it must. The
store's clock (``tx.now()``) stamps every change and judges every lease.
"""

from __future__ import annotations

import builtins
import json
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import numpy.typing as npt

from assay.server.errors import ErrorCode, InvalidArgumentError, ResourceExhaustedError
from assay.server.store._sql import (
    JOB_COLUMNS,
    MAX_BLOB_BYTES,
    SqlBase,
    lease_lost,
    not_found,
    to_record,
)
from assay.server.store.codec import dump_json, pack_arrays, unpack_arrays
from assay.server.store.records import JobRecord, JobState, Unit

_LIVE = (JobState.PENDING.value, JobState.RUNNING.value)
_ENDED = (JobState.SUCCEEDED.value, JobState.FAILED.value, JobState.CANCELLED.value)


class JobsMixin(SqlBase):
    """Jobs, units, reports and leases; see Store for what each method promises."""

    def create(
        self,
        kind: str,
        spec: Mapping[str, Any],
        total: int,
        max_pending: int | None = None,
        owner: str | None = None,
        lease_s: float = 0.0,
    ) -> JobRecord:
        """See Store.create; ``total`` may be 0 when not known up front."""
        if owner is not None:
            _check_lease(owner, lease_s)
        if not kind:
            raise InvalidArgumentError("job kind must be a non-empty string")
        if total < 0:
            raise InvalidArgumentError(f"job total must be >= 0, got {total}")
        spec_json = dump_json(spec, "job spec")
        job_id = uuid.uuid4().hex
        with self._write() as tx:
            if max_pending is not None:
                self._serialise_creates(tx)
                pending = tx.execute(
                    "SELECT COUNT(*) FROM jobs WHERE state = ?", (JobState.PENDING.value,)
                ).fetchone()[0]
                if pending >= max_pending:
                    raise ResourceExhaustedError(
                        f"{pending} jobs are already waiting to run (at most {max_pending}); "
                        "retry when some have started"
                    )
            now = tx.now()
            lease_until = None if owner is None else now + lease_s
            tx.execute(
                f"INSERT INTO jobs ({JOB_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, 0, ?, '', NULL, 0, NULL, ?, ?)",
                (job_id, kind, JobState.PENDING.value, spec_json, now, now, total, owner,
                 lease_until),
            )  # fmt: skip
            return self._get_job(tx, job_id)

    def get(self, job_id: str) -> JobRecord:
        """See Store.get."""
        with self._read() as tx:
            return self._get_job(tx, job_id)

    def list(
        self,
        kind: str | None = None,
        states: Iterable[JobState] | None = None,
        limit: int = 100,
        before: tuple[float, str] | None = None,
    ) -> builtins.list[JobRecord]:
        """See Store.list; an empty ``states`` matches nothing."""
        if limit < 1:
            raise InvalidArgumentError(f"limit must be >= 1, got {limit}")
        where, params = ["TRUE"], builtins.list[Any]()
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        if states is not None:
            wanted = [JobState(state).value for state in states]
            where.append(f"state IN ({', '.join('?' * len(wanted))})" if wanted else "FALSE")
            params.extend(wanted)
        if before is not None:
            where.append("(created_at < ? OR (created_at = ? AND id < ?))")
            params.extend((before[0], before[0], before[1]))
        sql = (
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE {' AND '.join(where)} "
            "ORDER BY created_at DESC, id DESC LIMIT ?"
        )
        with self._read() as tx:
            return [to_record(row) for row in tx.execute(sql, (*params, limit)).fetchall()]

    def count(self, states: Iterable[JobState]) -> int:
        """See Store.count."""
        wanted = [JobState(state).value for state in states]
        if not wanted:
            return 0
        sql = f"SELECT COUNT(*) FROM jobs WHERE state IN ({', '.join('?' * len(wanted))})"
        with self._read() as tx:
            return int(tx.execute(sql, wanted).fetchone()[0])

    def claim(self, job_id: str, owner: str, lease_s: float) -> JobRecord | None:
        """See Store.claim; a lease of 0 s is free again at once (no heartbeat needed)."""
        _check_lease(owner, lease_s)
        with self._write() as tx:
            job = self._get_job(tx, job_id, lock=True)
            now = tx.now()
            held = job.owner not in (None, owner) and (job.lease_until or 0.0) > now
            if job.state.terminal or held:
                return None
            tx.execute(
                "UPDATE jobs SET state = ?, attempts = attempts + 1, owner = ?, lease_until = ?, "
                "updated_at = ? WHERE id = ?",
                (JobState.RUNNING.value, owner, now + lease_s, now, job_id),
            )
            return self._get_job(tx, job_id)

    def renew(self, job_id: str, owner: str, lease_s: float) -> JobRecord:
        """See Store.renew; an ended job is returned as it is, lease untouched."""
        _check_lease(owner, lease_s)
        with self._write() as tx:
            job = self._get_job(tx, job_id, lock=True)
            if job.state.terminal:
                return job
            if job.owner != owner:
                raise lease_lost(job, owner)
            tx.execute("UPDATE jobs SET lease_until = ? WHERE id = ?", (tx.now() + lease_s, job_id))
            return self._get_job(tx, job_id)

    def release(self, job_id: str, owner: str) -> None:
        """See Store.release."""
        with self._write() as tx:
            self._get_job(tx, job_id, lock=True)
            tx.execute(
                "UPDATE jobs SET owner = NULL, lease_until = NULL WHERE id = ? AND owner = ?",
                (job_id, owner),
            )

    def claimable(self, limit: int = 100) -> builtins.list[JobRecord]:
        """See Store.claimable; oldest first by (created_at, id)."""
        if limit < 1:
            raise InvalidArgumentError(f"limit must be >= 1, got {limit}")
        sql = (
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE state IN (?, ?) "
            "AND (owner IS NULL OR lease_until IS NULL OR lease_until <= ?) "
            "ORDER BY created_at, id LIMIT ?"
        )
        with self._read() as tx:
            rows = tx.execute(sql, (*_LIVE, tx.now(), limit)).fetchall()
            return [to_record(row) for row in rows]

    def progress(self, job_id: str, done: int, stage: str, owner: str | None = None) -> JobRecord:
        """See Store.progress; ``done`` replaces the stored count."""
        if done < 0:
            raise InvalidArgumentError(f"done must be >= 0, got {done}")
        with self._write() as tx:
            self._live_job(tx, job_id, "updated", owner)
            tx.execute(
                "UPDATE jobs SET done = ?, stage = ?, updated_at = ? WHERE id = ?",
                (done, stage, tx.now(), job_id),
            )
            return self._get_job(tx, job_id)

    def finish(
        self,
        job_id: str,
        state: JobState,
        error: str | None = None,
        error_code: ErrorCode | None = None,
        owner: str | None = None,
    ) -> JobRecord:
        """See Store.finish; ``error`` says why a job FAILED or was CANCELLED."""
        state = JobState(state)
        if not state.terminal:
            raise InvalidArgumentError(f"a job can only finish in a terminal state, not {state}")
        if state is JobState.SUCCEEDED and error is not None:
            raise InvalidArgumentError("a job that SUCCEEDED cannot carry an error")
        if error_code is not None and state is not JobState.FAILED:
            raise InvalidArgumentError(f"only a FAILED job carries an error code, not {state}")
        code = None if error_code is None else ErrorCode(error_code).value
        with self._write() as tx:
            self._live_job(tx, job_id, f"moved to {state}", owner)
            tx.execute(
                "UPDATE jobs SET state = ?, error = ?, error_code = ?, updated_at = ?, "
                "owner = NULL, lease_until = NULL WHERE id = ?",
                (state.value, error, code, tx.now(), job_id),
            )
            return self._get_job(tx, job_id)

    def put_unit(
        self,
        job_id: str,
        key: str,
        meta: Mapping[str, Any],
        arrays: Mapping[str, npt.ArrayLike],
        owner: str | None = None,
    ) -> JobRecord:
        """See Store.put_unit; a key stored before is replaced, not recounted."""
        if not key:
            raise InvalidArgumentError("unit key must be a non-empty string")
        meta_json, blob = dump_json(meta, f"unit {key!r} meta"), pack_arrays(arrays)
        check_blob(blob, f"unit {key!r}")
        with self._write() as tx:
            self._live_job(tx, job_id, "given units", owner)
            now = tx.now()
            known = tx.execute(
                "SELECT 1 FROM units WHERE job_id = ? AND key = ?", (job_id, key)
            ).fetchone()
            tx.execute(
                "INSERT INTO units (job_id, key, meta, arrays, created_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (job_id, key) DO UPDATE SET meta = excluded.meta, "
                "arrays = excluded.arrays, created_at = excluded.created_at",
                (job_id, key, meta_json, blob, now),
            )
            tx.execute(
                "UPDATE jobs SET done = done + ?, updated_at = ? WHERE id = ?",
                (0 if known else 1, now, job_id),
            )
            return self._get_job(tx, job_id)

    def units(self, job_id: str) -> dict[str, Unit]:
        """See Store.units."""
        with self._read() as tx:
            self._get_job(tx, job_id)
            rows = tx.execute(
                "SELECT key, meta, arrays, created_at FROM units WHERE job_id = ? "
                f"ORDER BY {self.UNIT_ORDER}",
                (job_id,),
            ).fetchall()
        return {
            key: Unit(key, json.loads(meta), unpack_arrays(bytes(blob)), created_at)
            for key, meta, blob, created_at in rows
        }

    def unit_keys(self, job_id: str) -> set[str]:
        """See Store.unit_keys."""
        with self._read() as tx:
            self._get_job(tx, job_id)
            rows = tx.execute("SELECT key FROM units WHERE job_id = ?", (job_id,)).fetchall()
            return {row[0] for row in rows}

    def set_result(self, job_id: str, result: Mapping[str, Any], owner: str | None = None) -> None:
        """See Store.set_result; set it before ``finish``, which freezes the job."""
        result_json = dump_json(result, "job result")
        with self._write() as tx:
            self._live_job(tx, job_id, "given a result", owner)
            tx.execute(
                "INSERT INTO results (job_id, json) VALUES (?, ?) "
                "ON CONFLICT (job_id) DO UPDATE SET json = excluded.json",
                (job_id, result_json),
            )
            tx.execute("UPDATE jobs SET updated_at = ? WHERE id = ?", (tx.now(), job_id))

    def result(self, job_id: str) -> dict[str, Any] | None:
        """See Store.result."""
        with self._read() as tx:
            self._get_job(tx, job_id)
            row = tx.execute("SELECT json FROM results WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def delete(self, job_id: str) -> None:
        """See Store.delete; cancel a live job first, or its runner fails on NotFound."""
        with self._write() as tx:
            if tx.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount == 0:
                raise not_found(job_id)

    def purge(self, ended_before: float) -> int:
        """See Store.purge; units and reports go with their jobs."""
        with self._write() as tx:
            gone = tx.execute(
                "DELETE FROM jobs WHERE state IN (?, ?, ?) AND updated_at < ?",
                (*_ENDED, ended_before),
            )
            return int(gone.rowcount)


def _check_lease(owner: str, lease_s: float) -> None:
    if not owner:
        raise InvalidArgumentError("a lease owner must be a non-empty string")
    if not lease_s >= 0:
        raise InvalidArgumentError(f"lease_s must be >= 0, got {lease_s}")


def check_blob(blob: bytes, what: str) -> None:
    """Refuses arrays too large for one database value.

    Raises:
        InvalidArgumentError: ``blob`` is over MAX_BLOB_BYTES.
    """
    if len(blob) > MAX_BLOB_BYTES:
        raise InvalidArgumentError(
            f"{what} has {len(blob)} bytes of arrays; the store keeps at most "
            f"{MAX_BLOB_BYTES} in one value"
        )
