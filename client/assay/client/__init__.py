"""assay Python SDK: `Client` / `AsyncClient` for the assay gRPC API.

    from assay.client import Client
    with Client("127.0.0.1:50051") as client:
        for p in client.predict("digits_cnn", ["3.png"]):
            print(p.label, p.probability)

Failures raise subclasses of `AssayClientError`, chosen by status code.
"""

from assay.client._aigen import (
    CropScore,
    DetectorProfileInfo,
    DetectorScore,
    GeneratedVerdict,
    SpectralEvidence,
    Stability,
    VariantScore,
)
from assay.client._client import AsyncClient, Client
from assay.client._errors import (
    AssayClientError,
    CancelledError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    ServerError,
    UnavailableError,
)
from assay.client._jobs import Job, JobProgress
from assay.client._types import (
    AnomalyResult,
    Classification,
    ModelInfo,
    OodProfileInfo,
    OodScore,
    Prediction,
    Preprocessing,
    TensorSpec,
)

__all__ = [
    "AnomalyResult",
    "AssayClientError",
    "AsyncClient",
    "CancelledError",
    "Classification",
    "Client",
    "CropScore",
    "DeadlineExceededError",
    "DetectorProfileInfo",
    "DetectorScore",
    "FailedPreconditionError",
    "GeneratedVerdict",
    "InvalidArgumentError",
    "Job",
    "JobProgress",
    "ModelInfo",
    "NotFoundError",
    "OodProfileInfo",
    "OodScore",
    "PermissionDeniedError",
    "Prediction",
    "Preprocessing",
    "ResourceExhaustedError",
    "ServerError",
    "SpectralEvidence",
    "Stability",
    "TensorSpec",
    "UnavailableError",
    "VariantScore",
]
