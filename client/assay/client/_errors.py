"""Typed client exceptions, chosen by status code (never by message text).

AssayClientError
├── InvalidArgumentError      INVALID_ARGUMENT, OUT_OF_RANGE
├── NotFoundError             NOT_FOUND
├── ResourceExhaustedError    RESOURCE_EXHAUSTED
├── DeadlineExceededError     DEADLINE_EXCEEDED
├── UnavailableError          UNAVAILABLE (after the SDK's retries)
├── FailedPreconditionError   FAILED_PRECONDITION
├── PermissionDeniedError     PERMISSION_DENIED, UNAUTHENTICATED
├── CancelledError            CANCELLED
├── ServerError               INTERNAL, UNKNOWN and anything else
└── JobError                  a job did not succeed (`Job.wait`); `job` is its last state
    ├── JobFailedError        the job failed: `code`/`details` are its google.rpc.Status
    ├── JobCancelledError     the job was cancelled (CANCELLED)
    └── JobTimeoutError       `wait`'s timeout passed (DEADLINE_EXCEEDED); the job runs on

A `JobError` is about the job, not the call that raised it: a job that failed
with INVALID_ARGUMENT raises `JobFailedError` (code INVALID_ARGUMENT), never
`InvalidArgumentError`, so `except InvalidArgumentError` keeps meaning "this
request was wrong".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

if TYPE_CHECKING:
    from assay.client._jobs import JobInfo


class AssayClientError(Exception):
    """A failed call; `code` is the gRPC status, `details` the server's message."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class InvalidArgumentError(AssayClientError):
    """The request is wrong; fix it before retrying."""


class NotFoundError(AssayClientError):
    """No such model (or other named resource)."""


class ResourceExhaustedError(AssayClientError):
    """A server limit was hit (image too large, queue full); back off or shrink the request."""


class DeadlineExceededError(AssayClientError):
    """The call's deadline passed."""


class UnavailableError(AssayClientError):
    """The server or model backend cannot serve now."""


class FailedPreconditionError(AssayClientError):
    """The server is not in the state the call needs."""


class PermissionDeniedError(AssayClientError):
    """The call is not allowed."""


class CancelledError(AssayClientError):
    """The call was cancelled."""


class ServerError(AssayClientError):
    """The server failed; details are in its log."""


class JobError(AssayClientError):
    """A job did not succeed (or not within the wait); `job` is its last known state."""

    def __init__(
        self, code: grpc.StatusCode, details: str, job_id: str, job: JobInfo | None
    ) -> None:
        super().__init__(code, details)
        self.job_id = job_id
        self.job = job


class JobFailedError(JobError):
    """The job failed; `code` and `details` are its error (a google.rpc.Status)."""


class JobCancelledError(JobError):
    """The job was cancelled (finished units are kept on the server)."""


class JobTimeoutError(JobError):
    """The wait's timeout passed before the job ended; the job keeps running."""


_BY_CODE: dict[grpc.StatusCode, type[AssayClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAUTHENTICATED: PermissionDeniedError,
    grpc.StatusCode.CANCELLED: CancelledError,
}


def from_rpc_error(error: grpc.RpcError) -> AssayClientError:
    """The typed exception for a failed call (sync or aio)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    # An empty details string (e.g. health's NOT_FOUND) would otherwise become the
    # multi-line repr of the RpcError.
    details = details or "(the server sent no details)"
    return _BY_CODE.get(code, ServerError)(code, details)
