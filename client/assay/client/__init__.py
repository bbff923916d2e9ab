"""assay Python SDK: `Client` / `AsyncClient` for the assay gRPC API.

    from assay.client import Client
    with Client("127.0.0.1:50051") as client:
        for p in client.predict("digits_cnn", ["3.png"]):
            print(p.label, p.probability)

Long operations are jobs: a start method returns a `Job` (`AsyncJob` from
`AsyncClient`) bound to its client, and `job.wait(timeout_s=...)` follows it
to its end and returns it succeeded:

    with Client() as client:
        job = client.start_evaluation("digits_cnn", "/data/digits_heldout", "quick")
        report = client.get_report(job.wait(timeout_s=600).id)
        print(report.schema, report["clean"]["error"]["value"])

Failures raise subclasses of `AssayClientError`, chosen by status code; a job
that fails, is cancelled or outlasts the wait raises a `JobError` subclass.
"""

from assay.client._aigen import (
    AigenVerdict,
    CropScore,
    DetectorProfileInfo,
    DetectorScore,
    GeneratedVerdict,
    SpectralEvidence,
    Stability,
    VariantScore,
)
from assay.client._async_client import AsyncClient
from assay.client._client import Client
from assay.client._errors import (
    AssayClientError,
    CancelledError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    JobCancelledError,
    JobError,
    JobFailedError,
    JobTimeoutError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    ServerError,
    UnavailableError,
)
from assay.client._jobs import AsyncJob, Job, JobInfo, JobProgress, JobState
from assay.client._report import Report
from assay.client._types import (
    AnomalyResult,
    Classification,
    DatasetInfo,
    ModelInfo,
    OodProfileInfo,
    OodScore,
    Prediction,
    Preprocessing,
    TensorSpec,
)

__all__ = [
    "AigenVerdict",
    "AnomalyResult",
    "AssayClientError",
    "AsyncClient",
    "AsyncJob",
    "CancelledError",
    "Classification",
    "Client",
    "CropScore",
    "DatasetInfo",
    "DeadlineExceededError",
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
]
