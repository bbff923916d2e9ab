"""Domain errors, each carrying the status code the API returns for it.

Domain code raises these; one server interceptor turns them into gRPC
statuses. The codes are our own enum (named like gRPC's) so that domain
modules never import grpc.

    AssayError (INTERNAL)
    ├── InvalidArgumentError (INVALID_ARGUMENT)
    │   ├── InvalidImageError
    │   └── InvalidTensorError
    ├── NotFoundError (NOT_FOUND)
    │   └── ModelNotFoundError
    ├── ResourceExhaustedError (RESOURCE_EXHAUSTED)
    │   ├── ImageTooLargeError
    │   └── QueueFullError
    ├── DeadlineExceededError (DEADLINE_EXCEEDED)
    ├── UnavailableError (UNAVAILABLE)
    │   └── ModelNotReadyError
    ├── FailedPreconditionError (FAILED_PRECONDITION)
    ├── PermissionDeniedError (PERMISSION_DENIED)
    └── BackendError (INTERNAL)
"""

from __future__ import annotations

import enum


class ErrorCode(enum.Enum):
    """API status codes, spelled as gRPC spells them."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    UNAVAILABLE = "UNAVAILABLE"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    INTERNAL = "INTERNAL"


class AssayError(Exception):
    """Base of every error the API reports with a specific status code."""

    code: ErrorCode = ErrorCode.INTERNAL


class InvalidArgumentError(AssayError):
    """The request itself is wrong; retrying it unchanged will fail again."""

    code = ErrorCode.INVALID_ARGUMENT


class InvalidImageError(InvalidArgumentError):
    """An image could not be decoded or has an unusable size or format."""


class InvalidTensorError(InvalidArgumentError):
    """A tensor has the wrong dtype, shape, byte length or non-finite values."""


class NotFoundError(AssayError):
    """A named thing does not exist."""

    code = ErrorCode.NOT_FOUND


class ModelNotFoundError(NotFoundError):
    """No registered model has the requested name or version."""


class ResourceExhaustedError(AssayError):
    """A server limit was hit; a smaller request or a later retry can pass."""

    code = ErrorCode.RESOURCE_EXHAUSTED


class ImageTooLargeError(ResourceExhaustedError):
    """An image has more pixels than the server accepts."""


class QueueFullError(ResourceExhaustedError):
    """A model's batching queue is full."""


class DeadlineExceededError(AssayError):
    """The caller's deadline passed before the work was done."""

    code = ErrorCode.DEADLINE_EXCEEDED


class UnavailableError(AssayError):
    """A dependency cannot serve now; retry with backoff."""

    code = ErrorCode.UNAVAILABLE


class ModelNotReadyError(UnavailableError):
    """The model is registered but its backend is not ready."""


class StoreUnavailableError(UnavailableError):
    """The store (SQLite file or PostgreSQL) cannot be reached; the job or call may be retried."""


class FailedPreconditionError(AssayError):
    """The system is not in the state the request needs."""

    code = ErrorCode.FAILED_PRECONDITION


class PermissionDeniedError(AssayError):
    """The request touches something the server must not give access to."""

    code = ErrorCode.PERMISSION_DENIED


class BackendError(AssayError):
    """The model backend failed while running a batch."""

    code = ErrorCode.INTERNAL


class ConfigError(ValueError):
    """Invalid server or model configuration; raised at start, never served."""
