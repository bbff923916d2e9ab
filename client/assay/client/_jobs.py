"""Jobs in the SDK: states, the job handles that can wait, progress, and the suite builder.

A job handle is bound to the client that returned it, so waiting needs no
client argument: `Client` returns `Job`, whose `wait()` blocks; `AsyncClient`
returns `AsyncJob`, whose `wait()` is a coroutine. Both carry the same fields
(`JobInfo`, which is also what a `JobProgress` event holds), and `wait` either
returns the succeeded job or raises a `JobError` (see `_errors`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, NoReturn

import grpc

from assay.client._errors import (
    JobCancelledError,
    JobFailedError,
    JobTimeoutError,
    UnavailableError,
)
from assay.client._types import epoch_seconds
from assay.v1 import jobs_pb2, robustness_pb2

MAX_PAGE_SIZE = 1000
"""The server's largest page (ListJobs and the other List RPCs)."""

_ATTACKS = {
    "square_linf": robustness_pb2.ATTACK_KIND_SQUARE_LINF,
    "square_l2": robustness_pb2.ATTACK_KIND_SQUARE_L2,
    "fgsm": robustness_pb2.ATTACK_KIND_FGSM,
    "pgd_linf": robustness_pb2.ATTACK_KIND_PGD_LINF,
    "pgd_l2": robustness_pb2.ATTACK_KIND_PGD_L2,
}
_SCALARS = (
    "perturbation_frames",
    "shift_consistency",
    "calibration",
    "subgroups",
    "sample_limit",
    "seed",
)


class JobState(StrEnum):
    """Where a job is; a str, so `job.state == "succeeded"` holds for SUCCEEDED."""

    UNSPECIFIED = "unspecified"
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True for the states a job never leaves."""
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class JobInfo:
    """A server-side job (e.g. a robustness suite) as it was when read."""

    id: str
    kind: str
    state: JobState
    done: int
    total: int
    stage: str
    error: str
    """Why it failed or was cancelled ("" otherwise)."""
    attempts: int
    created_at: float
    """Seconds since the epoch."""
    updated_at: float
    error_code: str = ""
    """The failure's gRPC status code name, e.g. "INVALID_ARGUMENT" (a request the
    job could not carry out) or "INTERNAL" (a server fault); "CANCELLED" for a
    cancelled job; "" when the job has no error."""

    @property
    def finished(self) -> bool:
        """True once the job can no longer change."""
        return self.state.finished


def _unbound(job_id: str, timeout_s: float | None) -> NoReturn:
    raise TypeError(f"job {job_id} was not returned by a client, so it cannot wait")


def _values(info: JobInfo) -> dict[str, Any]:
    return {f.name: getattr(info, f.name) for f in fields(JobInfo)}


@dataclass(frozen=True)
class Job(JobInfo):
    """A job returned by `Client`; `wait()` blocks until it ends."""

    _wait: Callable[[str, float | None], Job] = field(
        default=_unbound, kw_only=True, repr=False, compare=False
    )

    @classmethod
    def of(cls, info: JobInfo, wait: Callable[[str, float | None], Job]) -> Job:
        """`info` bound to the waiting function of the client that read it."""
        return cls(**_values(info), _wait=wait)

    def wait(self, timeout_s: float | None = None) -> Job:
        """Block until the job ends and return it succeeded (None: no time limit).

        A progress stream the server breaks (UNAVAILABLE: a restart, a drain) is
        opened again, after a pause of 0.1 s doubling up to 2 s, until the job
        ends or `timeout_s` passes: a restarted server resumes the job.

        Raises:
            JobFailedError: It failed (`code` is its status code, e.g. INVALID_ARGUMENT).
            JobCancelledError: It was cancelled.
            JobTimeoutError: It had not ended after `timeout_s`, including when the
                server was unreachable then (the job keeps running or resumes).
            UnavailableError: Only without `timeout_s`: the server stayed
                unreachable for 5 minutes.
            AssayClientError: Any other error of the WatchJob call, as its typed
                subclass (e.g. NotFoundError: the server does not know the job).
        """
        return self._wait(self.id, timeout_s)


@dataclass(frozen=True)
class AsyncJob(JobInfo):
    """A job returned by `AsyncClient`; `await job.wait()` until it ends."""

    _wait: Callable[[str, float | None], Awaitable[AsyncJob]] = field(
        default=_unbound, kw_only=True, repr=False, compare=False
    )

    @classmethod
    def of(
        cls, info: JobInfo, wait: Callable[[str, float | None], Awaitable[AsyncJob]]
    ) -> AsyncJob:
        """`info` bound to the waiting coroutine of the client that read it."""
        return cls(**_values(info), _wait=wait)

    async def wait(self, timeout_s: float | None = None) -> AsyncJob:
        """Wait until the job ends and return it succeeded; raises as `Job.wait`."""
        return await self._wait(self.id, timeout_s)


@dataclass(frozen=True)
class JobProgress:
    """One event of a job's progress stream."""

    job: JobInfo
    images_per_second: float
    eta_s: float | None
    partial: dict[str, Any]


_CODES = {status.value[0]: status for status in grpc.StatusCode}


def _state(value: jobs_pb2.JobState.ValueType) -> JobState:
    """A JobState; UNSPECIFIED for a value this SDK does not know (a newer server)."""
    known = value in jobs_pb2.JobState.values()
    name = jobs_pb2.JobState.Name(value) if known else "JOB_STATE_UNSPECIFIED"
    return JobState(name.removeprefix("JOB_STATE_").lower())


def _code_name(message: jobs_pb2.Job) -> str:
    if not message.HasField("error"):
        return ""
    code = _CODES.get(message.error.code)
    return code.name if code is not None else str(message.error.code)


def job(message: jobs_pb2.Job) -> JobInfo:
    """Job message -> JobInfo."""
    return JobInfo(
        id=message.id,
        kind=message.kind,
        state=_state(message.state),
        done=message.done,
        total=message.total,
        stage=message.stage,
        error=message.error.message,
        attempts=message.attempts,
        created_at=epoch_seconds(message.created_at),
        updated_at=epoch_seconds(message.updated_at),
        error_code=_code_name(message),
    )


def progress(event: jobs_pb2.JobEvent) -> JobProgress:
    """JobEvent message -> JobProgress."""
    return JobProgress(
        job=job(event.job),
        images_per_second=event.images_per_second,
        eta_s=event.eta_seconds if event.HasField("eta_seconds") else None,
        partial=json.loads(event.partial_json or "{}"),
    )


def succeeded(job_id: str, last: JobInfo | None) -> JobInfo:
    """The last state a finished WatchJob stream showed, if it is SUCCEEDED; else raise.

    Raises:
        JobFailedError: The job failed (its code and message).
        JobCancelledError: The job was cancelled.
        UnavailableError: The stream ended before the job did (wait again).
    """
    if last is None or not last.finished:
        message = f"the progress stream of job {job_id} ended before the job; wait again"
        raise UnavailableError(grpc.StatusCode.UNAVAILABLE, message)
    if last.state is JobState.FAILED:
        code = grpc.StatusCode.__members__.get(last.error_code, grpc.StatusCode.UNKNOWN)
        raise JobFailedError(code, last.error, job_id, last)
    if last.state is JobState.CANCELLED:
        raise JobCancelledError(grpc.StatusCode.CANCELLED, last.error, job_id, last)
    return last


def timed_out(
    job_id: str, timeout_s: float | None, last: JobInfo | None, reason: str = ""
) -> JobTimeoutError:
    """The error for a wait whose deadline passed (`last`: the latest state seen).

    `reason`, where given, ends the message in parentheses.
    """
    state = last.state if last is not None else "unknown"
    details = f"job {job_id} still {state} after {timeout_s} s" + (f" ({reason})" if reason else "")
    return JobTimeoutError(grpc.StatusCode.DEADLINE_EXCEEDED, details, job_id, last)


def suite_message(preset: str, overrides: Mapping[str, Any]) -> robustness_pb2.Suite:
    """Suite message from a preset name and field overrides (see SuiteSpec)."""
    suite = robustness_pb2.Suite(preset=preset)
    for name in ("corruptions", "severities", "perturbations"):
        if overrides.get(name):
            getattr(suite, name).extend(overrides[name])
    for name in _SCALARS:
        if overrides.get(name) is not None:
            setattr(suite, name, overrides[name])
    for attack in overrides.get("attacks") or ():
        if attack["kind"] not in _ATTACKS:
            raise ValueError(f"unknown attack {attack['kind']!r}; known: {', '.join(_ATTACKS)}")
        suite.attacks.add(
            kind=_ATTACKS[attack["kind"]],
            epsilon=attack["epsilon"],
            queries=attack.get("queries", 0),
            steps=attack.get("steps", 0),
        )
    unknown = set(overrides) - {"corruptions", "severities", "perturbations", "attacks", *_SCALARS}
    if unknown:
        raise ValueError(f"unknown suite fields {sorted(unknown)}")
    return suite


def list_request(kind: str, states: Iterable[str], limit: int) -> jobs_pb2.ListJobsRequest:
    """ListJobsRequest for the first page of at most ``limit`` jobs."""
    return jobs_pb2.ListJobsRequest(
        kind=kind,
        states=[jobs_pb2.JobState.Value(f"JOB_STATE_{s.upper()}") for s in states],
        page_size=min(limit, MAX_PAGE_SIZE),
    )
