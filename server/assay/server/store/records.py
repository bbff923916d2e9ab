"""Plain records the store hands out: jobs, units, profiles, datasets and uploads.

They are frozen dataclasses so that a record read from the store is a
snapshot: changing anything goes through the store, never through a record.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import numpy.typing as npt

from assay.server.errors import ErrorCode


class JobState(enum.StrEnum):
    """Where a job is in its life.

    PENDING and RUNNING are live; a job found in either when the server starts
    was cut short by a crash and is resumed or failed. The other three are
    terminal: once there, a job never changes state again.
    """

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """Whether the job has ended and its state can no longer change."""
        return self in _TERMINAL


_TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


@dataclasses.dataclass(frozen=True, slots=True)
class JobRecord:
    """One job as last stored.

    Attributes:
        id: Opaque job id (uuid4 hex), what the API hands to clients.
        kind: What the job does, e.g. "robustness_suite"; the store does not
            interpret it, the server uses it to pick the runner.
        state: Current state.
        spec: The job's parameters as JSON; enough to rerun it after a crash.
        created_at: When the job was created, seconds since the epoch.
        updated_at: When the job last changed, seconds since the epoch.
        done: Units of work finished so far.
        total: Units of work the job expects to do (0 when unknown).
        stage: Short human-readable description of what the job is doing.
        error: Why the job failed or was cancelled; None otherwise.
        attempts: How many times the job was started; above 1 after a resume.
        error_code: The status code of the error that failed the job (the
            domain error's code, INTERNAL for an unexpected one); None when
            the job did not fail or the store predates error codes.
        owner: The replica holding the job's lease (the one running it);
            None when no replica holds it (new, released or ended).
        lease_until: When the owner's lease runs out, seconds since the
            epoch on the store's clock; another replica may take the job
            over after that. None when nobody holds it.
    """

    id: str
    kind: str
    state: JobState
    spec: dict[str, Any]
    created_at: float
    updated_at: float
    done: int
    total: int
    stage: str
    error: str | None
    attempts: int
    error_code: ErrorCode | None = None
    owner: str | None = None
    lease_until: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Unit:
    """One finished unit of work, e.g. one corruption at one severity.

    Units are what makes a job resumable: each is stored as soon as it is
    produced, so a resumed job skips the keys it already has.

    Attributes:
        key: Caller-chosen key, unique within the job.
        meta: Small JSON-able facts about the unit (scores, counts, names).
        arrays: Named numeric arrays (per-sample scores, logits, features).
        created_at: When the unit was (last) stored, seconds since the epoch.
    """

    key: str
    meta: dict[str, Any]
    arrays: dict[str, npt.NDArray[Any]]
    created_at: float


@dataclasses.dataclass(frozen=True, slots=True)
class ProfileEntry:
    """What the store knows about one stored profile, without its payload.

    Attributes:
        kind: Which kind of profile ("ood", "anomaly", "aigen", ...).
        name: The model or detector it belongs to.
        version: That model's version.
        etag: Changes whenever the profile is replaced; caches compare it.
        updated_at: When it was last written, seconds since the epoch.
        size_bytes: Size of the document plus the arrays blob.
    """

    kind: str
    name: str
    version: str
    etag: str
    updated_at: float
    size_bytes: int


@dataclasses.dataclass(frozen=True, slots=True)
class StoredProfile:
    """One profile as stored: its JSON document and its arrays, written as one unit.

    Attributes:
        entry: Its key, etag and sizes.
        document: The profile's JSON document, as written.
        blob: The ``.npz`` bytes of its arrays; None for a profile without arrays.
    """

    entry: ProfileEntry
    document: dict[str, Any]
    blob: bytes | None


@dataclasses.dataclass(frozen=True, slots=True)
class DatasetRecord:
    """An uploaded dataset's metadata; its files live under the uploads root.

    Attributes:
        name: The dataset's name (a folder under the uploads root).
        version: Id of the upload that produced the current files.
        files: Number of files.
        bytes: Total size of the files.
        created_at: When this version became visible, seconds since the epoch.
        uploaded_by: Who uploaded it (the caller's identity or peer address).
    """

    name: str
    version: str
    files: int
    bytes: int
    created_at: float
    uploaded_by: str


@dataclasses.dataclass(frozen=True, slots=True)
class UploadEvent:
    """One entry of the upload audit log: who changed which dataset, how, and when.

    Attributes:
        dataset: The dataset's name.
        version: The upload's id.
        action: "created", "replaced", "deleted" or "failed".
        files: Files in the upload (0 for a deletion).
        bytes: Bytes in the upload (0 for a deletion).
        at: When it happened, seconds since the epoch.
        actor: Who did it (the caller's identity or peer address).
        detail: Why it failed, or other short context; empty when none.
    """

    dataset: str
    version: str
    action: str
    files: int
    bytes: int
    at: float
    actor: str
    detail: str = ""
