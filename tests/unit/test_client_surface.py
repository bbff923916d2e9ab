import grpc
import pytest

import assay.client as sdk
from assay.client._errors import from_rpc_error


def test_public_surface_is_exactly_the_intended_names() -> None:
    assert set(sdk.__all__) == {
        "AigenVerdict",
        "AnomalyResult",
        "AssayClientError",
        "AsyncClient",
        "AsyncJob",
        "CancelledError",
        "Classification",
        "Client",
        "CropScore",
        "DeadlineExceededError",
        "DatasetInfo",
        "DetectorProfileInfo",
        "DetectorScore",
        "FailedPreconditionError",
        "GeneratedVerdict",
        "InvalidArgumentError",
        "Job",
        "JobCancelledError",
        "JobError",
        "JobFailedError",
        "JobInfo",
        "JobProgress",
        "JobState",
        "JobTimeoutError",
        "ModelInfo",
        "NotFoundError",
        "OodProfileInfo",
        "OodScore",
        "PermissionDeniedError",
        "Prediction",
        "Preprocessing",
        "Report",
        "ResourceExhaustedError",
        "ServerError",
        "SpectralEvidence",
        "Stability",
        "TensorSpec",
        "UnavailableError",
        "VariantScore",
    }
    for name in sdk.__all__:
        assert getattr(sdk, name) is not None
    assert len(sdk.__all__) == len(set(sdk.__all__))


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "same text for every code"


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, sdk.InvalidArgumentError),
        (grpc.StatusCode.NOT_FOUND, sdk.NotFoundError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, sdk.ResourceExhaustedError),
        (grpc.StatusCode.UNAVAILABLE, sdk.UnavailableError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, sdk.DeadlineExceededError),
        (grpc.StatusCode.FAILED_PRECONDITION, sdk.FailedPreconditionError),
        (grpc.StatusCode.PERMISSION_DENIED, sdk.PermissionDeniedError),
        (grpc.StatusCode.CANCELLED, sdk.CancelledError),
        (grpc.StatusCode.INTERNAL, sdk.ServerError),
        (grpc.StatusCode.DATA_LOSS, sdk.ServerError),
    ],
)
def test_errors_are_chosen_by_code_not_text(code: grpc.StatusCode, cls: type) -> None:
    error = from_rpc_error(FakeRpcError(code))
    assert type(error) is cls and error.code is code and isinstance(error, sdk.AssayClientError)


class DetailLessRpcError(FakeRpcError):
    def details(self) -> str:
        return ""


def test_an_error_without_details_says_so_in_one_line() -> None:
    error = from_rpc_error(DetailLessRpcError(grpc.StatusCode.NOT_FOUND))
    assert type(error) is sdk.NotFoundError
    assert error.details == "(the server sent no details)"
