"""Plain records a job store hands out: job states, job rows and units of work.

They are frozen dataclasses so that a record read from the store is a
snapshot: changing a job goes through the store, never through a record.
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
