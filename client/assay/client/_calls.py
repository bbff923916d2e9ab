"""The call table: per SDK operation, the RPC to call, its request and its response parser.

`Client` and `AsyncClient` differ only in how they send (httpx's BaseClient
pattern): each public method passes its arguments, positionally and in the
order of its signature, to the function of the same name here, and sends what
comes back: a `Call` (one request, one response), a `Pages` (a List RPC read
page after page) or, for `watch_job`, a `Call` whose response is a stream.
Everything else lives here once: request building, deadlines, pagination and
parsing. Defaults do not: a parameter that mirrors a server default is None in
the public signatures and leaves its request field unset (`_given`), so the
server's job spec decides and no number is written down twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from assay.client._aigen import DetectorProfileInfo, GeneratedVerdict, detector_profile
from assay.client._aigen import generated_verdict as _verdict
from assay.client._convert import (
    ImageLike,
    anomaly_result,
    dataset_info,
    image_message,
    model_info,
    ood_profile,
    ood_score,
    predictions,
)
from assay.client._jobs import JobInfo, JobProgress, job, list_request, progress, suite_message
from assay.client._report import Report
from assay.client._types import (
    AnomalyResult,
    DatasetInfo,
    ModelInfo,
    OodProfileInfo,
    OodScore,
    Prediction,
)
from assay.v1 import (
    aigen_pb2,
    aigen_pb2_grpc,
    common_pb2,
    datasets_pb2,
    datasets_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    ood_pb2,
    ood_pb2_grpc,
    robustness_pb2,
    robustness_pb2_grpc,
)

T = TypeVar("T")
UPLOAD_CHUNK = 1 << 20


class Stubs:
    """Every service's stub on one channel (the generated stubs take a sync or an aio one)."""

    def __init__(self, channel: Any) -> None:
        self.models = models_pb2_grpc.ModelServiceStub(channel)
        self.inference = inference_pb2_grpc.InferenceServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)
        self.jobs = jobs_pb2_grpc.JobServiceStub(channel)
        self.robustness = robustness_pb2_grpc.RobustnessServiceStub(channel)
        self.datasets = datasets_pb2_grpc.DatasetServiceStub(channel)
        self.ood = ood_pb2_grpc.OodServiceStub(channel)
        self.aigen = aigen_pb2_grpc.AigenServiceStub(channel)

    def method(self, name: str) -> Any:
        """The multi-callable of "service.Rpc", e.g. "ood.FitProfile"."""
        return attrgetter(name)(self)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One RPC: which stub method, the request (or request iterator), how to read the reply."""

    method: str
    request: Any
    parse: Callable[[Any], T]
    timeout_s: float | None = None
    """This call's deadline; None: the client's default (or none, when not `bounded`)."""
    bounded: bool = True
    """False for calls that may run long (uploads, progress streams)."""

    def deadline(self, default_s: float) -> float | None:
        """Seconds the call may take (None = no deadline)."""
        return (self.timeout_s or default_s) if self.bounded else self.timeout_s


@dataclass(frozen=True)
class Pages(Generic[T]):
    """A List RPC (AIP-158): every item, or the first `limit` when above 0."""

    method: str
    request: Any
    field: str
    parse: Callable[[Any], T]
    limit: int = 0
    timeout_s: float | None = None
    """Each page's deadline; None: the client's default."""

    @property
    def call(self) -> Call[Any]:
        """The call for the next page (the request carries its page token)."""
        return Call(self.method, self.request, _same, self.timeout_s)

    def collect(self, response: Any, items: list[T]) -> bool:
        """Add a page's items; True when another page is to be read."""
        items.extend(self.parse(m) for m in getattr(response, self.field))
        if not response.next_page_token or 0 < self.limit <= len(items):
            return False
        self.request.page_token = response.next_page_token
        return True

    def result(self, items: list[T]) -> list[T]:
        """The items collected, cut at `limit`."""
        return items[: self.limit] if self.limit else items


M = TypeVar("M", bound=Message)


def _same(response: T) -> T:
    return response


def _given(request: M, **fields: Any) -> M:
    """`request` with the fields whose value is not None set; None leaves a field unset.

    The server reads an unset field as "the spec's default". For a plain proto3
    scalar, unset and zero are the same on the wire, so an explicit 0 also gets
    the default; an ``optional`` field (sample_limit) records that it was set.
    """
    for name, value in fields.items():
        if value is not None:
            setattr(request, name, value)
    return request


def _ref(name: str, version: str = "") -> common_pb2.ModelRef:
    return common_pb2.ModelRef(name=name, version=version)


def _refs(detectors: Iterable[str]) -> list[common_pb2.ModelRef]:
    """Detector names ("name" or "name:version") -> ModelRefs."""
    return [_ref(*item.split(":", 1)) for item in detectors]


def _images(images: Iterable[ImageLike], ids: Iterable[str] | None) -> list[common_pb2.Image]:
    items = list(images)
    id_list = list(ids) if ids is not None else [""] * len(items)
    if len(id_list) != len(items):
        raise ValueError(f"{len(id_list)} ids for {len(items)} images")
    return [image_message(i, n) for i, n in zip(items, id_list, strict=True)]


def _report(response: jobs_pb2.Report | robustness_pb2.ScoreRobustnessResponse) -> Report:
    return Report(getattr(response, "job_id", ""), dict(json.loads(response.json)))


def _serving(response: health_pb2.HealthCheckResponse) -> bool:
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


# ------------------------------------------------------------------ models and inference


def list_models(timeout_s: float | None) -> Pages[ModelInfo]:
    """ListModels."""
    request = models_pb2.ListModelsRequest()
    return Pages("models.ListModels", request, "models", model_info, timeout_s=timeout_s)


def get_model(name: str, version: str, timeout_s: float | None) -> Call[ModelInfo]:
    """GetModel."""
    request = models_pb2.GetModelRequest(model=_ref(name, version))
    return Call("models.GetModel", request, model_info, timeout_s)


def predict(
    model: str,
    images: Iterable[ImageLike],
    top_k: int | None,
    outputs: Iterable[str],
    version: str,
    ids: Iterable[str] | None,
    signals: Iterable[str],
    timeout_s: float | None,
) -> Call[list[Prediction]]:
    """Predict."""
    request = inference_pb2.PredictRequest(
        model=_ref(model, version),
        images=_images(images, ids),
        outputs=list(outputs),
        signals=list(signals),
    )
    return Call("inference.Predict", _given(request, top_k=top_k), predictions, timeout_s)


def is_serving(service: str, timeout_s: float | None) -> Call[bool]:
    """grpc.health.v1 Check."""
    return Call("health.Check", health_pb2.HealthCheckRequest(service=service), _serving, timeout_s)


def _upload(name: str, folder: Path, replace: bool) -> Iterator[datasets_pb2.UploadDatasetRequest]:
    """Header, then every non-hidden file under folder in 1 MiB chunks."""
    header = datasets_pb2.DatasetHeader(name=name, replace=replace)
    yield datasets_pb2.UploadDatasetRequest(header=header)
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        with path.open("rb") as handle:
            while chunk := handle.read(UPLOAD_CHUNK):
                part = datasets_pb2.FileChunk(path=relative.as_posix(), data=chunk)
                yield datasets_pb2.UploadDatasetRequest(chunk=part)


def upload_dataset(name: str, folder: str | os.PathLike[str], replace: bool) -> Call[str]:
    """UploadDataset (client streaming, no deadline)."""
    if not Path(folder).is_dir():
        raise ValueError(f"{folder} is not a folder")
    messages = _upload(name, Path(folder), replace)
    return Call("datasets.UploadDataset", messages, lambda r: str(r.path), bounded=False)


def list_datasets() -> Pages[DatasetInfo]:
    """ListDatasets."""
    return Pages(
        "datasets.ListDatasets", datasets_pb2.ListDatasetsRequest(), "datasets", dataset_info
    )


def delete_dataset(name: str) -> Call[DatasetInfo]:
    """DeleteDataset."""
    request = datasets_pb2.DeleteDatasetRequest(name=name)
    return Call("datasets.DeleteDataset", request, dataset_info)


# ------------------------------------------------------------------ robustness


def start_evaluation(
    model: str,
    dataset: str,
    preset: str | None,
    version: str,
    baseline: str | None,
    suite: dict[str, Any],
) -> Call[JobInfo]:
    """StartEvaluation."""
    request = robustness_pb2.StartEvaluationRequest(
        model=_ref(model, version),
        dataset=dataset,
        suite=suite_message(preset or "", suite),
        baseline=_ref(baseline or ""),
    )
    return Call("robustness.StartEvaluation", request, job)


def score_robustness(
    model: str,
    images: Iterable[ImageLike],
    labels: Sequence[str],
    groups: Sequence[str] | None,
    preset: str | None,
    timeout_s: float | None,
    suite: dict[str, Any],
) -> Call[Report]:
    """ScoreRobustness."""
    request = robustness_pb2.ScoreRobustnessRequest(
        model=_ref(model),
        images=[image_message(i) for i in images],
        labels=list(labels),
        groups=list(groups or ()),
        suite=suite_message(preset or "", suite),
    )
    return Call("robustness.ScoreRobustness", request, _report, timeout_s)


# ------------------------------------------------------------------ OOD and anomalies


def fit_profile(
    model: str,
    dataset: str,
    scorers: Iterable[str],
    target_tpr: float | None,
    holdout_fraction: float | None,
    sample_limit: int | None,
    seed: int | None,
) -> Call[JobInfo]:
    """FitProfile."""
    request = ood_pb2.FitProfileRequest(model=_ref(model), dataset=dataset, scorers=list(scorers))
    given = _given(
        request,
        target_tpr=target_tpr,
        holdout_fraction=holdout_fraction,
        sample_limit=sample_limit,
        seed=seed,
    )
    return Call("ood.FitProfile", given, job)


def evaluate_ood_scorers(
    model: str,
    in_dataset: str,
    ood_datasets: Iterable[str],
    scorers: Iterable[str],
    sample_limit: int | None,
    seed: int | None,
) -> Call[JobInfo]:
    """EvaluateOodScorers."""
    request = ood_pb2.EvaluateOodScorersRequest(
        model=_ref(model),
        in_dataset=in_dataset,
        ood_datasets=list(ood_datasets),
        scorers=list(scorers),
    )
    given = _given(request, sample_limit=sample_limit, seed=seed)
    return Call("ood.EvaluateOodScorers", given, job)


def list_profiles(model: str) -> Pages[OodProfileInfo]:
    """ListProfiles."""
    request = ood_pb2.ListProfilesRequest(model=model)
    return Pages("ood.ListProfiles", request, "profiles", ood_profile)


def delete_profile(model: str, version: str) -> Call[OodProfileInfo]:
    """DeleteProfile."""
    request = ood_pb2.DeleteProfileRequest(model=_ref(model, version))
    return Call("ood.DeleteProfile", request, ood_profile)


def _scores(response: ood_pb2.ScoreOODResponse) -> list[list[OodScore]]:
    return [[ood_score(s) for s in r.scores] for r in response.results]


def score_ood(
    model: str, images: Iterable[ImageLike], scorers: Iterable[str], timeout_s: float | None
) -> Call[list[list[OodScore]]]:
    """ScoreOOD."""
    request = ood_pb2.ScoreOODRequest(
        model=_ref(model), images=_images(images, None), scorers=list(scorers)
    )
    return Call("ood.ScoreOOD", request, _scores, timeout_s)


def _anomalies(response: ood_pb2.DetectAnomalyResponse) -> list[AnomalyResult]:
    return [anomaly_result(r) for r in response.results]


def detect_anomaly(
    model: str, images: Iterable[ImageLike], with_maps: bool, timeout_s: float | None
) -> Call[list[AnomalyResult]]:
    """DetectAnomaly (float16 maps when `with_maps`, else none)."""
    maps = ood_pb2.ANOMALY_MAP_FORMAT_FLOAT16 if with_maps else ood_pb2.ANOMALY_MAP_FORMAT_NONE
    request = ood_pb2.DetectAnomalyRequest(
        model=_ref(model), images=_images(images, None), map_format=maps
    )
    return Call("ood.DetectAnomaly", request, _anomalies, timeout_s)


def evaluate_anomaly(model: str, dataset: str) -> Call[JobInfo]:
    """EvaluateAnomaly."""
    request = ood_pb2.EvaluateAnomalyRequest(model=_ref(model), dataset=dataset)
    return Call("ood.EvaluateAnomaly", request, job)


# ------------------------------------------------------------------ AI-generated images


def _verdicts(response: aigen_pb2.DetectGeneratedResponse) -> list[GeneratedVerdict]:
    return [_verdict(r) for r in response.results]


def detect_generated(
    images: Iterable[ImageLike],
    detectors: Iterable[str],
    stability: bool,
    max_flip_fraction: float | None,
    explain: bool,
    ids: Sequence[str] | None,
    timeout_s: float | None,
) -> Call[list[GeneratedVerdict]]:
    """DetectGenerated; detectors are "name" or "name:version"."""
    request = aigen_pb2.DetectGeneratedRequest(
        images=_images(images, ids),
        detectors=_refs(detectors),
        stability=stability,
        explain=explain,
    )
    if max_flip_fraction is not None:
        request.max_flip_fraction = max_flip_fraction
    return Call("aigen.DetectGenerated", request, _verdicts, timeout_s)


def fit_detector(
    detector: str,
    dataset: str,
    target_fpr: float | None,
    holdout_fraction: float | None,
    sample_limit: int | None,
    seed: int | None,
) -> Call[JobInfo]:
    """FitDetector."""
    request = aigen_pb2.FitDetectorRequest(detector=_refs([detector])[0], dataset=dataset)
    given = _given(
        request,
        target_fpr=target_fpr,
        holdout_fraction=holdout_fraction,
        sample_limit=sample_limit,
        seed=seed,
    )
    return Call("aigen.FitDetector", given, job)


def evaluate_aigen_detector(
    detector: str,
    dataset: str,
    jpeg_qualities: Iterable[int],
    resize_scales: Iterable[float],
    sample_limit: int | None,
    seed: int | None,
) -> Call[JobInfo]:
    """EvaluateAigenDetector (empty curves = the server's defaults)."""
    request = aigen_pb2.EvaluateAigenDetectorRequest(
        detector=_refs([detector])[0],
        dataset=dataset,
        jpeg_qualities=list(jpeg_qualities),
        resize_scales=list(resize_scales),
    )
    given = _given(request, sample_limit=sample_limit, seed=seed)
    return Call("aigen.EvaluateAigenDetector", given, job)


def list_detector_profiles(detector: str) -> Pages[DetectorProfileInfo]:
    """ListDetectorProfiles."""
    request = aigen_pb2.ListDetectorProfilesRequest(detector=detector)
    return Pages("aigen.ListDetectorProfiles", request, "profiles", detector_profile)


def delete_detector_profile(detector: str, version: str) -> Call[DetectorProfileInfo]:
    """DeleteDetectorProfile."""
    request = aigen_pb2.DeleteDetectorProfileRequest(detector=_ref(detector, version))
    return Call("aigen.DeleteDetectorProfile", request, detector_profile)


# ------------------------------------------------------------------ jobs


def watch_job(job_id: str, timeout_s: float | None = None) -> Call[JobProgress]:
    """WatchJob, a stream (each message parsed); no deadline unless `timeout_s`."""
    request = jobs_pb2.WatchJobRequest(id=job_id)
    return Call("jobs.WatchJob", request, progress, timeout_s, bounded=False)


def get_job(job_id: str, timeout_s: float | None) -> Call[JobInfo]:
    """GetJob."""
    return Call("jobs.GetJob", jobs_pb2.GetJobRequest(id=job_id), job, timeout_s)


def list_jobs(kind: str, states: Iterable[str], limit: int) -> Pages[JobInfo]:
    """ListJobs, newest first."""
    return Pages("jobs.ListJobs", list_request(kind, states, limit), "jobs", job, limit)


def cancel_job(job_id: str, timeout_s: float | None) -> Call[JobInfo]:
    """CancelJob."""
    return Call("jobs.CancelJob", jobs_pb2.CancelJobRequest(id=job_id), job, timeout_s)


def delete_job(job_id: str, timeout_s: float | None) -> Call[JobInfo]:
    """DeleteJob."""
    return Call("jobs.DeleteJob", jobs_pb2.DeleteJobRequest(id=job_id), job, timeout_s)


def get_report(job_id: str, timeout_s: float | None) -> Call[Report]:
    """GetReport."""
    return Call("jobs.GetReport", jobs_pb2.GetReportRequest(id=job_id), _report, timeout_s)
