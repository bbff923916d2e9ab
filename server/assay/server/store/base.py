"""The one interface every piece of server state goes through.

Jobs, their finished units and reports, job leases, fitted profiles (their
arrays as one blob), dataset metadata and the upload audit log all live in a
`Store`. Two implementations sit behind it, chosen by ``data.url``: SQLite (one
file, the embedded default) and PostgreSQL (what several replicas share).

The interface is synchronous and thread-safe: the server calls it from worker
threads (``asyncio.to_thread``), never on the event loop, so one set of rules
serves both engines and a slow database never stalls a Predict call.

Payloads are strict JSON (no NaN, string keys) and arrays are ``.npz`` bytes
read without pickle, so what one replica writes every other can read, and a
stored value can never run code when it is loaded.

Leases: a job is run by the replica whose id is its ``owner`` while
``lease_until`` lies ahead on the store's clock (PostgreSQL's ``now()``;
SQLite's is the local clock, shared by every process on the file). Writes that
belong to a run (progress, units, result, finish) name their owner and are
refused with `LeaseLostError` once another replica has taken the job over, so a
replica that stalled past its lease can never overwrite its successor's work.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import numpy.typing as npt

from assay.server.errors import ErrorCode, FailedPreconditionError
from assay.server.store.records import (
    DatasetRecord,
    JobRecord,
    JobState,
    ProfileEntry,
    StoredProfile,
    Unit,
    UploadEvent,
)


class LeaseLostError(FailedPreconditionError):
    """This replica no longer holds the job's lease: another one took it over, or it ended."""


class Store(Protocol):
    """Where all of a server's state lives; see the module docstring for the rules.

    Job methods raise NotFoundError for an unknown job id and
    FailedPreconditionError for a change to a job already in a terminal state.
    Any method raises UnavailableError when the database cannot be reached.
    """

    @property
    def url(self) -> str:
        """Where the store is, for logs and messages (any password removed)."""
        ...

    # -- jobs -------------------------------------------------------------

    def create(
        self,
        kind: str,
        spec: Mapping[str, Any],
        total: int,
        max_pending: int | None = None,
        owner: str | None = None,
        lease_s: float = 0.0,
    ) -> JobRecord:
        """Stores a new PENDING job and returns it with its fresh id.

        With ``owner``, the job is created reserved for it (its lease held for
        ``lease_s``), so no other replica's takeover claims it before the
        creating replica does; without, it is unowned and any replica may.

        Raises:
            ResourceExhaustedError: ``max_pending`` jobs are already PENDING
                (checked in the same transaction as the insert).
        """
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
        caller pages through the list without gaps or repeats. An empty
        ``states`` matches nothing.
        """
        ...

    def count(self, states: Iterable[JobState]) -> int:
        """How many jobs are in any of ``states``."""
        ...

    def claim(self, job_id: str, owner: str, lease_s: float) -> JobRecord | None:
        """Takes the job's lease for ``owner`` and marks it RUNNING (one more attempt).

        Succeeds when the job is live and its lease is free: never held,
        released, expired, or already ``owner``'s. Returns None, changing
        nothing, when the job has ended or another replica holds a live lease.
        """
        ...

    def renew(self, job_id: str, owner: str, lease_s: float) -> JobRecord:
        """Extends ``owner``'s lease to ``lease_s`` from now; the heartbeat.

        Returns the job, so the owner sees a cancellation made elsewhere
        (state CANCELLED: the owner stops; the lease is left to run out).

        Raises:
            LeaseLostError: Another replica holds the lease now.
        """
        ...

    def release(self, job_id: str, owner: str) -> None:
        """Gives up ``owner``'s lease at once (graceful shutdown).

        Another replica can then take the job without waiting for the lease to
        run out. A job whose lease ``owner`` does not hold is left alone.
        """
        ...

    def claimable(self, limit: int = 100) -> builtins.list[JobRecord]:
        """Live jobs whose lease is free (never held, released or expired), oldest first."""
        ...

    def progress(self, job_id: str, done: int, stage: str, owner: str | None = None) -> JobRecord:
        """Records how far a live job has got.

        Raises:
            LeaseLostError: ``owner`` is given and does not hold the lease.
        """
        ...

    def finish(
        self,
        job_id: str,
        state: JobState,
        error: str | None = None,
        error_code: ErrorCode | None = None,
        owner: str | None = None,
    ) -> JobRecord:
        """Moves a live job to a terminal state for good and clears its lease.

        ``owner`` None is a change from outside the run (a cancel from any
        replica); otherwise the caller must hold the lease.

        Raises:
            LeaseLostError: ``owner`` is given and does not hold the lease.
        """
        ...

    def put_unit(
        self,
        job_id: str,
        key: str,
        meta: Mapping[str, Any],
        arrays: Mapping[str, npt.ArrayLike],
        owner: str | None = None,
    ) -> JobRecord:
        """Stores one finished unit and counts it, atomically and idempotently.

        A key stored before is replaced, not counted again, so a unit retried
        after a lost worker or a takeover is counted once.

        Raises:
            LeaseLostError: ``owner`` is given and does not hold the lease.
        """
        ...

    def units(self, job_id: str) -> dict[str, Unit]:
        """Returns every stored unit of the job by key, in the order first stored."""
        ...

    def unit_keys(self, job_id: str) -> set[str]:
        """Returns the keys of the stored units, cheaply (no payloads)."""
        ...

    def set_result(self, job_id: str, result: Mapping[str, Any], owner: str | None = None) -> None:
        """Stores (or replaces) a live job's final report; set it before ``finish``.

        Raises:
            LeaseLostError: ``owner`` is given and does not hold the lease.
        """
        ...

    def result(self, job_id: str) -> dict[str, Any] | None:
        """Returns the job's final report, or None if there is none yet."""
        ...

    def delete(self, job_id: str) -> None:
        """Removes the job with its units and report (cancel a live job first)."""
        ...

    def purge(self, ended_before: float) -> int:
        """Deletes every ended job last changed before ``ended_before``; how many went."""
        ...

    # -- profiles ---------------------------------------------------------

    def put_profile(
        self,
        kind: str,
        name: str,
        version: str,
        document: Mapping[str, Any],
        blob: bytes | None,
    ) -> ProfileEntry:
        """Writes (or replaces) one profile, document and arrays in one transaction."""
        ...

    def get_profile(self, kind: str, name: str, version: str) -> StoredProfile | None:
        """The stored profile, or None when there is none."""
        ...

    def profile_entries(self, kind: str, name: str | None = None) -> builtins.list[ProfileEntry]:
        """Every profile of ``kind`` (of one name), by name then version; no payloads.

        Cheap enough to call every second: caches compare etags with it.
        """
        ...

    def delete_profile(self, kind: str, name: str, version: str) -> bool:
        """Removes one profile; False when there was none."""
        ...

    # -- datasets ---------------------------------------------------------

    def put_dataset(self, record: DatasetRecord, event: UploadEvent) -> None:
        """Records a dataset's current version and its upload in the audit log, together."""
        ...

    def dataset(self, name: str) -> DatasetRecord | None:
        """The dataset's metadata, or None when it is not known."""
        ...

    def datasets(self) -> builtins.list[DatasetRecord]:
        """Every known dataset, by name."""
        ...

    def delete_dataset(self, name: str, event: UploadEvent) -> bool:
        """Forgets a dataset and logs its deletion; False when it was not known."""
        ...

    def log_upload(self, event: UploadEvent) -> None:
        """Adds an entry to the upload audit log (e.g. a failed upload)."""
        ...

    def upload_log(
        self, dataset: str | None = None, limit: int = 100
    ) -> builtins.list[UploadEvent]:
        """The newest ``limit`` audit entries (of one dataset), newest first."""
        ...

    # -- lifecycle --------------------------------------------------------

    def ping(self) -> None:
        """Checks the database answers; readiness probes call it.

        Raises:
            UnavailableError: It does not.
        """
        ...

    def close(self) -> None:
        """Releases the store's connections; closing twice is harmless."""
        ...
