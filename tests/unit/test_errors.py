import grpc

import assay.server.errors as errors
from assay.server.services.interceptors import STATUS_CODES


def all_subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *all_subclasses(sub)}
    return found


def test_every_domain_error_maps_to_a_grpc_code() -> None:
    classes = {errors.AssayError, *all_subclasses(errors.AssayError)}
    assert len(classes) >= 15
    for cls in classes:
        assert isinstance(STATUS_CODES[cls.code], grpc.StatusCode), cls
        assert STATUS_CODES[cls.code].name == cls.code.value


def test_specific_codes() -> None:
    expected = {
        errors.InvalidImageError: grpc.StatusCode.INVALID_ARGUMENT,
        errors.ModelNotFoundError: grpc.StatusCode.NOT_FOUND,
        errors.QueueFullError: grpc.StatusCode.RESOURCE_EXHAUSTED,
        errors.ImageTooLargeError: grpc.StatusCode.RESOURCE_EXHAUSTED,
        errors.ModelNotReadyError: grpc.StatusCode.UNAVAILABLE,
        errors.DeadlineExceededError: grpc.StatusCode.DEADLINE_EXCEEDED,
        errors.BackendError: grpc.StatusCode.INTERNAL,
        errors.PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
        errors.FailedPreconditionError: grpc.StatusCode.FAILED_PRECONDITION,
    }
    for cls, code in expected.items():
        assert STATUS_CODES[cls.code] is code
